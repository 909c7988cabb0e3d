"""Routes as data: one table of (method, path template, Docker operation ID, handler).

Templates use ``{id}`` for one path segment and ``{name*}`` for a reference that may hold
slashes (image names such as ``registry:5000/team/app:tag``), as dockerd's router does.
Every route answers on ``/vX.Y/...`` and on the unversioned path.

A route that names one of the tenant's objects declares which kind (``resolves``): the
dispatcher resolves the path's reference within the caller's project (gateway/tenancy/resolve.py),
hands the handler the object (``ctx.target``) and the path naming it for its daemon
(``ctx.daemon_path``). No handler finds its own object.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

_PARAM = re.compile(r"\{(\w+)(\*?)\}")

# What a route's reference names (Route.resolves).
CONTAINER = "container"
EXEC = "exec"
NETWORK = "network"  # a user-defined network, or one of the daemon's predefined ones
VOLUME = "volume"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    operation: str  # Docker's operation ID (ContainerInspect, ...): names the route everywhere
    handler: Callable
    # Served by `moorage relay` too: the routes that move streams or hijack connections.
    streaming: bool = False
    # The kind of tenant object the path's first parameter names ("" for none).
    resolves: str = ""
    # The 404 message when that object is not the tenant's, if dockerd words it its own way
    # for this route ({ref}: what the client typed; {message}: the plain "No such ..." text).
    not_found: str = ""
    # dockerd's handler takes the connection over before it knows the outcome (POST attach):
    # its errors go out as a raw head and the plain message, with no version headers, and the
    # connection closes (the docker CLI reads them so); the gateway answers its own the same way.
    raw_errors: bool = False
    # Its answer may be replayed to the same request while nothing it was made of changed
    # (gateway/replay.py): reads whose daemon answers all come through the read cache.
    replays: bool = False
    regex: re.Pattern = field(init=False, compare=False, repr=False)

    def __post_init__(self):
        parts, last = [], 0
        for m in _PARAM.finditer(self.path):
            parts.append(re.escape(self.path[last : m.start()]))
            parts.append(f"(?P<{m.group(1)}>.+)" if m.group(2) else f"(?P<{m.group(1)}>[^/]+)")
            last = m.end()
        parts.append(re.escape(self.path[last:]))
        object.__setattr__(self, "regex", re.compile("".join(parts) + "$"))

    @property
    def reference(self) -> str:
        """The name of the path parameter that names the route's object (the first one)."""
        found = _PARAM.search(self.path)
        return found.group(1) if found else ""

    def fill(self, value: str) -> str:
        """The route's path with its first parameter replaced by ``value``."""
        return _PARAM.sub(lambda _: value, self.path, count=1)


_VERSION = re.compile(r"^/v(\d+(?:\.\d+)?)(/.*)$")


class Router:
    def __init__(self, routes: Iterable[Route]):
        self.routes = list(routes)
        self._by_method: dict[str, list[Route]] = {}
        for route in self.routes:
            self._by_method.setdefault(route.method, []).append(route)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], str | None]:
        """Return (route, params, version) or (None, {}, version) when nothing matches."""
        version = None
        m = _VERSION.match(path)
        if m:
            version, path = m.group(1), m.group(2)
        for route in self._by_method.get(method, ()):
            found = route.regex.match(path)
            if found:
                return route, found.groupdict(), version
        return None, {}, version
