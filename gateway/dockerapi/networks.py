"""Networks: /networks/... (docker network create/ls/inspect/rm/connect/disconnect/prune)."""

from __future__ import annotations

from gateway import resolve
from gateway.context import Context
from gateway.dockerapi.common import home_instance, read_json
from gateway.forward import forward
from gateway.routing import Route


def to_home(ctx: Context) -> None:
    forward(ctx, home_instance(ctx))


def connect(ctx: Context) -> None:
    """connect/disconnect name a container: it must be the tenant's, and is sent by full ID."""
    body, raw = read_json(ctx)
    if isinstance(body, dict) and isinstance(body.get("Container"), str) and body["Container"]:
        container = resolve.container(ctx.project, body["Container"])
        body["Container"] = container.id
        forward(ctx, container.instance, body=body)
        return
    forward(ctx, home_instance(ctx), body=raw, content_type=ctx.req.content_type)


N = "/networks/{id}"
ROUTES = [
    Route("GET", "/networks", "NetworkList", to_home),
    Route("POST", "/networks/create", "NetworkCreate", to_home),
    Route("POST", "/networks/prune", "NetworkPrune", to_home),
    Route("GET", N, "NetworkInspect", to_home),
    Route("DELETE", N, "NetworkDelete", to_home),
    Route("POST", N + "/connect", "NetworkConnect", connect),
    Route("POST", N + "/disconnect", "NetworkDisconnect", connect),
]
