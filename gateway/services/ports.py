"""Published ports under the routing mesh (gateway/mesh.py): the rows written when a container
starts, dropped when it stops, and shown by inspect, ps and `docker port`."""

from __future__ import annotations

import logging

from gateway import instances, mesh
from gateway.context import Context
from gateway.errors import DockerError
from gateway.forward import call

log = logging.getLogger("moorage.mesh")


def before_start(ctx: Context, container) -> None:
    """An explicit port another container holds at the mesh's address: dockerd's 500, and the
    container is not started (as dockerd leaves it: created)."""
    if not mesh.on(ctx.settings) or container.publishes is False:
        return
    status, info = call(ctx, container.instance, "GET", f"/containers/{container.id}/json")
    if status == 200 and isinstance(info, dict):
        mesh.check_start(ctx.settings, container.id, _tenant_named(ctx, info))


def after_start(ctx: Context, container) -> None:
    """The started container's ports, in the mesh's rows; a port taken meanwhile (a race with
    another start) stops the container again and answers dockerd's 500."""
    if container.publishes is False:
        return  # no port to put in the mesh's rows: no inspect either
    status, info = call(ctx, container.instance, "GET", f"/containers/{container.id}/json")
    if status != 200 or not isinstance(info, dict):
        return
    if mesh.rows_of([container.id]):
        return  # already started (304): its ports are in the map
    try:
        mesh.publish(ctx.settings, container.instance, ctx.project, _tenant_named(ctx, info))
    except DockerError:
        call(ctx, container.instance, "POST", f"/containers/{container.id}/kill")
        raise
    mesh.wait_listening(ctx.settings, container.id)


def after_stop(container) -> None:
    mesh.release(container.id)


def _tenant_named(ctx: Context, info: dict) -> dict:
    """The inspect with the container's name as the tenant knows it (dockerd's messages)."""
    return {**info, "Name": "/" + (ctx.target.name or "")} if ctx.target is not None else info


def inspect_view(ctx: Context, container, payload: dict) -> None:
    """NetworkSettings.Ports at the mesh's address (with the mesh off, at the instance's)."""
    settings = payload.get("NetworkSettings") or {}
    ports = settings.get("Ports")
    if not isinstance(ports, dict):
        return
    published = any(isinstance(bindings, list) and bindings for bindings in ports.values())
    rows = mesh.rows_of([container.id]).get(container.id, []) if published and mesh.on(ctx.settings) else []
    shown = mesh.inspect_ports(ctx.settings, ports, rows)
    if shown is not None:
        settings["Ports"] = shown
        return
    address = instances.published_address(container.instance)
    for port, bindings in ports.items():
        ports[port] = instances.publish_bindings(bindings, address, "HostIp")


def list_view(ctx: Context, containers: list[dict], instance) -> None:
    """ps's Ports, likewise, for one instance's part of the list."""
    # Only a published port is meshed: a list of containers that publish none (most of them)
    # asks the store nothing.
    published = [c.get("Id", "") for c in containers if _publishes(c.get("Ports"))]
    rows = mesh.rows_of(published) if published and mesh.on(ctx.settings) else {}
    address = instances.published_address(instance)
    for container in containers:
        shown = mesh.ps_ports(ctx.settings, container.get("Ports"), rows.get(container.get("Id", ""), []))
        if shown is not None:
            container["Ports"] = shown
        else:
            container["Ports"] = instances.publish_bindings(container.get("Ports"), address, "IP")


def _publishes(ports) -> bool:
    return isinstance(ports, list) and any(isinstance(p, dict) and p.get("PublicPort") for p in ports)


def published_by(body: dict) -> bool:
    """Whether a create body publishes ports (``-p``, ``-P``), in either shape."""
    for holder in (body.get("HostConfig"), body):
        if isinstance(holder, dict) and (holder.get("PortBindings") or holder.get("PublishAllPorts")):
            return True
    return False
