"""Exec: /containers/{id}/exec and /exec/{id}/... (docker exec)."""

from __future__ import annotations

from gateway.context import Context
from gateway.dockerapi.common import read_json
from gateway.routing import CONTAINER, EXEC, Route
from gateway.services import execs


def create(ctx: Context) -> None:
    body, raw = read_json(ctx)
    execs.create(ctx, body, raw)


ROUTES = [
    Route("POST", "/containers/{id}/exec", "ContainerExec", create, resolves=CONTAINER),
    Route("POST", "/exec/{id}/start", "ExecStart", execs.to_exec, streaming=True, resolves=EXEC),
    Route("POST", "/exec/{id}/resize", "ExecResize", execs.to_exec, resolves=EXEC),
    Route("GET", "/exec/{id}/json", "ExecInspect", execs.to_exec, resolves=EXEC),
]
