"""Names per project on shared daemons.

A daemon's container, network and volume names are one namespace, shared by every project
whose objects it runs. So the name a tenant chooses is stored on the daemon with a suffix
that belongs to its project (``web`` of project P becomes ``web.m<tag(P)>``), and every
answer strips that suffix again: two projects can each run ``web`` on the same instance and
each sees ``/web``. Names the daemon generates itself (``eager_newton``) are unique on it
already and stay as they are. Object IDs are never rewritten.

The rewrite is stateless (a function of the project and the name), so any gateway replica
can apply it in either direction without a lookup.
"""

from __future__ import annotations

import functools
import hashlib
import re

# dockerd's rule for container, network and volume names.
VALID_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


@functools.lru_cache(maxsize=4096)
def tag(project: str) -> str:
    """A short, stable, name-safe mark of ``project`` (cached: asked for on every answer)."""
    return "m" + hashlib.sha256(project.encode()).hexdigest()[:10]


def suffix(project: str) -> str:
    return "." + tag(project)


def to_daemon(project: str, name: str) -> str:
    """The daemon's name for the tenant's ``name`` (no leading slash either side)."""
    if not name:
        return name
    return name + suffix(project)


def to_tenant(project: str, daemon_name: str) -> str:
    """The tenant's name for a daemon name (a leading slash is kept)."""
    end = suffix(project)
    if daemon_name.endswith(end):
        return daemon_name[: -len(end)]
    return daemon_name


def link_to_tenant(project: str, link: str) -> str:
    """A container name as dockerd lists links: ``/db.mX/web.mX`` or ``/db.mX:/web.mX/db``."""
    end = suffix(project)
    return link.replace(end + "/", "/").replace(end + ":", ":").removesuffix(end)


def text_to_tenant(project: str, text: str) -> str:
    """A daemon's message, with this project's daemon names turned back into its own."""
    return text.replace(suffix(project), "")
