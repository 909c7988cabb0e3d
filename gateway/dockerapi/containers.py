"""Containers: /containers/... (docker run, ps, logs, attach, cp, stop, rm, ...)."""

from __future__ import annotations

from gateway import instances
from gateway import resolve as resolve_
from gateway.context import Context
from gateway.dockerapi import images as images_
from gateway.dockerapi.common import (
    hide_project_label,
    home_instance,
    on_finish,
    project_label_filter,
    read_json,
    with_query,
)
from gateway.errors import DockerError
from gateway.forward import call, forward, raise_for, respond, send
from gateway.placement import PIN_LABEL, PlacementRequest, place, release
from gateway.placement.scheduler import confirm
from gateway.routing import Route
from gateway.tenancy import PROJECT_LABEL


def _container(ctx: Context):
    try:
        return resolve_.container(ctx.project, ctx.params["id"])
    except DockerError as exc:
        if exc.status == 404 and ctx.route.operation == "ContainerKill":
            raise DockerError(404, f"Cannot kill container: {ctx.params['id']}: {exc.message}") from exc
        raise


def _object_path(ctx: Context, container) -> str:
    """The request's path naming the resolved container for the daemon (resolve.daemon_ref)."""
    suffix = ctx.route.path.split("{id}", 1)[1]
    return f"/containers/{resolve_.daemon_ref(ctx.params['id'], container)}{suffix}"


def to_container(ctx: Context) -> None:
    """Resolve the tenant's container and forward the request to its instance."""
    container = _container(ctx)
    forward(ctx, container.instance, path=_object_path(ctx, container))


def list_(ctx: Context) -> None:
    filters = project_label_filter(ctx)
    if filters is None:
        forward(ctx, home_instance(ctx))  # filters dockerd cannot parse either: its own error
        return
    query = with_query(ctx, filters=filters)
    merged = []
    for instance in instances.live_instances(ctx.settings):
        status, payload = call(ctx, instance, "GET", "/containers/json", query=query)
        raise_for(status, payload)
        for container in payload:
            hide_project_label(container.get("Labels"))
            container["Image"] = images_.tenant_image_name(ctx.project, container.get("Image"))  # moorage:images
        merged.extend(payload)
    # As dockerd lists them: newest first.
    # (a stable sort: within one second, each daemon's own order stands)
    merged.sort(key=lambda c: c.get("Created", 0), reverse=True)
    limit = ctx.query("limit")
    if limit and limit.lstrip("-").isdigit() and int(limit) > 0:
        merged = merged[: int(limit)]
    ctx.answer_json(merged)


def create(ctx: Context) -> None:
    body, raw = read_json(ctx)
    name = ctx.query("name") or ""
    if body is None or not isinstance(body, dict):
        # Not something dockerd would accept either: let it say why, in its own words.
        instance = home_instance(ctx)
        forward(ctx, instance, body=raw, content_type=ctx.req.content_type)
        return
    labels = body.get("Labels")
    if labels is None:
        labels = {}
    if not isinstance(labels, dict):
        forward(ctx, home_instance(ctx), body=raw, content_type=ctx.req.content_type)  # dockerd's own error
        return
    labels = {**labels, PROJECT_LABEL: ctx.project}
    body["Labels"] = labels
    placement = place(PlacementRequest(ctx.project, name, labels, labels.get(PIN_LABEL) or None), ctx.settings)
    try:
        body["Image"] = images_.container_image(ctx, placement.instance, body.get("Image"))  # moorage:images
        status, payload = call(ctx, placement.instance, "POST", "/containers/create",
                               query=ctx.req.query_string, body=body)
        raise_for(status, payload)
        container_id = payload["Id"]
        if not name:
            # dockerd chose a name: learn it, so the tenant can use it.
            inspect_status, info = call(ctx, placement.instance, "GET", f"/containers/{container_id}/json")
            name = info.get("Name", "").lstrip("/") if inspect_status == 200 else ""
    except BaseException:
        release(placement)
        raise
    confirm(placement, container_id, name.lstrip("/"), ctx.project, labels)
    ctx.answer_json(payload, 201)


def inspect(ctx: Context) -> None:
    container = _container(ctx)
    status, payload = call(ctx, container.instance, "GET", _object_path(ctx, container),
                           query=ctx.req.query_string)
    if status == 404:
        resolve_.forget_container(container.id)
    raise_for(status, payload)
    hide_project_label((payload.get("Config") or {}).get("Labels"))
    images_.container_view(ctx.project, payload)  # moorage:images
    ctx.answer_json(payload)


def delete(ctx: Context) -> None:
    container = _container(ctx)
    upstream = send(ctx, container.instance, path=_object_path(ctx, container))
    if upstream.status in (204, 404):
        resolve_.forget_container(container.id)
    respond(ctx, container.instance, upstream)


def rename(ctx: Context) -> None:
    container = _container(ctx)
    new_name = (ctx.query("name") or "").lstrip("/")
    upstream = send(ctx, container.instance, path=_object_path(ctx, container))
    if upstream.status == 204 and new_name:
        container.name = new_name
        container.save()
    respond(ctx, container.instance, upstream)


def wait(ctx: Context) -> None:
    container = _container(ctx)
    upstream = send(ctx, container.instance, path=_object_path(ctx, container))
    respond(ctx, container.instance, upstream)
    if upstream.status == 200 and ctx.query("condition") == "removed" and ctx.resp.stream is not None:
        # `docker run --rm`: once the daemon reports the container removed, so does the map.
        ctx.resp.stream = on_finish(ctx.resp.stream, lambda: resolve_.forget_container(container.id))


def prune(ctx: Context) -> None:
    filters = project_label_filter(ctx)
    if filters is None:
        forward(ctx, home_instance(ctx))
        return
    query = with_query(ctx, filters=filters)
    deleted, reclaimed = [], 0
    for instance in instances.live_instances(ctx.settings):
        status, payload = call(ctx, instance, "POST", "/containers/prune", query=query)
        raise_for(status, payload)
        for container_id in payload.get("ContainersDeleted") or []:
            resolve_.forget_container(container_id)
            deleted.append(container_id)
        reclaimed += payload.get("SpaceReclaimed") or 0
    ctx.answer_json({"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed})


def commit(ctx: Context) -> None:
    """POST /commit?container=REF: an image from the tenant's container, on its instance."""
    ref = ctx.query("container") or ""
    if not ref:
        # dockerd's own answer for a commit without a container.
        forward(ctx, home_instance(ctx))
        return
    container = resolve_.container(ctx.project, ref)
    images_.commit(ctx, container)  # moorage:images (repo/tag -> the tenant's reference)


C = "/containers/{id}"
ROUTES = [
    Route("GET", "/containers/json", "ContainerList", list_),
    Route("POST", "/containers/create", "ContainerCreate", create),
    Route("GET", C + "/json", "ContainerInspect", inspect),
    Route("GET", C + "/top", "ContainerTop", to_container),
    Route("GET", C + "/logs", "ContainerLogs", to_container, streaming=True),
    Route("GET", C + "/changes", "ContainerChanges", to_container),
    Route("GET", C + "/export", "ContainerExport", to_container, streaming=True),
    Route("GET", C + "/stats", "ContainerStats", to_container, streaming=True),
    Route("POST", C + "/resize", "ContainerResize", to_container),
    Route("POST", C + "/start", "ContainerStart", to_container),
    Route("POST", C + "/stop", "ContainerStop", to_container),
    Route("POST", C + "/restart", "ContainerRestart", to_container),
    Route("POST", C + "/kill", "ContainerKill", to_container),
    Route("POST", C + "/update", "ContainerUpdate", to_container),
    Route("POST", C + "/rename", "ContainerRename", rename),
    Route("POST", C + "/pause", "ContainerPause", to_container),
    Route("POST", C + "/unpause", "ContainerUnpause", to_container),
    Route("POST", C + "/attach", "ContainerAttach", to_container, streaming=True),
    Route("GET", C + "/attach/ws", "ContainerAttachWebsocket", to_container, streaming=True),
    Route("POST", C + "/wait", "ContainerWait", wait, streaming=True),
    Route("DELETE", C, "ContainerDelete", delete),
    Route("HEAD", C + "/archive", "ContainerArchiveInfo", to_container),
    Route("GET", C + "/archive", "ContainerArchive", to_container, streaming=True),
    Route("PUT", C + "/archive", "PutContainerArchive", to_container, streaming=True),
    Route("POST", "/containers/prune", "ContainerPrune", prune),
    Route("POST", "/commit", "ImageCommit", commit),
]
