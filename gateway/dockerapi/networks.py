"""Networks: /networks/... (docker network create/ls/inspect/rm/connect/disconnect/prune).

A user-defined network belongs to the project that made it (label and store row), lives on
one instance (until networks span instances, its containers are placed with it), and carries
a per-project daemon name (tenancy.names). The daemon's predefined networks (bridge, host,
none) are shown to every project, with only the caller's containers in them.

A project's containers that ask for no network, or for "bridge", join the project's own
default bridge on their instance (tenancy.scope.default_bridge), never the daemon's: the
tenant sees it as "bridge", and other projects' containers cannot reach them by address.
"""

from __future__ import annotations

from gateway import instances, policy, quotas, resolve, store
from gateway.context import Context
from gateway.dockerapi.common import (
    every_instance,
    hide_project_label,
    home_instance,
    new_object_instance,
    project_label_filter,
    read_json,
    with_query,
)
from gateway.errors import DockerError
from gateway.forward import call, forward, raise_for, respond, send
from gateway.routing import Route
from gateway.tenancy import PROJECT_LABEL, names, scope
from gateway.wire import DEFAULT_BRIDGE_LABEL

# (instance uuid, project) pairs whose default bridge this worker has made or seen: one
# call per pair and worker, not per container create.
_default_bridges: set[tuple[str, str]] = set()


def ensure_default_bridge(
    ctx: Context, instance: store.Instance, project: str, *, again: bool = False
) -> str:
    """Make sure ``project``'s default bridge exists on ``instance``; return its daemon name.
    ``again``: the daemon said it is missing (an instance rebuilt under the same UUID)."""
    name = scope.default_bridge(project)
    key = (instance.uuid, project)
    if key in _default_bridges and not again:
        return name
    # CheckDuplicate: a concurrent create (another worker or replica) gets 409, which is fine.
    status, payload = call(
        ctx,
        instance,
        "POST",
        "/networks/create",
        body={
            "Name": name,
            "Driver": "bridge",
            "CheckDuplicate": True,
            "Labels": {DEFAULT_BRIDGE_LABEL: project},
        },
    )
    if status != 409:
        raise_for(status, payload)
    _default_bridges.add(key)
    return name


def _default_bridge_members(ctx: Context) -> dict:
    """The caller's containers on its default bridges, every instance's."""
    members: dict = {}
    for instance in instances.live_instances(ctx.settings):
        status, payload = call(ctx, instance, "GET", f"/networks/{scope.default_bridge(ctx.project)}")
        if status == 200 and isinstance(payload.get("Containers"), dict):
            members.update(payload["Containers"])
    return members


def _for_tenant(ctx: Context, network: dict) -> dict:
    hide_project_label(network.get("Labels"), ctx)
    members = network.get("Containers")
    if isinstance(members, dict) and members and not ctx.all_projects:
        mine = {
            row.id
            for row in store.Container.select(store.Container.id).where(
                (store.Container.project == ctx.project) & store.Container.id.in_(list(members))
            )
        }
        network["Containers"] = {cid: info for cid, info in members.items() if cid in mine}
    return scope.strip_names(ctx.project, network)


def list_(ctx: Context) -> None:
    filters = project_label_filter(ctx)
    if filters is None:
        forward(ctx, home_instance(ctx))  # dockerd's own error for filters it cannot parse
        return
    home = home_instance(ctx)
    merged = []
    status, builtin = call(ctx, home, "GET", "/networks", query=ctx.req.query_string)
    raise_for(status, builtin)
    merged += [n for n in builtin if n.get("Name") in resolve.BUILTIN_NETWORKS]
    for _, payload in every_instance(ctx, "GET", "/networks", with_query(ctx, filters=filters)):
        merged += payload
    ctx.answer_json([_for_tenant(ctx, n) for n in merged])


def _builtin(ctx: Context, ref: str) -> bool:
    return ref in resolve.BUILTIN_NETWORKS


def inspect(ctx: Context) -> None:
    ref = ctx.params["id"]
    if _builtin(ctx, ref):
        instance, path = home_instance(ctx), f"/networks/{ref}"
    else:
        network = resolve.network(ctx.project, ref)
        instance, path = network.instance, f"/networks/{network.id}"
    status, payload = call(ctx, instance, "GET", path, query=ctx.req.query_string)
    if status == 404 and not _builtin(ctx, ref):
        store.Network.delete().where(store.Network.id == network.id).execute()
        raise DockerError(404, f"network {ref} not found")
    raise_for(status, payload)
    if ref == "bridge" and not ctx.all_projects:
        members = payload.get("Containers") if isinstance(payload.get("Containers"), dict) else {}
        payload["Containers"] = {**members, **_default_bridge_members(ctx)}
    ctx.answer_json(_for_tenant(ctx, payload))


def create(ctx: Context) -> None:
    body, raw = read_json(ctx)
    policy.network_create(ctx, body)  # bounded labels/options; drivers and options reaching the instance
    scope.canonical(body, ("Name", "Labels"))
    if not isinstance(body, dict) or not isinstance(body.get("Name"), str) or not body["Name"]:
        forward(ctx, home_instance(ctx), body=raw, content_type=ctx.req.content_type)  # dockerd's own error
        return
    name = body["Name"]
    if name in resolve.BUILTIN_NETWORKS:
        forward(ctx, home_instance(ctx), body=raw, content_type=ctx.req.content_type)
        return
    if not names.VALID_NAME.match(name):
        raise DockerError(400, f'invalid name "{name}": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed')
    N = store.Network
    if N.get_or_none((N.project == ctx.project) & (N.name == name)) is not None:
        raise DockerError(409, f"network with name {name} already exists")
    labels = body.get("Labels") if isinstance(body.get("Labels"), dict) else {}
    body["Labels"] = {**labels, PROJECT_LABEL: ctx.project}
    body["Name"] = names.to_daemon(ctx.project, name)
    instance = new_object_instance(ctx)
    with quotas.reserving(ctx.project, "networks", ctx.settings) as reservation:
        status, payload = call(ctx, instance, "POST", "/networks/create", body=body)
        raise_for(status, payload)
        row = {N.project: ctx.project, N.name: name, N.daemon_name: body["Name"], N.instance: instance.uuid}
        quotas.confirm(
            reservation,
            lambda: (
                N.insert({N.id: payload["Id"], **row})
                .on_conflict(conflict_target=[N.id], update=row)
                .execute()
            ),
        )  # an upsert SQLite and PostgreSQL both speak
    ctx.answer_json(payload, status)


def delete(ctx: Context) -> None:
    ref = ctx.params["id"]
    if _builtin(ctx, ref):
        forward(ctx, home_instance(ctx))  # dockerd: a pre-defined network cannot be removed
        return
    network = resolve.network(ctx.project, ref)
    upstream = send(ctx, network.instance, path=f"/networks/{network.id}")
    if upstream.status in (204, 404):
        store.Network.delete().where(store.Network.id == network.id).execute()
    respond(ctx, network.instance, upstream)


def prune(ctx: Context) -> None:
    filters = project_label_filter(ctx)
    if filters is None:
        forward(ctx, home_instance(ctx))
        return
    deleted = []
    for instance, payload in every_instance(ctx, "POST", "/networks/prune", with_query(ctx, filters=filters)):
        gone = payload.get("NetworksDeleted") or []
        if gone:
            store.Network.delete().where(
                (store.Network.instance == instance.uuid) & store.Network.daemon_name.in_(gone)
            ).execute()
        deleted += gone
    ctx.answer_json({"NetworksDeleted": scope.strip_names(ctx.project, deleted) or None})


def connect(ctx: Context) -> None:
    """connect/disconnect: the tenant's network and the tenant's container, on one instance."""
    body, raw = read_json(ctx)
    scope.canonical(body, ("Container", "EndpointConfig"))
    ref = ctx.params["id"]
    network = None if _builtin(ctx, ref) else resolve.network(ctx.project, ref)
    if not (isinstance(body, dict) and isinstance(body.get("Container"), str) and body["Container"]):
        target = network.instance if network else home_instance(ctx)
        forward(ctx, target, body=raw, content_type=ctx.req.content_type)
        return
    container = resolve.container(ctx.project, body["Container"])
    if network is not None and network.instance_id != container.instance_id:
        raise DockerError(
            409,
            f"container {body['Container']} runs on another instance than network {ref}, and "
            "networks do not span instances yet: create the container on that network instead",
        )
    body["Container"] = container.id
    if ctx.route.operation == "NetworkConnect" and network is not None:
        body["EndpointConfig"] = scope.network_alias(body.get("EndpointConfig"), container.name)
    target = network.id if network else ref
    if ref == "bridge":  # the project's default bridge, as at create
        target = ensure_default_bridge(ctx, container.instance, ctx.project)
    path = f"/networks/{target}/{ctx.route.path.rsplit('/', 1)[1]}"
    forward(ctx, container.instance, path=path, body=body)


N = "/networks/{id}"
ROUTES = [
    Route("GET", "/networks", "NetworkList", list_),
    Route("POST", "/networks/create", "NetworkCreate", create),
    Route("POST", "/networks/prune", "NetworkPrune", prune),
    Route("GET", N, "NetworkInspect", inspect),
    Route("DELETE", N, "NetworkDelete", delete),
    Route("POST", N + "/connect", "NetworkConnect", connect),
    Route("POST", N + "/disconnect", "NetworkDisconnect", connect),
]
