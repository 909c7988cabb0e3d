"""Networks that span a project's instances (docker network create with the bridge driver).

The gateway owns a spanning network: its ID, subnet (from ``[networks] pool``, unique within a
project in dedicated tenancy, across projects in shared), VNI and MTU live in the store
(gateway/store/spans.py), and no daemon holds it until a container needs it. When a container
on the network lands on an instance, the gateway

- gives the network a slot on that instance (its gateway address there: the subnet's top
  addresses, one per instance, so that every instance routes its own containers);
- makes the daemon's copy: a bridge network of the same subnet and that gateway, its bridge
  named after the VNI (``msp<VNI>``) so the agent can find it, with the network's MTU;
- gives the container its address from the one address table (IPAMConfig), since no daemon
  knows what another handed out, and points its DNS at the agent's responder on the local
  gateway address;
- sends every instance of the network the segment's desired state (agent/segments.py): VXLAN
  peers, the guard's admitted peers, the names and addresses the responder answers.

The tenant sees one network: one row in ``network ls``, one ID, the containers of every
instance in ``inspect``; ``rm`` removes every copy.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import time
from typing import cast

from gateway import quotas, store
from gateway.agentclient import AgentClient, UpstreamError
from gateway.context import Context
from gateway.errors import DockerError
from gateway.forward import call, raise_for
from gateway.placement.scheduler import dedicated
from gateway.store import journal
from gateway.tenancy import PROJECT_LABEL, scope
from gateway.wire import AGENT_SEGMENTS_PATH, SPAN_LABEL

log = logging.getLogger("moorage.networks")

BRIDGE_OPTION = "com.docker.network.bridge.name"
MTU_OPTION = "com.docker.network.driver.mtu"
# The daemon's copy of a network per (network, instance, claim of the instance), per worker.
_made: set[tuple[str, str, str]] = set()


def _obj(value) -> dict:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def spec_of(network: store.Network) -> dict:
    """What the tenant asked for at create (the row's JSON)."""
    return _obj(cast(object, network.spec))


def spans(body: dict) -> bool:
    """Whether a create body asks for a network the gateway can span: the bridge driver, IPv4."""
    driver = body.get("Driver")
    return (
        (not isinstance(driver, str) or driver.strip().lower() in ("", "bridge"))
        and not body.get("EnableIPv6")
        and not body.get("ConfigOnly")
        and not body.get("ConfigFrom")
    )


def bridge_name(network: store.Network) -> str:
    return f"msp{network.vni}"


def _reserved(subnet: ipaddress.IPv4Network) -> int:
    """How many of the subnet's top addresses are instances' gateways (one per instance)."""
    return max(1, min(64, subnet.num_addresses // 4))


def gateway_address(network: store.Network, slot: int) -> str:
    subnet = ipaddress.IPv4Network(network.subnet)
    if slot >= _reserved(subnet):
        raise DockerError(
            507,
            f"network {network.name} reaches as many instances as its subnet {subnet} has gateway "
            "addresses: create the network with a larger --subnet",
        )
    return str(subnet.broadcast_address - 1 - slot)


def _container_addresses(network: store.Network) -> tuple[ipaddress.IPv4Network, list[str]]:
    subnet = ipaddress.IPv4Network(network.subnet)
    last = int(subnet.broadcast_address) - 1 - _reserved(subnet)
    return subnet, [str(ipaddress.IPv4Address(a)) for a in range(int(subnet.network_address) + 1, last + 1)]


def underlay(instance: store.Instance) -> str:
    """The instance's address between instances: its agent's (registration)."""
    address = AgentClient(instance).endpoint.address
    return address[0] if isinstance(address, tuple) else ""


# -- create ------------------------------------------------------------------------------------
def create(ctx: Context, body: dict, name: str) -> dict:
    """Record a spanning network (no daemon is asked): the create's answer."""
    settings = ctx.settings.networks
    ipam = _obj(body.get("IPAM"))
    configs = ipam.get("Config") if isinstance(ipam.get("Config"), list) else []
    configs = cast(list, configs)
    subnet = next((c["Subnet"] for c in configs if isinstance(c, dict) and c.get("Subnet")), None)
    if subnet is not None:
        try:
            if ipaddress.ip_network(subnet, strict=False).version != 4:
                raise DockerError(
                    400, f"subnet {subnet}: networks across instances are IPv4; give an IPv4 --subnet"
                )
        except ValueError:
            raise DockerError(400, f"invalid CIDR address: {subnet}") from None
    options = _obj(body.get("Options"))
    mtu = settings.mtu
    if str(options.get(MTU_OPTION, "")).isdigit():
        mtu = min(mtu, int(options[MTU_OPTION]))
    labels = {k: v for k, v in _obj(body.get("Labels")).items() if k != PROJECT_LABEL}
    spec = {
        "Labels": {**labels, PROJECT_LABEL: ctx.project},
        "Options": options,
        "Internal": bool(body.get("Internal")),
        "Attachable": bool(body.get("Attachable")),
        "IPAM": ipam or {"Driver": "default", "Options": None, "Config": []},
    }
    network_id = secrets.token_hex(32)
    with quotas.reserving(ctx.project, "networks", ctx.settings) as reservation:
        try:
            quotas.confirm(
                reservation,
                lambda: store.spans.record(
                    network_id,
                    ctx.project,
                    name,
                    body["Name"],
                    subnet=subnet,
                    pool=settings.pool,
                    prefix=settings.prefix,
                    mtu=mtu,
                    spec=spec,
                    per_project=dedicated(ctx.settings),
                ),
            )
        except ValueError as exc:
            raise DockerError(403, f"{exc}: choose another --subnet, or remove an unused network") from None
    network = store.Network.get_by_id(network_id)
    _journal(ctx, network, "create")
    return {"Id": network_id, "Warning": ""}


def _journal(ctx: Context, network: store.Network, action: str) -> None:
    """The network's own event (no daemon sees the gateway's network be made or removed), in
    the journal that `docker events --since` replays (gateway/services/event_replay.py)."""
    if not ctx.settings.events.retention:
        return  # no journal
    now = time.time_ns()
    event = {
        "Type": "network",
        "Action": action,
        "Actor": {"ID": network.id, "Attributes": {"name": network.daemon_name, "type": "bridge"}},
        "scope": "local",
        "time": now // 1_000_000_000,
        "timeNano": now,
    }
    journal.record_events([(network.project, "", now, journal.encode(event))])


# -- on an instance -----------------------------------------------------------------------------
def ensure_on(ctx: Context, instance: store.Instance, network: store.Network, *, again: bool = False) -> str:
    """The network's copy on ``instance`` (made if missing); its gateway address there."""
    with store.write_transaction():
        slot = store.spans.member_slot(network, instance.uuid)
    gateway = gateway_address(network, slot)
    key = (network.id, instance.uuid, str(instance.claimed_at or ""))
    if key in _made and not again:
        return gateway
    spec = spec_of(network)
    body = {
        "Name": network.daemon_name,
        "Driver": "bridge",
        "CheckDuplicate": True,
        "Internal": bool(spec.get("Internal")),
        "Attachable": True,
        "Labels": {**(spec.get("Labels") or {}), PROJECT_LABEL: network.project, SPAN_LABEL: network.id},
        "Options": {
            **(spec.get("Options") or {}),
            BRIDGE_OPTION: bridge_name(network),
            MTU_OPTION: str(network.mtu),
        },
        "IPAM": {"Driver": "default", "Config": [{"Subnet": network.subnet, "Gateway": gateway}]},
    }
    for _ in range(2):
        status, payload = call(ctx, instance, "POST", "/networks/create", body=body)
        if status < 300:
            break
        if status not in (403, 409):
            raise_for(status, payload)  # the daemon's own refusal of the copy: no race to wait out
        # A name taken (409), or dockerd's duplicate check raced: it is not atomic, so two
        # creates at once (compose starts a project's services together, on any worker or
        # replica) both pass it and the second fails on the subnet ("Pool overlaps"). The
        # racer's copy is as good as ours; a copy left by an older network of that name
        # (another subnet: containers there got "Invalid address") goes, if empty.
        state = _copy_state(ctx, instance, network)
        if state == "ours":
            break
        if state != "stale":
            raise_for(status, payload)
    else:
        raise_for(status, payload)
    _made.add(key)
    return gateway


def _copy_state(ctx: Context, instance: store.Instance, network: store.Network) -> str:
    """What the daemon holds under the network's daemon name: "ours" (this network's copy),
    "stale" (an empty copy of an older network of that name, now removed), or "" (neither).
    A racer's copy may take a moment to show (dockerd registers it when it is made)."""
    for _ in range(20):
        status, found = call(ctx, instance, "GET", f"/networks/{network.daemon_name}")
        if status == 200 and isinstance(found, dict) and found.get("Name") == network.daemon_name:
            break
        time.sleep(0.1)
    else:
        return ""
    if (found.get("Labels") or {}).get(SPAN_LABEL) == network.id:
        return "ours"
    if found.get("Containers"):
        return ""
    status, _ = call(ctx, instance, "DELETE", f"/networks/{found.get('Id')}")
    return "stale" if status in (200, 204, 404) else ""


def segment(network: store.Network, instance: store.Instance, slot: int, members, addresses) -> dict:
    """What the agent of ``instance`` makes of the network (agent/segments.py validate)."""
    return {
        "network": network.id,
        "vni": network.vni,
        "mtu": network.mtu,
        "port": 4789,
        "bridge": bridge_name(network),
        "gateway": gateway_address(network, slot),
        "peers": [underlay(other) for other, _ in members if other.uuid != instance.uuid],
        "endpoints": [
            {
                "container": a.container,
                "address": a.address,
                "names": a.names or [],
                "dns": [d for d in cast(list, a.dns or []) if isinstance(d, str)],
            }
            for a in addresses
        ],
    }


def push(ctx: Context, network: store.Network, *, must: store.Instance | None = None) -> None:
    """Send every instance of the network its segment; a failure on ``must`` is the caller's."""
    members, addresses = store.spans.members(network), store.spans.addresses(network)
    port = ctx.settings.networks.vxlan_port
    for instance, slot in members:
        desired = {**segment(network, instance, slot, members, addresses), "port": port}
        status, message = _put(instance, desired)
        if status == 409 and must is not None and instance.uuid == must.uuid:
            ensure_on(ctx, instance, network, again=True)  # the daemon's copy went (a wipe, a rebuild)
            status, message = _put(instance, desired)
        if status != 200:
            if must is not None and instance.uuid == must.uuid:
                raise DockerError(
                    503 if status == 0 else status,
                    f"network {network.name}: the agent of instance {instance.uuid} could not set up "
                    f"its segment ({message}); try again, or ask the operator to check that instance",
                )
            log.warning("network %s: segment on %s not updated: %s", network.id[:12], instance.uuid, message)


def _put(instance: store.Instance, desired: dict) -> tuple[int, str]:
    data = json.dumps(desired).encode()
    try:
        upstream = AgentClient(instance).send(
            "PUT",
            f"{AGENT_SEGMENTS_PATH}/{desired['vni']}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
            data,
            timeout=30,
        )
        raw = upstream.read()
    except (UpstreamError, OSError) as exc:
        return 0, str(exc)
    if upstream.status == 200:
        return 200, ""
    try:
        return upstream.status, str(json.loads(raw).get("message"))
    except (ValueError, AttributeError):
        return upstream.status, raw.decode(errors="replace")[:200]


def desired(instance_uuid: str, settings) -> list[dict]:
    """Every segment the instance carries: the gateway's registration answer to its agent."""
    out = []
    for network, slot in store.spans.networks_on(instance_uuid):
        members = store.spans.members(network)
        instance = next((i for i, _ in members if i.uuid == instance_uuid), None)
        if instance is not None:
            out.append(
                {
                    **segment(network, instance, slot, members, store.spans.addresses(network)),
                    "port": settings.networks.vxlan_port,
                }
            )
    return out


def drop_segment(instance: store.Instance, network: store.Network) -> None:
    try:
        AgentClient(instance).call_json("DELETE", f"{AGENT_SEGMENTS_PATH}/{network.vni}")
    except (UpstreamError, OSError) as exc:
        log.warning("network %s: segment on %s not removed: %s", network.id[:12], instance.uuid, exc)


# -- addresses -----------------------------------------------------------------------------------
def take_address(
    network: store.Network,
    holder: str,
    instance: store.Instance,
    names: list[str],
    dns,
    wanted=None,
) -> str:
    """An address of the network for ``holder`` (a container ID or a create's token): the
    tenant's ``wanted`` one (--ip) if free, else the first free one."""
    subnet, free = _container_addresses(network)
    if wanted:
        try:
            address = ipaddress.IPv4Address(str(wanted))
        except ValueError:
            raise DockerError(400, f"invalid IPv4 address: {wanted}") from None
        if address not in subnet:
            raise DockerError(
                400,
                f"Invalid address {wanted}: It does not belong to any of this network's subnets ({subnet})",
            )
        if str(address) not in free:
            raise DockerError(
                403,
                f"Address {wanted} is reserved for the network's gateways: choose one below {free[-1]}",
            )
        free = [str(address)]
    with store.write_transaction():
        got = store.spans.take_address(network, free, holder, instance.uuid, names, dns, bool(wanted))
    if got is None:
        if wanted:
            raise DockerError(
                403, f"Address already in use: {wanted} on network {network.name}; choose another --ip"
            )
        raise DockerError(403, f"no available IPv4 addresses on network {network.name} ({subnet})")
    return got


def join_create(ctx: Context, instance: store.Instance, body: dict, joined: dict, name: str) -> str:
    """A container create on ``instance`` that joins the spanning networks ``joined`` (daemon
    name -> network): copies made, addresses taken under a token (``bind`` then names the
    container), DNS pointed at the agent. Returns the token ('' if no network spans)."""
    if not joined:
        return ""
    token = "create-" + secrets.token_hex(12)
    networking = body.setdefault("NetworkingConfig", {}) or {}
    body["NetworkingConfig"] = networking
    endpoints = networking.get("EndpointsConfig")
    if not isinstance(endpoints, dict):
        endpoints = networking["EndpointsConfig"] = {}
    host = body.get("HostConfig")
    if not isinstance(host, dict):
        host = body["HostConfig"] = {}
    user_dns = host.get("Dns")  # kept as sent: inspect shows it, the responder forwards to it
    hostname = body.get("Hostname") if isinstance(body.get("Hostname"), str) else ""
    first = ""
    try:
        for daemon_name, network in joined.items():
            gateway = ensure_on(ctx, instance, network)
            first = first or gateway
            endpoint = endpoints.get(daemon_name)
            if not isinstance(endpoint, dict):
                endpoint = endpoints[daemon_name] = {}
            ipam = _obj(endpoint.get("IPAMConfig"))
            aliases = [a for a in endpoint.get("Aliases") or [] if isinstance(a, str)]
            names = list(dict.fromkeys(n.lower() for n in [name, hostname, *aliases] if n))
            ipam["IPv4Address"] = take_address(
                network, token, instance, names, user_dns, ipam.get("IPv4Address")
            )
            endpoint["IPAMConfig"] = ipam
    except BaseException:
        release(token)
        raise
    host["Dns"] = [first]
    return token


def bind(ctx: Context, token: str, container_id: str, name: str) -> None:
    """The create's container exists: its addresses are its own, its names known everywhere."""
    if not token:
        return
    with store.write_transaction():
        store.spans.rename_holder(token, container_id, [name.lower(), container_id[:12]])
    for network in store.spans.networks_of_holder(container_id):
        push(ctx, network)


def release(token: str) -> None:
    if token:
        with store.write_transaction():
            store.spans.release(token)


def show_network_ids(ctx: Context, containers: list[dict]) -> None:
    """A list's containers (keyed by the daemons' network names) with each spanning network's
    one ID, not its daemon copy's: compose compares a container's NetworkID with the ID
    `network inspect` gives, and recreates the container when they differ."""
    # Not the daemon's own networks, nor the project's default bridge (which every container
    # not on another network is on): a list of those asks the store nothing.
    plain = {"bridge", "host", "none", scope.project_bridge(ctx.project)}
    joined = {
        name
        for container in containers
        for name in _obj(_obj(container.get("NetworkSettings")).get("Networks"))
        if name not in plain
    }
    if not joined:
        return
    ids = {
        network.daemon_name: network.id
        for network in store.spans.networks_of(None if ctx.all_projects else ctx.project)
        if network.daemon_name in joined
    }
    for container in containers:
        for name, endpoint in _obj(_obj(container.get("NetworkSettings")).get("Networks")).items():
            if name in ids and isinstance(endpoint, dict):
                endpoint["NetworkID"] = ids[name]


def as_asked(payload: dict, container_id: str) -> None:
    """A container's inspect as the tenant made it: the DNS servers and addresses it asked for,
    not the ones the gateway gave it on its spanning networks, and each network's one ID."""
    held = store.spans.held_by(container_id)
    if not held:
        return
    host = payload.get("HostConfig")
    if isinstance(host, dict):
        host["Dns"] = held[0][0].dns
    networks = _obj(payload.get("NetworkSettings")).get("Networks")
    for address, network in held:
        endpoint = _obj(networks).get(network.name) if isinstance(networks, dict) else None
        if isinstance(endpoint, dict):
            endpoint["NetworkID"] = network.id  # the network's one ID, not its daemon copy's
        if isinstance(endpoint, dict) and not address.asked and isinstance(endpoint.get("IPAMConfig"), dict):
            endpoint["IPAMConfig"].pop("IPv4Address", None)
            if not endpoint["IPAMConfig"]:
                endpoint["IPAMConfig"] = None


# -- removal ----------------------------------------------------------------------------------
def remove(ctx: Context, network: store.Network) -> None:
    """Every copy of the network, then its rows; a daemon's refusal (containers still on it) is
    the client's answer, and the network stays where it is still used."""
    for instance, _ in store.spans.members(network):
        status, payload = (404, None)
        if instance.state != store.INSTANCE_DOWN:
            status, payload = call(ctx, instance, "DELETE", f"/networks/{network.daemon_name}")
        if status not in (200, 204, 404):
            raise_for(status, payload)
        drop_segment(instance, network)
        with store.write_transaction():
            store.spans.forget_member(network, instance.uuid)
        _made.discard((network.id, instance.uuid, str(instance.claimed_at or "")))
    with store.write_transaction():
        store.spans.forget(network)
    _journal(ctx, network, "destroy")


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
        push(ctx, network)
        ctx.resp.status = 200
        return
    if store.spans.address_of(network, container.id) is not None:
        raise DockerError(
            403, f"endpoint with name {container.name} already exists in network {network.name}"
        )
    ensure_on(ctx, instance, network)
    config = scope.network_alias(body.get("EndpointConfig"), container.name)
    ipam = _obj(config.get("IPAMConfig"))
    aliases = [a for a in config.get("Aliases") or [] if isinstance(a, str)]
    names = list(dict.fromkeys(n.lower() for n in [container.name, container.id[:12], *aliases] if n))
    ipam["IPv4Address"] = take_address(network, container.id, instance, names, [], ipam.get("IPv4Address"))
    config["IPAMConfig"] = ipam
    body["EndpointConfig"] = config
    try:
        status, payload = call(ctx, instance, "POST", path, body=body)
        raise_for(status, payload)
    except BaseException:
        with store.write_transaction():
            store.spans.release(container.id, network)
        raise
    push(ctx, network, must=instance)
    ctx.resp.status = 200
