"""Volumes: /volumes/... (docker volume create/ls/inspect/rm/prune).

A named volume belongs to the project that made it (label and store row), lives on one
instance (containers that mount it are placed with it), and carries a per-project daemon
name (gateway/tenancy/names.py), since volume names are the daemon's keys.
"""

from __future__ import annotations

from gateway.context import Context
from gateway.dockerapi.common import read_json
from gateway.routing import VOLUME, Route
from gateway.services import volumes


def create(ctx: Context) -> None:
    body, raw = read_json(ctx)
    volumes.create(ctx, body, raw)


ROUTES = [
    Route("GET", "/volumes", "VolumeList", volumes.list_),
    Route("POST", "/volumes/create", "VolumeCreate", create),
    Route("POST", "/volumes/prune", "VolumePrune", volumes.prune),
    Route("GET", "/volumes/{name}", "VolumeInspect", volumes.inspect, resolves=VOLUME),
    Route("DELETE", "/volumes/{name}", "VolumeDelete", volumes.delete, resolves=VOLUME),
]
