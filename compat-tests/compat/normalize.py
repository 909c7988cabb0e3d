"""Normalization: what may differ between two runs of one scenario without being a divergence.

IDs, digests, timestamps, relative ages, published host ports, IP and MAC addresses, the
scenario's own per-side name prefix and the two endpoints are replaced by placeholders. The
IPv6 twin dockerd prints beside each binding on every address (`80/tcp -> [::]:PORT`) is
dropped: behind Moorage's routing mesh a port is published once, at the gateway's address
(docs/divergences.md#port-mesh).
Everything else (status codes, messages, structure, values, stream bytes) is compared as is.
"""

from __future__ import annotations

import re

# JSON keys whose values are volatile by nature; their type is kept, the value is not.
VOLATILE_KEYS = {
    "Created",
    "CreatedAt",
    "StartedAt",
    "FinishedAt",
    "Pid",
    "time",
    "timeNano",
    "Time",
    "TimeNano",
    "HostPort",
    "IPAddress",
    "GlobalIPv6Address",
    "MacAddress",
    "Gateway",
    "IPPrefixLen",
    "SandboxKey",
    "SandboxID",
    "EndpointID",
    "NetworkID",
    "Size",
    "SizeRw",
    "SizeRootFs",
    "VirtualSize",
    "SharedSize",
    "Subnet",
    "IPRange",
    "read",
    "preread",
    "LastTagTime",
    "UsageData",
    "Start",
    "End",
}

_HEX64 = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
_HEX12 = re.compile(r"(?<![0-9a-zA-Z])[0-9a-f]{12}(?![0-9a-zA-Z])")
_TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")
_TS_HUMAN = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?: [+-]\d{4} \w+)?")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_CIDR = re.compile(r"<IP>/\d{1,2}\b")
_MAC = re.compile(r"(?i)(?<![0-9a-f:])(?:[0-9a-f]{2}:){5}[0-9a-f]{2}(?![0-9a-f:])")
_PORTMAP = re.compile(r"(<IP>|\[?::\]?):\d{4,5}\b")
# After _PORTMAP: the IPv6 twins of `docker port` (a line), `docker ps` (", [::]:<PORT>->80/tcp")
# and compose v1's ps (",:::<PORT>->80/tcp").
_V6_TWIN = re.compile(r"^[0-9]+/[a-z]+ -> \[::\]:<PORT>\n?|,\s?(?:\[::\]|::):<PORT>->[0-9]+/[a-z]+", re.M)
_AGO = re.compile(
    r"(?:About (?:a|an) \w+|Less than a second|\d+ (?:second|minute|hour|day|week|month|year)s?) ago"
)
_UP = re.compile(
    r"\bUp (?:About (?:a|an) \w+|Less than a second|\d+ (?:second|minute|hour|day|week|month|year)s?)"
)
_SIZE = re.compile(r"\b\d+(?:\.\d+)?\s?(?:B|kB|KB|MB|GB|TB|KiB|MiB|GiB)\b")
_SPACES = re.compile(r"[ \t]{2,}")
_UNIX_SEC = re.compile(r"\b1[5-9]\d{8}(?:\.\d+)?\b")
# `docker cp` into a missing directory: the CLI's tar writer races the daemon's early error
# answer and sometimes logs these lines, against dockerd directly as through Moorage.
_CP_TAR_RACE = re.compile(
    r'^time="[^"]*" level=error msg="Can\'t (?:add file .* to tar|close tar writer): '
    r'io: read/write on closed pipe"\n?',
    re.M,
)

# `docker run --rm` at API 1.24 removes the container from the CLI (the daemon's own removal
# came with 1.25); the CLI's exit races that request and sometimes logs its cancellation,
# against dockerd directly as through Moorage (1 run in 5 on an instance's daemon; the
# container is gone either way).
_RM_CANCEL_RACE = re.compile(
    r'^time="[^"]*" level=error msg="error removing container: Delete .*: context canceled"\n?',
    re.M,
)


class Normalizer:
    """Per side: knows that side's name prefix and endpoint, the registry's address and the
    daemons' data roots."""

    def __init__(self, prefix: str, endpoints: list[str], registry: str | None, roots=()):
        self.prefix = prefix
        self.endpoints = [e for e in endpoints if e]
        self.registry = registry
        self.roots = [r for r in roots if r]  # the daemons' data roots, longest first

    def text(self, s: str, *, sizes: bool = False, columns: bool = False, numbers: bool = False) -> str:
        if not isinstance(s, str):
            return s
        s = _CP_TAR_RACE.sub("", s)
        s = _RM_CANCEL_RACE.sub("", s)
        if self.prefix:
            s = s.replace(self.prefix, "{P}")
        if self.registry:
            s = s.replace(self.registry, "{REGISTRY}")
        for root in self.roots:
            s = s.replace(root + "/", "<ROOT>/")
        for endpoint in self.endpoints:
            s = s.replace(endpoint, "{HOST}")
            s = s.replace(endpoint.split("://", 1)[-1], "{HOST}")
        s = _HEX64.sub("<ID>", s)
        s = _HEX12.sub("<SID>", s)
        s = _TS.sub("<TS>", s)
        s = _TS_HUMAN.sub("<TS>", s)
        s = _MAC.sub("<MAC>", s)
        s = _IPV4.sub("<IP>", s)
        s = _CIDR.sub("<IP>/<MASK>", s)
        s = _PORTMAP.sub(r"\1:<PORT>", s)
        s = _V6_TWIN.sub("", s)
        s = _AGO.sub("<AGO>", s)
        s = _UP.sub("Up <DUR>", s)
        s = _UNIX_SEC.sub("<EPOCH>", s)
        if sizes:
            s = _SIZE.sub("<SIZE>", s)
        if numbers:
            s = re.sub(r"\d+(?:\.\d+)?", "N", s)
        if columns:
            s = "\n".join(_SPACES.sub("  ", line).rstrip() for line in s.split("\n"))
        return s

    def json(
        self,
        obj,
        *,
        keep: frozenset[str] | set[str] = frozenset(),
        volatile: set[str] | None = None,
        sort_lists: bool = False,
    ):
        """Normalize a parsed JSON value. keep: volatile keys to compare anyway."""
        vol = (VOLATILE_KEYS | (volatile or set())) - set(keep)

        def walk(value, key=None):
            if key is not None and key in vol:
                return placeholder(value)
            if isinstance(value, dict):
                return {self.text(k): walk(v, k) for k, v in value.items()}
            if isinstance(value, list):
                items = [walk(v) for v in value]
                if sort_lists:
                    items.sort(key=repr)
                return items
            if isinstance(value, str):
                return self.text(value)
            return value

        return walk(obj)


def placeholder(value) -> str:
    if value is None:
        return "<null>"
    if isinstance(value, bool):
        return "<bool>"
    if isinstance(value, int | float):
        return "<number>"
    if isinstance(value, str):
        return "<string>" if value else "<empty>"
    if isinstance(value, list):
        return "<list>" if value else "<emptylist>"
    if isinstance(value, dict):
        return "<object>" if value else "<emptyobject>"
    return "<?>"


# maps whose keys are data (labels, options), not structure
MAP_KEYS = {
    "Labels",
    "Options",
    "DriverOpts",
    "Networks",
    "Ports",
    "PortBindings",
    "Mounts",
    "Volumes",
    "ExposedPorts",
    "RepoTags",
    "RepoDigests",
    "Warnings",
    "Status",
    "Containers",
}


def shape(obj, key: str | None = None):
    """Structure only: keys and value types. A list's items merge into one shape; maps of
    data (labels, options) and volatile lists keep only their type."""
    if key in MAP_KEYS:
        return "<map>" if isinstance(obj, dict) else ("<list>" if isinstance(obj, list) else placeholder(obj))
    if isinstance(obj, dict):
        return {k: shape(v, k) for k, v in sorted(obj.items())}
    if isinstance(obj, list):
        if not obj:
            return "<list>"
        dicts = [x for x in obj if isinstance(x, dict)]
        if dicts:
            merged = {}
            for item in dicts:
                for k, v in item.items():
                    if k not in merged or merged[k] in ("<null>", "<empty>", "<emptylist>", "<emptyobject>"):
                        merged[k] = shape(v, k)
            return ["<list-of>", dict(sorted(merged.items()))]
        return "<list>"
    p = placeholder(obj)
    return {"<empty>": "<string>", "<emptylist>": "<list>", "<emptyobject>": "<object>"}.get(p, p)


def diff(a, b, path: str = "$") -> str | None:
    """The first difference between two normalized observations, as one line."""
    if type(a) is not type(b):
        return f"{path}: {short(a)} != {short(b)}"
    if isinstance(a, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in b:
                return f"{path}.{k}: only on direct ({short(a[k])})"
            if k not in a:
                return f"{path}.{k}: only on moorage ({short(b[k])})"
            d = diff(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            d = diff(x, y, f"{path}[{i}]")
            if d:
                return d
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)} items"
        return None
    if a != b:
        return f"{path}: {short(a)} != {short(b)}"
    return None


def short(value, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
