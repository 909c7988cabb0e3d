"""Containers: /containers/... (docker run, ps, logs, attach, cp, stop, rm, ...)."""

from __future__ import annotations

from urllib.parse import urlencode

from gateway import instances, store
from gateway import resolve as resolve_
from gateway.context import Context
from gateway.dockerapi import networks, volumes
from gateway.dockerapi.common import (
    every_instance,
    hide_project_label,
    home_instance,
    names_stripped,
    on_finish,
    project_label_filter,
    read_json,
    with_query,
)
from gateway.errors import DockerError
from gateway.forward import call, forward, raise_for, respond, send
from gateway.placement import PIN_LABEL, PlacementRequest, place, release
from gateway.placement.scheduler import RESERVATION_PREFIX, confirm, name_conflict
from gateway.routing import Route
from gateway.services import images as images_
from gateway.tenancy import PROJECT_LABEL, names, policy, quotas, scope


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
    origin: dict[str, str] = {}  # container ID -> instance, for ordering within a second
    for instance, payload in every_instance(ctx, "GET", "/containers/json", query):
        address = instances.published_address(instance)
        for container in payload:
            origin[container.get("Id")] = instance.uuid
            container["Ports"] = instances.publish_bindings(container.get("Ports"), address, "IP")
            hide_project_label(container.get("Labels"), ctx)
            scope.show_default_bridge(ctx.project, container)
            container["Image"] = images_.tenant_image_name(ctx.project, container.get("Image"))
        merged.extend(payload)  # names: stripped once, on the encoded answer (names_of)
    # As dockerd lists them: newest first. "Created" is in whole seconds: within one second
    # each daemon's own order stands (a stable sort), and containers of different instances
    # created in the same second are ordered by the map's finer creation time.
    merged.sort(key=lambda c: c.get("Created", 0), reverse=True)
    _order_same_second(merged, origin)
    limit = ctx.query("limit")
    if limit and limit.lstrip("-").isdigit() and int(limit) > 0:
        merged = merged[: int(limit)]
    ctx.answer_json(merged, names_of=ctx.project)


def _order_same_second(merged: list[dict], origin: dict[str, str]) -> None:
    """Reorder, in place, runs of containers of several instances that share a "Created"
    second (newest first, by the map's creation times). The creation times of every such run
    are read together (a list of 2,000 containers created in bursts has hundreds of runs)."""
    runs = []
    start = 0
    while start < len(merged):
        end = start
        while end + 1 < len(merged) and merged[end + 1].get("Created") == merged[start].get("Created"):
            end += 1
        if end > start and len({origin.get(c.get("Id")) for c in merged[start : end + 1]}) > 1:
            runs.append((start, end + 1))
        start = end + 1
    ids = [merged[i].get("Id") for first, stop in runs for i in range(first, stop)]
    # Written out: peewee takes longer to build an IN of 500 values than the database to answer it.
    db, convert = store.database.obj, store.Container.created_at.python_value
    created = {}
    for chunk in range(0, len(ids), 500):
        part = ids[chunk : chunk + 500]
        marks = ", ".join([db.param] * len(part))
        rows = db.execute_sql(f'SELECT "id", "created_at" FROM "container" WHERE "id" IN ({marks})', part)
        created.update((cid, convert(at)) for cid, at in rows)
    for first, stop in runs:
        run = merged[first:stop]
        if all(c.get("Id") in created for c in run):
            run.sort(key=lambda c: created[c["Id"]], reverse=True)
            merged[first:stop] = run


def create(ctx: Context) -> None:
    body, raw = read_json(ctx)
    policy.container_create(ctx, body)  # 403 for what the project may not ask; default limits
    name = (ctx.query("name") or "").lstrip("/")
    if body is None or not isinstance(body, dict):
        # Not something dockerd would accept either: let it say why, in its own words.
        instance = home_instance(ctx)
        forward(ctx, instance, body=raw, content_type=ctx.req.content_type)
        return
    scope.canonical_create(body)
    labels = body.get("Labels")
    if labels is None:
        labels = {}
    if not isinstance(labels, dict):
        forward(ctx, home_instance(ctx), body=raw, content_type=ctx.req.content_type)  # dockerd's own error
        return
    if name and not names.VALID_NAME.match(name):
        raise DockerError(400, f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    labels = {**labels, PROJECT_LABEL: ctx.project}
    body["Labels"] = labels
    needs = scope.container_create(ctx.project, body, name)
    pinned = labels.get(PIN_LABEL) or None
    if pinned and needs.instance and pinned != needs.instance:
        raise DockerError(
            409,
            f"{needs.reason} is on instance {needs.instance}, not on the pinned instance "
            f"{pinned}: drop the {PIN_LABEL} label or pin that instance",
        )
    memory, nano_cpus = quotas.container_request(body.get("HostConfig"))
    placement = _place(
        ctx,
        PlacementRequest(
            ctx.project, name, labels, pinned or needs.instance, memory=memory, nano_cpus=nano_cpus
        ),
    )
    try:
        for tenant_volume, daemon_volume in needs.volumes.items():
            _make_volume(ctx, placement.instance, tenant_volume, daemon_volume)
        if needs.default_bridge:
            bridge = networks.ensure_default_bridge(ctx, placement.instance, ctx.project)
        body["Image"] = images_.container_image(ctx, placement.instance, body.get("Image"))
        query = with_query(ctx, name=names.to_daemon(ctx.project, name) or None)
        status, payload = call(ctx, placement.instance, "POST", "/containers/create", query=query, body=body)
        if status == 404 and needs.default_bridge and bridge in str(payload.get("message", "")):
            networks.ensure_default_bridge(ctx, placement.instance, ctx.project, again=True)
            status, payload = call(
                ctx, placement.instance, "POST", "/containers/create", query=query, body=body
            )
        raise_for(status, payload)
        container_id = payload["Id"]
        if not name:
            # dockerd chose a name: the tenant uses it as is, and the daemon's copy takes the
            # project's suffix like every other (so no later name of another project meets it).
            inspect_status, info = call(ctx, placement.instance, "GET", f"/containers/{container_id}/json")
            name = info.get("Name", "").lstrip("/") if inspect_status == 200 else ""
            if name:
                call(
                    ctx,
                    placement.instance,
                    "POST",
                    f"/containers/{container_id}/rename",
                    query=urlencode({"name": names.to_daemon(ctx.project, name)}),
                )
    except BaseException:
        release(placement)
        raise
    confirm(placement, container_id, name, ctx.project, labels)
    ctx.answer_json(scope.strip_names(ctx.project, payload), 201)


def _place(ctx: Context, request: PlacementRequest):
    """Place, once more if the name's holder turns out to be gone from its daemon already."""
    try:
        return place(request, ctx.settings)
    except DockerError as exc:
        holder = (
            store.Container.get_or_none(
                (store.Container.project == ctx.project) & (store.Container.name == request.name)
            )
            if request.name
            else None
        )
        if exc.status != 409 or holder is None or holder.id.startswith(RESERVATION_PREFIX):
            raise
        status, _ = call(ctx, holder.instance, "GET", f"/containers/{holder.id}/json")
        if status != 404:
            raise
        resolve_.forget_container(holder.id)
        return place(request, ctx.settings)


def _make_volume(ctx: Context, instance, tenant_name: str, daemon_name: str) -> None:
    """A named volume a create uses, made first with the project's label (and within its
    quota), as ``docker volume create`` would."""
    volumes.make(ctx, instance, tenant_name, {"Name": daemon_name, "Labels": {PROJECT_LABEL: ctx.project}})


def update(ctx: Context) -> None:
    body, raw = read_json(ctx)
    policy.container_update(ctx, body)
    container = _container(ctx)
    forward(
        ctx,
        container.instance,
        path=_object_path(ctx, container),
        body=body if isinstance(body, dict) else raw,
    )


def stats(ctx: Context) -> None:
    """Stats name the container as its daemon does: the tenant reads its own name."""
    to_container(ctx)
    if ctx.resp.stream is not None and ctx.resp.status == 200:
        ctx.resp.content_length = None  # names get shorter: the daemon's length no longer holds
        ctx.resp.stream = names_stripped(ctx.resp.stream, ctx.project)


def start(ctx: Context) -> None:
    """Before API 1.24 a start could carry a HostConfig, which dockerd would apply unchecked by
    tenancy and policy: Moorage refuses any start body, in dockerd's words for 1.24 and later."""
    body, raw = read_json(ctx, limit=64 * 1024)
    if raw.strip() not in (b"", b"{}", b"null"):
        raise DockerError(
            400,
            "starting container with non-empty request body was deprecated since API v1.22 "
            "and removed in v1.24",
        )  # dockerd's words, on every version
    container = _container(ctx)
    forward(ctx, container.instance, path=_object_path(ctx, container), body=b"")


def inspect(ctx: Context) -> None:
    container = _container(ctx)
    status, payload = call(
        ctx, container.instance, "GET", _object_path(ctx, container), query=ctx.req.query_string
    )
    if status == 404:
        resolve_.forget_container(container.id)
    raise_for(status, payload)
    hide_project_label((payload.get("Config") or {}).get("Labels"))
    ports = (payload.get("NetworkSettings") or {}).get("Ports")
    if isinstance(ports, dict):
        address = instances.published_address(container.instance)
        for port, bindings in ports.items():
            ports[port] = instances.publish_bindings(bindings, address, "HostIp")
    scope.show_default_bridge(ctx.project, payload)
    payload = scope.strip_names(ctx.project, payload)
    scope.hide_added_aliases(payload)
    images_.container_view(ctx.project, payload)
    ctx.answer_json(payload)


def delete(ctx: Context) -> None:
    container = _container(ctx)
    upstream = send(ctx, container.instance, path=_object_path(ctx, container))
    if upstream.status in (204, 404):
        resolve_.forget_container(container.id)
    respond(ctx, container.instance, upstream)


def rename(ctx: Context) -> None:
    policy.container_rename(ctx)
    container = _container(ctx)
    new_name = (ctx.query("name") or "").lstrip("/")
    if new_name and new_name != container.name:
        C = store.Container
        holder = C.get_or_none((C.project == ctx.project) & (C.name == new_name))
        if holder is not None:
            raise DockerError(
                409, "Error when allocating new name: " + name_conflict(new_name, holder.id).message
            )
    upstream = send(
        ctx,
        container.instance,
        path=_object_path(ctx, container),
        query=with_query(ctx, name=names.to_daemon(ctx.project, new_name) if new_name else None),
    )
    if upstream.status == 204 and new_name:
        container.name, container.daemon_name = new_name, None
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
    for _, payload in every_instance(ctx, "POST", "/containers/prune", query):
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
    answer = images_.commit(
        ctx, container, ctx.query("repo") or "", ctx.query("tag") or "", lambda: read_json(ctx)[1]
    )
    if answer is not None:
        ctx.answer_json(*answer)


C = "/containers/{id}"
ROUTES = [
    Route("GET", "/containers/json", "ContainerList", list_),
    Route("POST", "/containers/create", "ContainerCreate", create),
    Route("GET", C + "/json", "ContainerInspect", inspect),
    Route("GET", C + "/top", "ContainerTop", to_container),
    Route("GET", C + "/logs", "ContainerLogs", to_container, streaming=True),
    Route("GET", C + "/changes", "ContainerChanges", to_container),
    Route("GET", C + "/export", "ContainerExport", to_container, streaming=True),
    Route("GET", C + "/stats", "ContainerStats", stats, streaming=True),
    Route("POST", C + "/resize", "ContainerResize", to_container),
    Route("POST", C + "/start", "ContainerStart", start),
    Route("POST", C + "/stop", "ContainerStop", to_container),
    Route("POST", C + "/restart", "ContainerRestart", to_container),
    Route("POST", C + "/kill", "ContainerKill", to_container),
    Route("POST", C + "/update", "ContainerUpdate", update),
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
