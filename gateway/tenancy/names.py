"""Names per project on shared daemons.

A daemon's container, network and volume names are one namespace, shared by every project
whose objects it runs. So the name a tenant chooses is stored on the daemon with a suffix
that belongs to its project (``web`` of project P becomes ``web.m<tag(P)>``), and every
answer strips that suffix again: two projects can each run ``web`` on the same instance and
each sees ``/web``. Names the daemon generates itself (``eager_newton``) are unique on it
already and stay as they are. Object IDs are never rewritten.

The rewrite is stateless (a function of the project and the name), so any gateway replica
can apply it in either direction without a lookup.

Every rewrite goes through one ``Naming``: ``SharedNaming`` for daemons that several projects
share, ``IdentityNaming`` for a daemon that serves one project only, where the tenant's names
can be the daemon's own. The module functions below apply ``NAMING``, the shared one.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Protocol

# dockerd's rule for container, network and volume names.
VALID_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


@functools.lru_cache(maxsize=4096)
def tag(project: str) -> str:
    """A short, stable, name-safe mark of ``project`` (cached: asked for on every answer)."""
    return "m" + hashlib.sha256(project.encode()).hexdigest()[:10]


def suffix(project: str) -> str:
    return "." + tag(project)


class Naming(Protocol):
    """How a project's names for containers, networks and volumes map onto one daemon's."""

    def to_daemon(self, project: str, name: str) -> str: ...
    def to_tenant(self, project: str, daemon_name: str) -> str: ...
    def link_to_tenant(self, project: str, link: str) -> str: ...
    def text_to_tenant(self, project: str, text: str) -> str: ...


class SharedNaming:
    """A daemon several projects share: each project's names carry its suffix there."""

    def to_daemon(self, project: str, name: str) -> str:
        """The daemon's name for the tenant's ``name`` (no leading slash either side)."""
        if not name:
            return name
        return name + suffix(project)

    def to_tenant(self, project: str, daemon_name: str) -> str:
        """The tenant's name for a daemon name (a leading slash is kept)."""
        end = suffix(project)
        if daemon_name.endswith(end):
            return daemon_name[: -len(end)]
        return daemon_name

    def link_to_tenant(self, project: str, link: str) -> str:
        """A container name as dockerd lists links: ``/db.mX/web.mX`` or ``/db.mX:/web.mX/db``."""
        end = suffix(project)
        return link.replace(end + "/", "/").replace(end + ":", ":").removesuffix(end)

    def text_to_tenant(self, project: str, text: str) -> str:
        """A daemon's message, with this project's daemon names turned back into its own."""
        return text.replace(suffix(project), "")


class IdentityNaming:
    """A daemon that serves one project only: its names are the tenant's own."""

    def to_daemon(self, project: str, name: str) -> str:
        return name

    def to_tenant(self, project: str, daemon_name: str) -> str:
        return daemon_name

    def link_to_tenant(self, project: str, link: str) -> str:
        return link

    def text_to_tenant(self, project: str, text: str) -> str:
        return text


NAMING: Naming = SharedNaming()


def to_daemon(project: str, name: str) -> str:
    return NAMING.to_daemon(project, name)


def matches(patterns: list[str], name: str) -> bool:
    """dockerd's `name` filter on one of its names (``/web``): a pattern that equals the name,
    or a regular expression found in it, with or without the leading slash. A pattern that is
    not a valid expression matches nothing, as in dockerd."""
    bare = name.removeprefix("/")
    for pattern in patterns:
        if pattern in (name, bare):
            return True
        try:
            found = re.search(pattern, name) or re.search(pattern, bare)
        except re.error:
            continue
        if found:
            return True
    return False


def to_tenant(project: str, daemon_name: str) -> str:
    return NAMING.to_tenant(project, daemon_name)


def link_to_tenant(project: str, link: str) -> str:
    return NAMING.link_to_tenant(project, link)


def text_to_tenant(project: str, text: str) -> str:
    return NAMING.text_to_tenant(project, text)
