"""Exec sessions: created on the container's instance and recorded with it, so that the
tenant's later start, resize and inspect of the session reach the same instance."""

from __future__ import annotations

import json

from gateway import policy, store
from gateway.context import Context
from gateway.forward import check_agent, forward, send
from gateway.tenancy import names


def create(ctx: Context, body, raw: bytes) -> None:
    """POST /containers/{id}/exec on the container's instance; the session is recorded."""
    policy.exec_create(ctx, body)
    container = ctx.target
    upstream = send(
        ctx, container.instance, path=ctx.daemon_path, body=body if isinstance(body, dict) else raw
    )
    check_agent(container.instance, upstream)
    answer = upstream.read()
    if upstream.status == 201:
        store.record_exec(json.loads(answer)["Id"], container.id, ctx.project)
    ctx.resp.status = upstream.status
    ctx.resp.content_type = upstream.header("Content-Type") or "application/json"
    ctx.resp.data = (
        names.text_to_tenant(ctx.project, answer.decode("utf-8", "replace")).encode()
        if upstream.status >= 400
        else answer
    )


def to_exec(ctx: Context) -> None:
    """Forward to the instance of the session the route names."""
    forward(ctx, ctx.target.container.instance, path=ctx.daemon_path)
