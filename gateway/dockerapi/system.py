"""System: /_ping, /version, /info, /events, /system/df, /auth, and BuildKit's /session and /grpc."""

from __future__ import annotations

from gateway.context import Context
from gateway.dockerapi.common import read_json
from gateway.errors import DockerError
from gateway.routing import Route
from gateway.services import buildkit, system


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


def auth(ctx: Context) -> None:
    body, raw = read_json(ctx)
    if body is None and raw.strip() == b"null":
        # dockerd drops the connection without an answer on a JSON null here.
        raise DockerError(
            400, 'invalid credentials: send them as a JSON object ({"username": ..., "password": ...})'
        )
    system.auth(ctx, raw)


ROUTES = [
    Route("GET", "/_ping", "SystemPing", ping),
    Route("HEAD", "/_ping", "SystemPingHead", ping),
    Route("GET", "/version", "SystemVersion", system.version),
    Route("GET", "/info", "SystemInfo", system.info),
    Route("GET", "/events", "SystemEvents", system.events, streaming=True),
    Route("GET", "/system/df", "SystemDataUsage", system.data_usage),
    Route("POST", "/auth", "SystemAuth", auth),
    Route("POST", "/session", "Session", buildkit.session, streaming=True),
    Route("POST", "/grpc", "BuildKitGRPC", buildkit.grpc, streaming=True),
]
