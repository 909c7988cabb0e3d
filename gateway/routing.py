"""Routes as data: one table of (method, path template, Docker operation ID, handler).

Templates use ``{id}`` for one path segment and ``{name*}`` for a reference that may hold
slashes (image names such as ``registry:5000/team/app:tag``), as dockerd's router does.
Every route answers on ``/vX.Y/...`` and on the unversioned path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

_PARAM = re.compile(r"\{(\w+)(\*?)\}")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    operation: str  # Docker's operation ID (ContainerInspect, ...): names the route everywhere
    handler: Callable
    # Served by `moorage relay` too: the routes that move streams or hijack connections.
    streaming: bool = False
    regex: re.Pattern = field(init=False, compare=False, repr=False)

    def __post_init__(self):
        parts, last = [], 0
        for m in _PARAM.finditer(self.path):
            parts.append(re.escape(self.path[last : m.start()]))
            parts.append(f"(?P<{m.group(1)}>.+)" if m.group(2) else f"(?P<{m.group(1)}>[^/]+)")
            last = m.end()
        parts.append(re.escape(self.path[last:]))
        object.__setattr__(self, "regex", re.compile("".join(parts) + "$"))


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
