"""System: /_ping, /version, /info, /events, /system/df, /auth, /session."""

from __future__ import annotations

from gateway.context import Context
from gateway.dockerapi.common import home_instance, without_project_label
from gateway.errors import DockerError
from gateway.forward import call, forward, raise_for
from gateway.routing import Route
from gateway.tenancy import quotas


def ping(ctx: Context) -> None:
    """Answered by the gateway itself, with the headers clients negotiate from."""
    resp = ctx.resp
    resp.set_header("Cache-Control", "no-cache, no-store, must-revalidate")
    resp.set_header("Pragma", "no-cache")
    resp.content_type = "text/plain; charset=utf-8"
    if ctx.req.method == "HEAD":
        resp.content_length = 0
    else:
        resp.data = b"OK"


def version(ctx: Context) -> None:
    status, payload = call(ctx, home_instance(ctx), "GET", "/version")
    raise_for(status, payload)
    maximum, minimum = ctx.gw.api_range()
    payload["ApiVersion"], payload["MinAPIVersion"] = maximum, minimum
    for component in payload.get("Components") or []:
        details = component.get("Details")
        if component.get("Name") == "Engine" and isinstance(details, dict):
            details["ApiVersion"], details["MinAPIVersion"] = maximum, minimum
    ctx.answer_json(payload)


def to_home(ctx: Context) -> None:
    forward(ctx, home_instance(ctx))


def info(ctx: Context) -> None:
    status, payload = call(ctx, home_instance(ctx), "GET", "/info")
    raise_for(status, payload)
    add_quota_labels(ctx, payload)
    ctx.answer_json(payload)


def add_quota_labels(ctx: Context, payload: dict) -> None:
    """The project's quotas as `docker info` prints them, under Labels:
    `moorage.quota.containers=3/5` (in use / limit), one per resource."""
    if isinstance(payload, dict) and ctx.project:
        payload["Labels"] = list(payload.get("Labels") or []) + quotas.info_labels(ctx.project, ctx.settings)


def events(ctx: Context) -> None:
    forward(ctx, home_instance(ctx))
    if ctx.resp.stream is not None and ctx.resp.status == 200:
        ctx.resp.stream = without_project_label(ctx.resp.stream, ctx.project)


def session(ctx: Context) -> None:
    raise DockerError(404, "BuildKit sessions are not supported by Moorage: build with the classic "
                           "builder (DOCKER_BUILDKIT=0 docker build ...)")


ROUTES = [
    Route("GET", "/_ping", "SystemPing", ping),
    Route("HEAD", "/_ping", "SystemPingHead", ping),
    Route("GET", "/version", "SystemVersion", version),
    Route("GET", "/info", "SystemInfo", info),
    Route("GET", "/events", "SystemEvents", events, streaming=True),
    Route("GET", "/system/df", "SystemDataUsage", to_home),
    Route("POST", "/auth", "SystemAuth", to_home),
    Route("POST", "/session", "Session", session),
]
