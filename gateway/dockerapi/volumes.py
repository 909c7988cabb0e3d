"""Volumes: /volumes/... (docker volume create/ls/inspect/rm/prune).

A named volume belongs to the project that made it (label and store row), lives on one
instance (containers that mount it are placed with it), and carries a per-project daemon
name (tenancy.names), since volume names are the daemon's keys.
"""

from __future__ import annotations

import secrets

from gateway import policy, quotas, resolve, store
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


def _for_tenant(ctx: Context, volume: dict) -> dict:
    hide_project_label(volume.get("Labels"), ctx)
    return scope.strip_names(ctx.project, volume)


def list_(ctx: Context) -> None:
    filters = project_label_filter(ctx)
    if filters is None:
        forward(ctx, home_instance(ctx))
        return
    merged, warnings = [], []
    for _, payload in every_instance(ctx, "GET", "/volumes", with_query(ctx, filters=filters)):
        merged += payload.get("Volumes") or []
        warnings += payload.get("Warnings") or []
    ctx.answer_json({"Volumes": [_for_tenant(ctx, v) for v in merged], "Warnings": warnings or None})


def create(ctx: Context) -> None:
    body, raw = read_json(ctx)
    policy.volume_create(ctx, body)
    if body is None and not raw:
        body = {}
    if not isinstance(body, dict):
        forward(ctx, home_instance(ctx), body=raw, content_type=ctx.req.content_type)  # dockerd's own error
        return
    scope.canonical(body, ("Name", "Labels"))
    name = body.get("Name") or secrets.token_hex(32)  # an anonymous volume: dockerd's kind of name
    if not isinstance(name, str) or not names.VALID_NAME.match(name):
        raise DockerError(
            400,
            f'create {name}: "{name}" includes invalid characters for a local volume name, '
            'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host '
            "directory, use absolute path",
        )
    labels = body.get("Labels") if isinstance(body.get("Labels"), dict) else {}
    body["Labels"] = {**labels, PROJECT_LABEL: ctx.project}
    V = store.Volume
    existing = (
        V.select(V, store.Instance)
        .join(store.Instance)
        .where((V.project == ctx.project) & (V.name == name))
        .first()
    )
    instance = existing.instance if existing else new_object_instance(ctx)
    body["Name"] = existing.daemon_name if existing else names.to_daemon(ctx.project, name)
    if existing:  # dockerd answers an existing volume's create with the volume, unchanged
        status, payload = call(ctx, instance, "POST", "/volumes/create", body=body)
        raise_for(status, payload)
    else:
        status, payload = make(ctx, instance, name, body)
    ctx.answer_json(_for_tenant(ctx, payload), status)


def make(ctx: Context, instance, name: str, body: dict) -> tuple[int, dict]:
    """Create a new volume of the project's on ``instance``, within its volumes quota."""
    with quotas.reserving(ctx.project, "volumes", ctx.settings) as reservation:
        status, payload = call(ctx, instance, "POST", "/volumes/create", body=body)
        raise_for(status, payload)
        quotas.confirm(
            reservation,
            lambda: (
                store.Volume.insert(
                    daemon_name=body["Name"], project=ctx.project, name=name, instance=instance.uuid
                )
                .on_conflict_ignore()
                .execute()
            ),
        )
    return status, payload


def inspect(ctx: Context) -> None:
    volume = resolve.volume(ctx.project, ctx.params["name"])
    status, payload = call(ctx, volume.instance, "GET", f"/volumes/{volume.daemon_name}")
    if status == 404:
        volume.delete_instance()
        raise resolve.no_such_volume(ctx.params["name"])
    raise_for(status, payload)
    ctx.answer_json(_for_tenant(ctx, payload))


def delete(ctx: Context) -> None:
    volume = resolve.volume(ctx.project, ctx.params["name"])
    upstream = send(ctx, volume.instance, path=f"/volumes/{volume.daemon_name}")
    if upstream.status in (204, 404):
        volume.delete_instance()
    respond(ctx, volume.instance, upstream)


def prune(ctx: Context) -> None:
    filters = project_label_filter(ctx)
    if filters is None:
        forward(ctx, home_instance(ctx))
        return
    deleted, reclaimed = [], 0
    for _, payload in every_instance(ctx, "POST", "/volumes/prune", with_query(ctx, filters=filters)):
        gone = payload.get("VolumesDeleted") or []
        if gone:
            store.Volume.delete().where(store.Volume.daemon_name.in_(gone)).execute()
        deleted += gone
        reclaimed += payload.get("SpaceReclaimed") or 0
    ctx.answer_json(
        {"VolumesDeleted": scope.strip_names(ctx.project, deleted) or None, "SpaceReclaimed": reclaimed}
    )


ROUTES = [
    Route("GET", "/volumes", "VolumeList", list_),
    Route("POST", "/volumes/create", "VolumeCreate", create),
    Route("POST", "/volumes/prune", "VolumePrune", prune),
    Route("GET", "/volumes/{name}", "VolumeInspect", inspect),
    Route("DELETE", "/volumes/{name}", "VolumeDelete", delete),
]
