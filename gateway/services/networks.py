"""Networks: the merged list, create within the quota, inspect/rm/connect on the network's
instance, and the project's own default bridge (docker network ...).

A user-defined network belongs to the project that made it (label and store row) and carries
a per-project daemon name (tenancy.names). A bridge network spans the project's instances
(services/spans.py): one row, a copy on each instance its containers run on. A network of
another driver (where the policy allows one), or one made before networks spanned instances,
lives on one instance, and its containers are placed with it. The daemon's predefined networks (bridge, host,
none) are shown to every project, with only the caller's containers in them.

A project's containers that ask for no network, or for "bridge", join the default bridge
tenancy.scope.default_bridge chooses: with dedicated tenancy the daemon's own (the instance is
the project's alone); with shared tenancy the project's own bridge network on their instance,
which the tenant sees as "bridge" and other projects' containers cannot reach by address.
Either way `network inspect bridge` shows the caller's containers on it across its instances,
and `network connect/disconnect bridge` use it.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from gateway import policy, quotas, store
from gateway.context import Context
from gateway.errors import DockerError
from gateway.forward import call, daemon_version, forward, raise_for, respond, send
from gateway.services import span_members, span_views, spans
from gateway.services.common import (
    add_filter,
    daemon_judges,
    every_instance,
    fanout,
    hide_project_label,
    home_instance,
    new_object_instance,
    not_objects,
    odd_numbers,
    parse_filters,
    project_label_filter,
    with_query,
)
from gateway.tenancy import PROJECT_LABEL, names, resolve, scope
from gateway.wire import DEFAULT_BRIDGE_LABEL, SPAN_LABEL

# (instance uuid, project) pairs whose default bridge this worker has made or seen: one
# call per pair and worker, not per container create.
_default_bridges: set[tuple[str, str, str]] = set()


def ensure_default_bridge(
    ctx: Context, instance: store.Instance, project: str, *, again: bool = False
) -> str:
    """Make sure ``project``'s own bridge (shared tenancy's default bridge) exists on
    ``instance``; return its daemon name. ``again``: the daemon said it is missing (an
    instance rebuilt under the same UUID)."""
    name = scope.project_bridge(project)
    # Per claim of the instance (dedicated tenancy): a wipe removes the bridge with the rest.
    key = (instance.uuid, project, str(instance.claimed_at or ""))
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
    keep_one(ctx, instance, name)
    _default_bridges.add(key)
    return name


def keep_one(ctx: Context, instance: store.Instance, name: str) -> None:
    """Leave one network called ``name`` on the instance. dockerd's duplicate check is not
    atomic: creates racing from several workers or replicas can each make one, and a container
    then fails to start ("network ... is ambiguous"). Every racer keeps the same one (the one
    with containers, else the oldest) and removes the others, which are empty."""
    status, found = call(
        ctx, instance, "GET", "/networks", query=urlencode({"filters": json.dumps({"name": [name]})})
    )
    if status != 200 or not isinstance(found, list):
        return
    same = [n for n in found if isinstance(n, dict) and n.get("Name") == name]
    if len(same) < 2:
        return
    detail = []
    for network in same:
        status, info = call(ctx, instance, "GET", f"/networks/{network['Id']}")
        if status == 200 and isinstance(info, dict):
            detail.append((-len(info.get("Containers") or {}), str(info.get("Created", "")), info["Id"]))
    for *_, extra in sorted(detail)[1:]:
        call(ctx, instance, "DELETE", f"/networks/{extra}")  # one still in use stays: dockerd refuses


def _default_bridge_members(ctx: Context, home: store.Instance) -> dict:
    """The containers on the default bridges of the instances a merged view asks (fanout),
    but for the daemon's own bridge on ``home``, whose answer the caller has: each one's
    project bridge (shared tenancy's default; with dedicated, one an instance may keep from
    before, with the containers created on it then), and with dedicated tenancy each one's
    daemon bridge. (_for_tenant then keeps the caller's.)"""
    native = scope.default_bridge(ctx.project, ctx.settings) == scope.DAEMON_BRIDGE
    members: dict = {}
    for instance in fanout(ctx):
        bridges = [scope.project_bridge(ctx.project)]
        if native and instance.uuid != home.uuid:
            bridges.append(scope.DAEMON_BRIDGE)
        for bridge in bridges:
            status, payload = call(ctx, instance, "GET", f"/networks/{bridge}")
            if status == 200 and isinstance(payload.get("Containers"), dict):
                members.update(payload["Containers"])
    return members


def _bridge_of(ctx: Context, container: store.Container) -> str:
    """The daemon name of the default bridge ``container`` is (or would be) on: with shared
    tenancy its project's bridge, made if missing; with dedicated tenancy the daemon's, unless
    the container was created on its project's bridge before (tenancy.scope.project_bridge)."""
    bridge = scope.default_bridge(ctx.project, ctx.settings)
    if bridge != scope.DAEMON_BRIDGE:
        return ensure_default_bridge(ctx, container.instance, ctx.project)
    status, info = call(ctx, container.instance, "GET", f"/containers/{container.id}/json")
    joined = (info.get("NetworkSettings") or {}).get("Networks") if status == 200 else None
    if isinstance(joined, dict) and scope.project_bridge(ctx.project) in joined:
        return scope.project_bridge(ctx.project)
    return bridge


def _for_tenant(ctx: Context, network: dict) -> dict:
    hide_project_label(network.get("Labels"), ctx)
    members = network.get("Containers")
    if isinstance(members, dict) and members and not ctx.all_projects:
        mine = store.mine_among(ctx.project, list(members))
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
        # A spanning network's copies are shown once, as the gateway's own row below.
        merged += [n for n in payload if SPAN_LABEL not in (n.get("Labels") or {})]
    wanted = parse_filters(ctx) or {}
    project = None if ctx.all_projects else ctx.project
    merged += [span_views.view(n) for n in store.spans.networks_of(project) if span_views.matches(n, wanted)]
    ctx.answer_json([_for_tenant(ctx, n) for n in merged])


def inspect(ctx: Context) -> None:
    network, ref = ctx.target, ctx.ref
    if network is not None and network.subnet:
        members = span_views.members_view(ctx, network)
        if not ctx.spoken:  # no daemon asked: answer in the shape of the home instance's API
            daemon_version(ctx, home_instance(ctx))
        ctx.answer_json(_for_tenant(ctx, span_views.view(network, members)))
        return
    instance = network.instance if network is not None else home_instance(ctx)
    status, payload = call(ctx, instance, "GET", ctx.daemon_path, query=ctx.req.query_string)
    if status == 404 and network is not None:
        store.forget_network(network.id)
        raise resolve.no_such_network(ref)
    raise_for(status, payload)
    if ref == "bridge" and not ctx.all_projects:
        members = payload.get("Containers") if isinstance(payload.get("Containers"), dict) else {}
        payload["Containers"] = {**members, **_default_bridge_members(ctx, instance)}
    ctx.answer_json(_for_tenant(ctx, payload))


def create(ctx: Context, body, raw: bytes) -> None:
    if isinstance(body, dict) and (
        odd_numbers(body) or not_objects(body, ("Labels", "Options", "IPAM", "ConfigFrom"))
    ):
        raise daemon_judges(ctx, raw, "/networks/create", invalid_name="")
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
    if store.network_named(ctx.project, name) is not None:
        raise DockerError(409, f"network with name {name} already exists")
    labels = body.get("Labels")
    body["Labels"] = {**(labels if isinstance(labels, dict) else {}), PROJECT_LABEL: ctx.project}
    body["Name"] = names.to_daemon(ctx.project, name)
    if spans.spans(body):
        ctx.answer_json(spans.create(ctx, body, name), 201)
        return
    instance = new_object_instance(ctx)
    with quotas.reserving(ctx.project, "networks", ctx.settings) as reservation:
        status, payload = call(ctx, instance, "POST", "/networks/create", body=body)
        raise_for(status, payload)
        quotas.confirm(
            reservation,
            lambda: store.record_network(payload["Id"], ctx.project, name, body["Name"], instance.uuid),
        )
    ctx.answer_json(payload, status)


def delete(ctx: Context) -> None:
    network = ctx.target
    if network is None:
        forward(ctx, home_instance(ctx))  # dockerd: a pre-defined network cannot be removed
        return
    if network.subnet:
        span_members.remove(ctx, network)
        ctx.resp.status = 204
        return
    upstream = send(ctx, network.instance, path=ctx.daemon_path)
    if upstream.status in (204, 404):
        store.forget_network(network.id)
    respond(ctx, network.instance, upstream)


def prune(ctx: Context) -> None:
    filters = project_label_filter(ctx)
    if filters is None:
        forward(ctx, home_instance(ctx))
        return
    deleted = []
    # A spanning network's copies are pruned below, with the network (an unused copy of a used
    # network is not dockerd's to remove).
    daemon_filters = json.dumps(add_filter(json.loads(filters), "label!", SPAN_LABEL))
    for instance, payload in every_instance(
        ctx, "POST", "/networks/prune", with_query(ctx, filters=daemon_filters)
    ):
        gone = payload.get("NetworksDeleted") or []
        if gone:
            store.forget_networks(instance.uuid, gone)
        deleted += gone
    wanted = {k: v for k, v in (parse_filters(ctx) or {}).items() if k == "label"}
    for network in store.spans.networks_of(None if ctx.all_projects else ctx.project):
        if span_views.matches(network, wanted) and not span_views.members_view(ctx, network):
            try:
                span_members.remove(ctx, network)
            except DockerError:
                continue  # a container joined it meanwhile
            deleted.append(network.daemon_name)
    ctx.answer_json({"NetworksDeleted": scope.strip_names(ctx.project, deleted) or None})


def connect(ctx: Context, body, raw: bytes, *, joining: bool) -> None:
    """connect (``joining``) or disconnect: the tenant's network and the tenant's container, on
    one instance."""
    scope.canonical(body, ("Container", "EndpointConfig"))
    network, ref = ctx.target, ctx.ref
    if not (isinstance(body, dict) and isinstance(body.get("Container"), str) and body["Container"]):
        target = network.instance if network is not None and network.instance else home_instance(ctx)
        forward(ctx, target, body=raw, content_type=ctx.req.content_type)
        return
    container = resolve.container(ctx.project, body["Container"])
    if network is not None and network.subnet:
        body["Container"] = container.id
        span_members.connect(ctx, network, container, body, joining=joining)
        return
    if network is not None and network.instance.uuid != container.instance.uuid:
        raise DockerError(
            409,
            f"container {body['Container']} runs on another instance than network {ref}, which "
            "was made before networks spanned instances: create the container on that network "
            "instead, or recreate the network",
        )
    body["Container"] = container.id
    if joining and network is not None:
        body["EndpointConfig"] = scope.network_alias(body.get("EndpointConfig"), container.name)
    path = ctx.daemon_path
    if ref == "bridge":  # the project's default bridge, as at create
        path = ctx.daemon_path_for(_bridge_of(ctx, container))
    forward(ctx, container.instance, path=path, body=body)
