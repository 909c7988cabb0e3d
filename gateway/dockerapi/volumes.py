"""Volumes: /volumes/... (docker volume create/ls/inspect/rm/prune)."""

from __future__ import annotations

from gateway.context import Context
from gateway.dockerapi.common import home_instance
from gateway.forward import forward
from gateway.routing import Route


def to_home(ctx: Context) -> None:
    forward(ctx, home_instance(ctx))


ROUTES = [
    Route("GET", "/volumes", "VolumeList", to_home),
    Route("POST", "/volumes/create", "VolumeCreate", to_home),
    Route("POST", "/volumes/prune", "VolumePrune", to_home),
    Route("GET", "/volumes/{name}", "VolumeInspect", to_home),
    Route("DELETE", "/volumes/{name}", "VolumeDelete", to_home),
]
