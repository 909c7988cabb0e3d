"""Volumes: the merged list, create within the quota, inspect/rm on the volume's instance,
prune (docker volume ...).

A named volume belongs to the project that made it (label and store row), lives on one
instance (containers that mount it are placed with it), and carries a per-project daemon
name (tenancy.names), since volume names are the daemon's keys.
"""

from __future__ import annotations

import secrets

from gateway import policy, quotas, store
from gateway.context import Context
from gateway.errors import DockerError
from gateway.forward import call, forward, raise_for, respond, send
from gateway.services.common import (
    daemon_judges,
    every_instance,
    hide_project_label,
    home_instance,
    new_object_instance,
    not_objects,
    odd_numbers,
    project_label_filter,
    with_query,
)
from gateway.tenancy import PROJECT_LABEL, names, resolve, scope


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


def create(ctx: Context, body, raw: bytes) -> None:
    if isinstance(body, dict) and (
        odd_numbers(body) or not_objects(body, ("Labels", "DriverOpts", "ClusterVolumeSpec"))
    ):
        raise daemon_judges(ctx, raw, "/volumes/create", invalid_name="!")
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
    labels = body.get("Labels")
    body["Labels"] = {**(labels if isinstance(labels, dict) else {}), PROJECT_LABEL: ctx.project}
    existing = store.volume_named(ctx.project, name)
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
            reservation, lambda: store.record_volume(body["Name"], ctx.project, name, instance.uuid)
        )
    return status, payload


def inspect(ctx: Context) -> None:
    volume = ctx.target
    status, payload = call(ctx, volume.instance, "GET", ctx.daemon_path)
    if status == 404:
        store.forget_volumes([volume.daemon_name])
        raise resolve.no_such_volume(ctx.ref)
    raise_for(status, payload)
    ctx.answer_json(_for_tenant(ctx, payload))


def delete(ctx: Context) -> None:
    volume = ctx.target
    upstream = send(ctx, volume.instance, path=ctx.daemon_path)
    if upstream.status in (204, 404):
        store.forget_volumes([volume.daemon_name])
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
            store.forget_volumes(gone)
        deleted += gone
        reclaimed += payload.get("SpaceReclaimed") or 0
    ctx.answer_json(
        {"VolumesDeleted": scope.strip_names(ctx.project, deleted) or None, "SpaceReclaimed": reclaimed}
    )
