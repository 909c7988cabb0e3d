"""Image builds and imports: what the instance's daemon would fetch or run for a build, and
the build steps' resource limits."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl

from gateway.errors import DockerError
from gateway.policy.bodies import GoObject
from gateway.policy.resources import apply_resources
from gateway.policy.rules import Request, short

# The build's resource parameters (moby's newImageBuildOptions) and the HostConfig fields they
# become in each build step's container.
BUILD_RESOURCES = {
    "memory": "Memory",
    "memswap": "MemorySwap",
    "cpushares": "CpuShares",
    "cpuperiod": "CpuPeriod",
    "cpuquota": "CpuQuota",
    "shmsize": "ShmSize",
}


def build(req: Request, query_string: str, content_type: str | None) -> list[tuple[str, str]]:
    """POST /build: refuse (403/400), or return the query to send the daemon (pairs), its
    resource parameters checked against the project's maxima and given its defaults."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        # dockerd would read build parameters from such a body: only the query is checked.
        raise DockerError(
            400,
            "the build context must be sent as a tar archive (Content-Type application/x-tar), not as a form",
        )
    pairs = parse_qsl(query_string or "", keep_blank_values=True)
    for key, value in pairs:
        key = key.lower()
        if key == "networkmode" and value.strip().lower().split(":")[0] == "host":
            req.require(
                "image:build:host_network",
                "host networking for build steps (docker build --network host)",
                "build with the default network",
            )
        elif key == "remote" and value.strip() not in ("", "client-session"):
            req.require(
                "image:build:remote",
                f"a build context fetched by the instance ({short(value, 60)})",
                "send the build context from the client (docker build DIR, or a tar on stdin)",
            )
        elif key == "cgroupparent" and value.strip():
            req.require(
                "image:build:cgroup_parent",
                f"the cgroup parent {short(value, 60)} for build steps (docker build --cgroup-parent)",
                "leave the cgroup parent unset",
            )
        elif key == "labels":
            try:
                labels = json.loads(value)
            except (ValueError, RecursionError):
                continue  # dockerd refuses it itself
            req.limits.check_labels(labels, "build label")
    return _build_resources(req, pairs)


def image_import(req: Request, from_src: str) -> None:
    """POST /images/create?fromSrc=...: anything but "-" (the body) is a URL the instance's
    daemon fetches itself (a bare host is http://host; "" is "http://", which fetches nothing)."""
    if from_src not in ("-", ""):
        req.require(
            "image:import:url",
            f"importing an image the instance fetches from {short(from_src, 80)} (docker import URL)",
            "download it yourself and import it from the client (curl -fsSL URL | docker import - NAME)",
        )


def _go_int64(text: str) -> int | None:
    """strconv.ParseInt(text, 10, 64)."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    value = int(text)
    return value if -(1 << 63) <= value < (1 << 63) else None


def _build_resources(req: Request, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The build's resource parameters as dockerd reads them (the first value of each exact key;
    a value that does not parse is 0, except shmsize, which dockerd refuses), held to the
    project's maxima as a create's HostConfig is, with its defaults for what is unset. The
    query sent on names each once, with the value checked."""
    first: dict[str, str] = {}
    for key, value in pairs:
        if key in BUILD_RESOURCES:
            first.setdefault(key, value)
    fields: dict[str, int] = {}
    passed_on = set()
    for key, field in BUILD_RESOURCES.items():
        raw = first.get(key)
        if not raw:
            continue
        value = _go_int64(raw)
        if value is None:
            if key == "shmsize":
                passed_on.add(key)  # dockerd refuses the build itself
            continue
        fields[field] = value
    step = GoObject(fields, "the build's query")
    apply_resources(req, [step], lambda: step, create=True, nano_cpus=False)
    out = [(k, v) for k, v in pairs if k not in BUILD_RESOURCES or k in passed_on]
    out += [(k, str(fields[f])) for k, f in BUILD_RESOURCES.items() if k not in passed_on and fields.get(f)]
    return out
