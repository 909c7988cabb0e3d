"""Networks: /networks/... (docker network create/ls/inspect/rm/connect/disconnect/prune).

A user-defined network belongs to the project that made it (label and store row), lives on
one instance, and carries a per-project daemon name (gateway/tenancy/names.py). The daemon's
predefined networks (bridge, host, none) are shown to every project, with only the caller's
containers in them; "bridge" is the project's own default bridge on each instance.
"""

from __future__ import annotations

from gateway.context import Context
from gateway.dockerapi.common import read_json
from gateway.routing import NETWORK, Route
from gateway.services import networks


def create(ctx: Context) -> None:
    body, raw = read_json(ctx)
    networks.create(ctx, body, raw)


def connect(ctx: Context) -> None:
    body, raw = read_json(ctx)
    networks.connect(ctx, body, raw, joining=True)


def disconnect(ctx: Context) -> None:
    body, raw = read_json(ctx)
    networks.connect(ctx, body, raw, joining=False)


N = "/networks/{id}"
ROUTES = [
    Route("GET", "/networks", "NetworkList", networks.list_),
    Route("POST", "/networks/create", "NetworkCreate", create),
    Route("POST", "/networks/prune", "NetworkPrune", networks.prune),
    Route("GET", N, "NetworkInspect", networks.inspect, resolves=NETWORK),
    Route("DELETE", N, "NetworkDelete", networks.delete, resolves=NETWORK),
    Route("POST", N + "/connect", "NetworkConnect", connect, resolves=NETWORK),
    Route("POST", N + "/disconnect", "NetworkDisconnect", disconnect, resolves=NETWORK),
]
