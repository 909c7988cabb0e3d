"""Containers: creating one (policy, scope, quotas, placement, the daemon's create), the merged
list, and what follows a container's life in the map (inspect, rename, wait, rm, prune).

Every function answers through ``ctx`` (a JSON answer, or the daemon's forwarded as it comes):
the handlers in gateway/dockerapi/containers.py only parse and call."""

from __future__ import annotations

import json
from collections.abc import Callable

from gateway import instances, mesh, policy, quotas, store
from gateway.context import Context
from gateway.errors import DockerError
from gateway.forward import call, forward, raise_for, respond, send
from gateway.placement import PIN_LABEL, PlacementRequest, place, release
from gateway.placement.scheduler import confirm, name_conflict
from gateway.services import images as images_
from gateway.services import (
    networks,
    ports,
    readcache,
    span_members,
    span_views,
    spans,
    tenantsocket,
    volumes,
)
from gateway.services.common import (
    daemon_judges,
    delegation,
    every_instance,
    hide_project_label,
    home_instance,
    names_stripped,
    not_objects,
    odd_numbers,
    on_finish,
    parse_filters,
    project_label_filter,
    take_filter,
    with_query,
)
from gateway.store import RESERVATION_PREFIX
from gateway.tenancy import PROJECT_LABEL, names, randomnames, scope
from gateway.tenancy import resolve as resolve_


def to_container(ctx: Context, **changes) -> None:
    """Forward the request to the instance of the container the route names."""
    forward(ctx, ctx.target.instance, path=ctx.daemon_path, **changes)


def list_(ctx: Context) -> None:
    client_filters = parse_filters(ctx)
    if client_filters is None:
        forward(ctx, home_instance(ctx))  # filters dockerd cannot parse either: its own error
        return
    # Names are the tenant's (the daemons hold them with the project's suffix): the `name`
    # filter is applied here, to the tenant's names, as dockerd applies it; so is the limit,
    # which comes after every filter.
    client_filters, name_patterns = take_filter(client_filters, "name")
    limit = ctx.query("limit")
    changes: dict[str, str | None] = {"filters": project_label_filter(ctx, client_filters)}
    if name_patterns and limit:
        # A limit lists stopped containers too (dockerd); each daemon must send all of them.
        changes.update(
            limit=None, all="1" if limit.lstrip("-").isdigit() and int(limit) > 0 else ctx.query("all")
        )
    query = with_query(ctx, **changes)
    merged = []
    origin: dict[str, str] = {}  # container ID -> instance, for ordering within a second
    for instance, payload in every_instance(ctx, "GET", "/containers/json", query, ask=readcache.call):
        ports.list_view(ctx, payload, instance)
        for container in payload:
            origin[container.get("Id")] = instance.uuid
            hide_project_label(container.get("Labels"), ctx)
            scope.show_default_bridge(ctx.project, container)
            container["Image"] = images_.tenant_image_name(ctx.project, container.get("Image"))
        if name_patterns:
            payload = [c for c in payload if _named(ctx, c, name_patterns)]
        merged.extend(payload)  # names: stripped once, on the encoded answer (names_of)
    # As dockerd lists them: newest first. "Created" is in whole seconds: within one second
    # each daemon's own order stands (a stable sort), and containers of different instances
    # created in the same second are ordered by the map's finer creation time.
    span_views.show_network_ids(ctx, merged)
    merged.sort(key=lambda c: c.get("Created", 0), reverse=True)
    _order_same_second(merged, origin)
    if limit and limit.lstrip("-").isdigit() and int(limit) > 0:
        merged = merged[: int(limit)]
    ctx.answer_json(merged, names_of=ctx.project)


def _named(ctx: Context, container: dict, patterns: list[str]) -> bool:
    """Whether one of the container's names, in its project's words, passes the name filter."""
    project = (container.get("Labels") or {}).get(PROJECT_LABEL, ctx.project)
    return any(names.matches(patterns, names.to_tenant(project, n)) for n in container.get("Names") or [])


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
        if end > start and len({origin.get(c.get("Id", "")) for c in merged[start : end + 1]}) > 1:
            runs.append((start, end + 1))
        start = end + 1
    created = store.creation_times([merged[i]["Id"] for first, stop in runs for i in range(first, stop)])
    for first, stop in runs:
        run = merged[first:stop]
        if all(c.get("Id") in created for c in run):
            run.sort(key=lambda c: created[c["Id"]], reverse=True)
            merged[first:stop] = run


def create(ctx: Context, body, raw: bytes) -> None:
    """POST /containers/create: ``body`` as parsed (None: only dockerd can judge ``raw``)."""
    if isinstance(body, dict) and (
        odd_numbers(body) or not_objects(body, ("HostConfig", "NetworkingConfig", "Labels"))
    ):
        # dockerd refuses to decode this; the gateway's limits, quotas and store cannot hold it.
        raise daemon_judges(ctx, raw, "/containers/create", query="name=%21")
    # 403 for what the project may not ask; default limits
    policy.container_create(ctx, body, agent_ports=instances.agent_ports())
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
    gateway_named = not name
    if gateway_named:
        name = _free_random_name(ctx.project)
    needs = scope.container_create(ctx.project, body, name, ctx.settings)
    pinned = labels.get(PIN_LABEL) or None
    if pinned and needs.instance and pinned != needs.instance:
        raise DockerError(
            409,
            f"{needs.reason} is on instance {needs.instance}, not on the pinned instance "
            f"{pinned}: drop the {PIN_LABEL} label or pin that instance",
        )
    memory, nano_cpus = quotas.container_request(body.get("HostConfig"))
    request = PlacementRequest(
        ctx.project,
        name,
        labels,
        pinned or needs.instance,
        memory=memory,
        nano_cpus=nano_cpus,
        delegation=delegation(ctx),
        ports=tuple(mesh.explicit_ports(body.get("HostConfig"))),
    )
    placement = _place_named(ctx, request, gateway_named)
    if request.name != name:  # chosen again: its network aliases follow (scope.container_create)
        _rename_aliases(body, name, request.name)
        name = request.name
    opened = None
    token = ""  # the create's hold on addresses of spanning networks (services/spans.py)
    try:
        for tenant_volume, daemon_volume in needs.volumes.items():
            _make_volume(ctx, placement.instance, tenant_volume, daemon_volume)
        if needs.default_bridge:  # shared tenancy: the project's own bridge (tenancy.scope)
            bridge = networks.ensure_default_bridge(ctx, placement.instance, ctx.project)
        token = spans.join_create(
            ctx, placement.instance, body, needs.networks, name, default_bridge=needs.on_default_bridge
        )
        body["Image"] = images_.container_image(ctx, placement.instance, body.get("Image"))
        # A bind of the Docker socket: the container's own tenant socket instead.
        opened = tenantsocket.provide(ctx, placement.instance, body)
        query = with_query(ctx, name=names.to_daemon(ctx.project, name) or None)
        status, payload = call(ctx, placement.instance, "POST", "/containers/create", query=query, body=body)
        if status >= 400 and needs.default_bridge and bridge in str(payload.get("message", "")):
            # Missing (an instance rebuilt under the same UUID) or made twice by racing creates.
            networks.ensure_default_bridge(ctx, placement.instance, ctx.project, again=True)
            status, payload = call(
                ctx, placement.instance, "POST", "/containers/create", query=query, body=body
            )
        if status == 404 and span_members.copies_missing(ctx, placement.instance, needs.networks, payload):
            # A spanning network's copy went with its last container there as this one came.
            status, payload = call(
                ctx, placement.instance, "POST", "/containers/create", query=query, body=body
            )
        raise_for(status, payload)
        container_id = payload["Id"]
    except BaseException:
        release(placement)
        tenantsocket.withdraw(opened)
        spans.release(token)
        raise
    confirm(placement, container_id, name, ctx.project, labels, publishes=ports.published_by(body))
    tenantsocket.created(opened, container_id)
    spans.bind(ctx, token, container_id, name)
    ctx.answer_json(scope.strip_names(ctx.project, payload), 201)


def _free_random_name(project: str) -> str:
    """A name for a container created without one (gateway/tenancy/randomnames.py), free in
    the project: tried up to randomnames.ATTEMPTS times, as dockerd tries its own."""
    for attempt in range(randomnames.ATTEMPTS):
        name = randomnames.random_name(attempt)
        if store.container_named(project, name) is None:
            return name
    raise DockerError(500, "could not find a free random name for the container; give it one with --name")


def _place_named(ctx: Context, request: PlacementRequest, gateway_named: bool):
    """Place; a name the gateway chose that a create at the same moment took (free when it was
    chosen, outside the placement's lock) is chosen again, as dockerd tries its own again:
    a create without a name is never refused for its name."""
    for _ in range(randomnames.ATTEMPTS - 1):
        try:
            return _place(ctx, request)
        except DockerError as exc:
            taken = exc.status == 409 and store.container_named(ctx.project, request.name) is not None
            if not (gateway_named and taken):
                raise
        request.name = _free_random_name(ctx.project)
    return _place(ctx, request)


def _rename_aliases(body: dict, old: str, new: str) -> None:
    endpoints = (body.get("NetworkingConfig") or {}).get("EndpointsConfig")
    for endpoint in endpoints.values() if isinstance(endpoints, dict) else ():
        if isinstance(endpoint, dict) and isinstance(endpoint.get("Aliases"), list):
            endpoint["Aliases"] = [new if alias == old else alias for alias in endpoint["Aliases"]]


def _place(ctx: Context, request: PlacementRequest):
    """Place, once more if the name's holder turns out to be gone from its daemon already."""
    try:
        return place(request, ctx.settings)
    except DockerError as exc:
        holder = store.container_named(ctx.project, request.name) if request.name else None
        if exc.status != 409 or holder is None or holder.id.startswith(RESERVATION_PREFIX):
            raise
        status, _ = call(ctx, holder.instance, "GET", f"/containers/{holder.id}/json")
        if status != 404:
            raise
        store.forget_container(holder.id)
        return place(request, ctx.settings)


def _make_volume(ctx: Context, instance, tenant_name: str, daemon_name: str) -> None:
    """A named volume a create uses, made first with the project's label (and within its
    quota), as ``docker volume create`` would."""
    volumes.make(ctx, instance, tenant_name, {"Name": daemon_name, "Labels": {PROJECT_LABEL: ctx.project}})


def update(ctx: Context, body, raw: bytes) -> None:
    policy.container_update(ctx, body)
    to_container(ctx, body=body if isinstance(body, dict) else raw)


def stats(ctx: Context) -> None:
    """Stats name the container as its daemon does: the tenant reads its own name."""
    to_container(ctx)
    if ctx.resp.stream is not None and ctx.resp.status == 200:
        ctx.resp.content_length = None  # names get shorter: the daemon's length no longer holds
        ctx.resp.stream = names_stripped(ctx.resp.stream, ctx.project)


def start(ctx: Context, raw: bytes) -> None:
    """Before API 1.24 a start could carry a HostConfig, which dockerd would apply unchecked by
    tenancy and policy: Moorage refuses any start body, in dockerd's words for 1.24 and later."""
    if raw.strip() not in (b"", b"{}", b"null"):
        raise DockerError(
            400,
            "starting container with non-empty request body was deprecated since API v1.22 and "
            "removed in v1.24",
        )  # dockerd's words, on every version
    container = ctx.target
    ports.before_start(ctx, container)
    upstream = send(ctx, container.instance, path=ctx.daemon_path, body=b"")
    if upstream.status == 400 and (upstream.header("Content-Type") or "").startswith("application/json"):
        message = upstream.read()
        # Only the project's own bridge is made on demand, so only it can be made twice.
        bridge = scope.project_bridge(ctx.project).encode()
        if not (bridge in message and b"ambiguous" in message):
            try:
                payload = json.loads(message or b"{}")
            except ValueError:
                payload = {"message": message.decode("utf-8", "replace")}
            raise_for(400, payload if isinstance(payload, dict) else {"message": str(payload)})
        # The project's bridge was made twice by racing creates: keep one, start again.
        networks.keep_one(ctx, container.instance, bridge.decode())
        upstream = send(ctx, container.instance, path=ctx.daemon_path, body=b"")
    if upstream.status in (204, 304):
        upstream.read()  # (an empty body) before the calls below use the agent again
        ports.after_start(ctx, container)
    respond(ctx, container.instance, upstream)


def stop(ctx: Context) -> None:
    """stop, kill: the container's ports leave the mesh once the daemon has stopped it. A kill
    with another signal than SIGKILL may leave it running: if it dies, `moorage mesh` sees it."""
    container = ctx.target
    upstream = send(ctx, container.instance, path=ctx.daemon_path)
    signal = (ctx.query("signal") or "KILL").upper().removeprefix("SIG")
    stopped = ctx.route.operation == "ContainerStop" or signal in ("KILL", "9")
    if upstream.status in (204, 304) and stopped:
        ports.after_stop(container)
    respond(ctx, container.instance, upstream)


def restart(ctx: Context) -> None:
    """A restart may give the container other ports on its instance: the mesh's follow."""
    container = ctx.target
    upstream = send(ctx, container.instance, path=ctx.daemon_path)
    if upstream.status == 204:
        upstream.read()
        ports.after_stop(container)
        ports.after_start(ctx, container)
    respond(ctx, container.instance, upstream)


def inspect(ctx: Context) -> None:
    container = ctx.target
    status, payload = readcache.call(
        ctx, container.instance, "GET", ctx.daemon_path, query=ctx.req.query_string
    )
    if status == 404:
        store.forget_container(container.id)
    raise_for(status, payload)
    hide_project_label((payload.get("Config") or {}).get("Labels"))
    ports.inspect_view(ctx, container, payload)
    scope.show_default_bridge(ctx.project, payload)
    tenantsocket.show_requested(payload, container.instance)
    payload = scope.strip_names(ctx.project, payload)
    scope.hide_added_aliases(payload)
    span_views.as_asked(payload, container)
    images_.container_view(ctx.project, payload)
    ctx.answer_json(payload)


def delete(ctx: Context) -> None:
    container = ctx.target
    held = store.spans.networks_of_holder(container.id)  # before its destroy event forgets them
    upstream = send(ctx, container.instance, path=ctx.daemon_path)
    if upstream.status in (204, 404):
        # its names answer nowhere now, its address is free, its networks may leave the instance
        span_members.container_gone(ctx, container.id, container.instance, held)
        tenantsocket.removed(container)
    respond(ctx, container.instance, upstream)


def rename(ctx: Context) -> None:
    policy.container_rename(ctx)
    container = ctx.target
    new_name = (ctx.query("name") or "").lstrip("/")
    if new_name and new_name != container.name:
        holder = store.container_named(ctx.project, new_name)
        if holder is not None:
            raise DockerError(
                409, "Error when allocating new name: " + name_conflict(new_name, holder.id).message
            )
    upstream = send(
        ctx,
        container.instance,
        path=ctx.daemon_path,
        query=with_query(ctx, name=names.to_daemon(ctx.project, new_name) if new_name else None),
    )
    if upstream.status == 204 and new_name:
        store.rename_container(container.id, new_name)  # not the resolved row: it is shared
    respond(ctx, container.instance, upstream)


def wait(ctx: Context) -> None:
    container = ctx.target
    held = store.spans.networks_of_holder(container.id)
    upstream = send(ctx, container.instance, path=ctx.daemon_path)
    respond(ctx, container.instance, upstream)
    if upstream.status == 200 and ctx.query("condition") == "removed" and ctx.resp.stream is not None:
        # `docker run --rm`: once the daemon reports the container removed, so does the map.
        ctx.resp.stream = on_finish(ctx.resp.stream, lambda: _forget_if_gone(ctx, container, held))


def _forget_if_gone(ctx: Context, container, held) -> None:
    """The map forgets the container when its daemon no longer has it (and its spanning
    networks' names and addresses go: span_members.container_gone). A wait that ended some
    other way (the client left, the connection to the instance broke) ends the stream just as
    quietly, and forgetting then made the container's next call a 404 (seen in the compat
    lane: `docker run --rm`'s start got "No such container"); reconcile clears what is left."""
    try:
        status, _ = call(ctx, container.instance, "GET", f"/containers/{container.id}/json")
    except DockerError:
        return  # the instance does not answer: reconcile decides later
    if status == 404:
        span_members.container_gone(ctx, container.id, container.instance, held)


def prune(ctx: Context) -> None:
    filters = project_label_filter(ctx)
    if filters is None:
        forward(ctx, home_instance(ctx))
        return
    query = with_query(ctx, filters=filters)
    deleted, reclaimed = [], 0
    for instance, payload in every_instance(ctx, "POST", "/containers/prune", query):
        for container_id in payload.get("ContainersDeleted") or []:
            span_members.container_gone(ctx, container_id, instance)
            deleted.append(container_id)
        reclaimed += payload.get("SpaceReclaimed") or 0
    ctx.answer_json({"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed})


def commit(ctx: Context, ref: str, repo: str, tag: str, body: Callable[[], bytes]):
    """POST /commit?container=REF: an image from the tenant's container, on its instance.
    ``body`` reads the request's body (the image's config), once the name has passed."""
    if not ref:
        # dockerd's own answer for a commit without a container.
        forward(ctx, home_instance(ctx))
        return None
    # The container is named in the query, not the path: resolved here, as a route's would be.
    return images_.commit(ctx, resolve_.container(ctx.project, ref), repo, tag, body)
