"""Volumes: /volumes/... (docker volume create/ls/inspect/rm/prune)."""

from __future__ import annotations

from gateway.context import Context
from gateway.dockerapi.common import home_instance, read_json
from gateway.forward import forward
from gateway.routing import Route
from gateway.tenancy import policy


def to_home(ctx: Context) -> None:
    forward(ctx, home_instance(ctx))


def create(ctx: Context) -> None:
    body, raw = read_json(ctx)
    policy.volume_create(ctx, body)
    forward(ctx, home_instance(ctx), body=body if isinstance(body, dict) else raw)


ROUTES = [
    Route("GET", "/volumes", "VolumeList", to_home),
    Route("POST", "/volumes/create", "VolumeCreate", create),
    Route("POST", "/volumes/prune", "VolumePrune", to_home),
    Route("GET", "/volumes/{name}", "VolumeInspect", to_home),
    Route("DELETE", "/volumes/{name}", "VolumeDelete", to_home),
]
