"""Containers: /containers/... (docker run, ps, logs, attach, cp, stop, rm, ...).

Routes that name a container declare it (``resolves=CONTAINER``): the dispatcher resolves the
tenant's reference, and most of them are forwarded to the container's instance as they are.
A route whose request needs no parsing goes straight to its service function.
"""

from __future__ import annotations

from gateway.context import Context
from gateway.dockerapi.common import read_json
from gateway.routing import CONTAINER, Route
from gateway.services import containers


def create(ctx: Context) -> None:
    body, raw = read_json(ctx)
    containers.create(ctx, body, raw)


def update(ctx: Context) -> None:
    body, raw = read_json(ctx)
    containers.update(ctx, body, raw)


def commit(ctx: Context) -> None:
    answer = containers.commit(
        ctx,
        ctx.query("container") or "",
        ctx.query("repo") or "",
        ctx.query("tag") or "",
        lambda: read_json(ctx)[1],
    )
    if answer is not None:
        ctx.answer_json(*answer)


def start(ctx: Context) -> None:
    _, raw = read_json(ctx, limit=64 * 1024)
    containers.start(ctx, raw)


C = "/containers/{id}"


def _on(method: str, suffix: str, operation: str, handler, **kw) -> Route:
    return Route(method, C + suffix, operation, handler, resolves=CONTAINER, **kw)


ROUTES = [
    Route("GET", "/containers/json", "ContainerList", containers.list_, replays=True),
    Route("POST", "/containers/create", "ContainerCreate", create),
    _on("GET", "/json", "ContainerInspect", containers.inspect, replays=True),
    _on("GET", "/top", "ContainerTop", containers.to_container),
    _on("GET", "/logs", "ContainerLogs", containers.to_container, streaming=True),
    _on("GET", "/changes", "ContainerChanges", containers.to_container),
    _on("GET", "/export", "ContainerExport", containers.to_container, streaming=True),
    _on("GET", "/stats", "ContainerStats", containers.stats, streaming=True),
    _on("POST", "/resize", "ContainerResize", containers.to_container),
    _on("POST", "/start", "ContainerStart", start),
    _on("POST", "/stop", "ContainerStop", containers.stop),
    _on("POST", "/restart", "ContainerRestart", containers.restart),
    _on(
        "POST",
        "/kill",
        "ContainerKill",
        containers.stop,
        not_found="Cannot kill container: {ref}: {message}",
    ),
    _on("POST", "/update", "ContainerUpdate", update),
    _on("POST", "/rename", "ContainerRename", containers.rename),
    _on("POST", "/pause", "ContainerPause", containers.to_container),
    _on("POST", "/unpause", "ContainerUnpause", containers.to_container),
    _on("POST", "/attach", "ContainerAttach", containers.to_container, streaming=True, raw_errors=True),
    _on("GET", "/attach/ws", "ContainerAttachWebsocket", containers.to_container, streaming=True),
    _on("POST", "/wait", "ContainerWait", containers.wait, streaming=True),
    _on("DELETE", "", "ContainerDelete", containers.delete),
    _on("HEAD", "/archive", "ContainerArchiveInfo", containers.to_container),
    _on("GET", "/archive", "ContainerArchive", containers.to_container, streaming=True),
    _on("PUT", "/archive", "PutContainerArchive", containers.to_container, streaming=True),
    Route("POST", "/containers/prune", "ContainerPrune", containers.prune),
    Route("POST", "/commit", "ImageCommit", commit),
]
