"""Exec: /containers/{id}/exec and /exec/{id}/... (docker exec)."""

from __future__ import annotations

import json

from gateway import policy, resolve, store
from gateway.context import Context
from gateway.dockerapi.common import read_json
from gateway.forward import check_agent, forward, send
from gateway.routing import Route
from gateway.tenancy import names


def create(ctx: Context) -> None:
    body, raw = read_json(ctx)
    policy.exec_create(ctx, body)
    container = resolve.container(ctx.project, ctx.params["id"])
    upstream = send(
        ctx,
        container.instance,
        path=f"/containers/{resolve.daemon_ref(ctx.params['id'], container)}/exec",
        body=body if isinstance(body, dict) else raw,
    )
    check_agent(container.instance, upstream)
    raw = upstream.read()
    if upstream.status == 201:
        exec_id = json.loads(raw)["Id"]
        E = store.Exec
        row = {E.container: container.id, E.project: ctx.project}
        # An upsert SQLite and PostgreSQL both speak (PostgreSQL has no INSERT OR REPLACE).
        E.insert({E.id: exec_id, **row}).on_conflict(conflict_target=[E.id], update=row).execute()
    ctx.resp.status = upstream.status
    ctx.resp.content_type = upstream.header("Content-Type") or "application/json"
    ctx.resp.data = (
        names.text_to_tenant(ctx.project, raw.decode("utf-8", "replace")).encode()
        if upstream.status >= 400
        else raw
    )


def to_exec(ctx: Context) -> None:
    session = resolve.exec_session(ctx.project, ctx.params["id"])
    suffix = ctx.route.path.split("{id}", 1)[1]
    forward(ctx, session.container.instance, path=f"/exec/{session.id}{suffix}")


ROUTES = [
    Route("POST", "/containers/{id}/exec", "ContainerExec", create),
    Route("POST", "/exec/{id}/start", "ExecStart", to_exec, streaming=True),
    Route("POST", "/exec/{id}/resize", "ExecResize", to_exec),
    Route("GET", "/exec/{id}/json", "ExecInspect", to_exec),
]
