"""Routes Moorage answers without a daemon: swarm objects and plugins.

Swarm routes answer as a daemon outside swarm mode does; plugins act on the instance
itself (they run as root on the host), so tenants may not manage them.
"""

from __future__ import annotations

from gateway.context import Context
from gateway.errors import DockerError
from gateway.routing import Route

NOT_A_MANAGER = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" '
    "to connect this node to swarm and try again."
)


def not_swarm_manager(ctx: Context) -> None:
    raise DockerError(503, NOT_A_MANAGER)


def plugins_none(ctx: Context) -> None:
    """Reading plugins is harmless and clients probe it (`docker inspect NAME` tries every
    kind of object, plugins last): answer as a daemon with no plugins installed."""
    name = ctx.params.get("rest", "")
    if not name:
        ctx.answer_json([])
        return
    raise DockerError(404, f'plugin "{name.removesuffix("/json")}" not found')


def plugins_refused(ctx: Context) -> None:
    raise DockerError(
        403,
        "plugins run on the instance host and are not available to tenants on Moorage; "
        "use containers instead, or ask the operator for a volume or network driver",
    )


_METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD")
ROUTES = []
for family in ("swarm", "nodes", "services", "tasks", "secrets", "configs"):
    for method in _METHODS:
        ROUTES.append(Route(method, f"/{family}", f"Swarm:{family}", not_swarm_manager))
        ROUTES.append(Route(method, f"/{family}/{{rest*}}", f"Swarm:{family}", not_swarm_manager))
ROUTES.append(Route("GET", "/plugins", "Plugin", plugins_none))
ROUTES.append(Route("GET", "/plugins/{rest*}/json", "Plugin", plugins_none))
for method in _METHODS:
    ROUTES.append(Route(method, "/plugins", "Plugin", plugins_refused))
    ROUTES.append(Route(method, "/plugins/{rest*}", "Plugin", plugins_refused))
