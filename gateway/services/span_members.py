"""The instances a spanning network reaches (services/spans.py): containers joining and leaving
it wherever they run (docker network connect/disconnect, rm), the network leaving an instance
when its last member there goes, and its removal from every instance (docker network rm).

A network reaches an instance while an address of it is held there (a container, or a create
in flight: spans.join_create takes the address before it makes the copy). When the last one
goes, the daemon's copy there is removed (dockerd then removes its bridge), the agent drops
the segment (VXLAN port and its forwarding entries, the guard's peers, the names), the member
row goes, and the other instances are sent their segments without that peer.
"""

from __future__ import annotations

import logging
import time

from gateway import store
from gateway.agentclient import AgentClient, UpstreamError
from gateway.context import Context
from gateway.errors import DockerError
from gateway.forward import call, raise_for
from gateway.services import spans
from gateway.tenancy import scope
from gateway.wire import AGENT_SEGMENTS_PATH

log = logging.getLogger("moorage.networks")


def leave(ctx: Context, network: store.Network, instance: store.Instance) -> bool:
    """The network leaves ``instance`` if no address of it is held there any more: its copy,
    its segment, its member row. Whether it left. Marked leaving first (store.spans
    start_leaving), so that a create or connect taking an address there meanwhile waits for
    the copy's removal to end and makes it again, rather than meeting a copy about to go."""
    with store.write_transaction():
        joined = store.spans.start_leaving(network, instance.uuid, time.time())
    if joined is None:
        return False
    kept = False
    try:
        kept = not _copy_removed(instance, network)
    finally:
        spans.forget_made(network, instance)
        with store.write_transaction():
            gone = store.spans.end_leaving(network, instance.uuid, joined if kept else None)
    if not gone:
        # The copy stayed (its removal failed), or a create joined meanwhile (its address is
        # held) and makes the copy again itself (its member row has a new joining,
        # spans.ensure_on). Never the caller's error.
        return False
    drop_segment(instance, network)
    log.info("network %s left instance %s (its last member there went)", network.id[:12], instance.uuid)
    return True


def _copy_removed(instance: store.Instance, network: store.Network) -> bool:
    """The daemon's copy of the network on ``instance`` is gone (or the instance is down)."""
    if instance.daemon_down:
        return True
    try:
        status, payload = AgentClient(instance).call_json("DELETE", f"/networks/{network.daemon_name}")
    except (UpstreamError, OSError) as exc:
        status, payload = 0, str(exc)
    if status in (200, 204, 404):
        return True
    # Still in use there (a container the map does not have) or the agent is away: the
    # network stays on the instance; its removal (network rm) tries again.
    log.warning("network %s stays on %s: %s %s", network.id[:12], instance.uuid, status, payload)
    return False


def container_gone(
    ctx: Context, container_id: str, instance: store.Instance, held: list[store.Network] | None = None
) -> None:
    """The daemon removed the container: the map forgets it, its names answer nowhere, and
    each spanning network it was on (``held``, read before the daemon was asked: its destroy
    event may make the map forget the container first, gateway/notifications/recorder.py)
    leaves the instance if it was the last member there, as does any other network no
    address on the instance holds any more. A `docker run --rm` learns of its container's
    end as its client does, and the client's next create there may come while the network
    leaves: that create waits for the leave to end (leave, spans.ensure_on)."""
    held = store.spans.networks_of_holder(container_id) if held is None else held
    store.forget_container(container_id)
    touched = {network.id: network for network in held}
    for network, _ in store.spans.networks_on(instance.uuid):
        if network.id not in touched and not store.spans.holders_on(network, instance.uuid):
            touched[network.id] = network
    for network in touched.values():
        leave(ctx, network, instance)
        spans.push(ctx, network)


def remove(ctx: Context, network: store.Network) -> None:
    """Every copy of the network, then its rows; a daemon's refusal (containers still on it) is
    the client's answer, and the network stays where it is still used."""
    for instance, _ in store.spans.members(network):
        status, payload = (404, None)
        if not instance.daemon_down:
            status, payload = call(ctx, instance, "DELETE", f"/networks/{network.daemon_name}")
        if status not in (200, 204, 404):
            raise_for(status, payload)
        drop_segment(instance, network)
        with store.write_transaction():
            store.spans.forget_member(network, instance.uuid)
        spans.forget_made(network, instance)
    with store.write_transaction():
        store.spans.forget(network)
    spans.journal_event(ctx, network, "destroy")


def connect(
    ctx: Context, network: store.Network, container: store.Container, body: dict, *, joining: bool
) -> None:
    """docker network connect/disconnect of one of the project's containers, wherever it runs."""
    instance = container.instance
    path = f"/networks/{network.daemon_name}/{'connect' if joining else 'disconnect'}"
    if not joining:
        if store.spans.address_of(network, container.id) is None:
            raise DockerError(500, f"container {container.id} is not connected to network {network.name}")
        status, payload = call(ctx, instance, "POST", path, body=body)
        raise_for(status, payload)
        with store.write_transaction():
            store.spans.release(container.id, network)
        leave(ctx, network, instance)
        spans.push(ctx, network)
        ctx.resp.status = 200
        return
    if store.spans.address_of(network, container.id) is not None:
        raise DockerError(
            403, f"endpoint with name {container.name} already exists in network {network.name}"
        )
    config = scope.network_alias(body.get("EndpointConfig"), container.name)
    ipam = spans.obj(config.get("IPAMConfig"))
    aliases = [a for a in config.get("Aliases") or [] if isinstance(a, str)]
    names = list(dict.fromkeys(n.lower() for n in [container.name, container.id[:12], *aliases] if n))
    ipam["IPv4Address"] = spans.take_address(
        network, container.id, instance, names, [], ipam.get("IPv4Address")
    )
    config["IPAMConfig"] = ipam
    body["EndpointConfig"] = config
    try:
        spans.ensure_on(ctx, instance, network)  # after the address: it keeps the network there
        status, payload = call(ctx, instance, "POST", path, body=body)
        raise_for(status, payload)
    except BaseException:
        with store.write_transaction():
            store.spans.release(container.id, network)
        leave(ctx, network, instance)
        raise
    spans.push(ctx, network, must=instance)
    ctx.resp.status = 200


def copies_missing(ctx: Context, instance: store.Instance, joined: dict, payload) -> bool:
    """A create's 404 names a spanning network it joins (its copy on ``instance`` was removed
    as the create came, span_members.leave): the copies are made again; whether to retry."""
    message = str(spans.obj(payload).get("message", ""))
    missing = [n for daemon_name, n in joined.items() if daemon_name in message]
    for network in missing:
        spans.ensure_on(ctx, instance, network, again=True)
    return bool(missing)


def drop_segment(instance: store.Instance, network: store.Network) -> None:
    try:
        AgentClient(instance).call_json("DELETE", f"{AGENT_SEGMENTS_PATH}/{network.vni}")
    except (UpstreamError, OSError) as exc:
        log.warning("network %s: segment on %s not removed: %s", network.id[:12], instance.uuid, exc)
