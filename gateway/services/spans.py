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

import contextlib
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
from gateway.tenancy import PROJECT_LABEL
from gateway.wire import AGENT_SEGMENTS_PATH, SPAN_LABEL

log = logging.getLogger("moorage.networks")

BRIDGE_OPTION = "com.docker.network.bridge.name"
MTU_OPTION = "com.docker.network.driver.mtu"
# VXLAN's headers over IPv4: a spanning network's MTU is its instances' underlay MTU minus this.
VXLAN_OVERHEAD = 50
# The daemon's copy of a network per (network, instance, claim of the instance, joining),
# per worker: a network that left the instance (span_members.leave) and came back has a new
# joining (store.NetworkMember.joined), so no worker trusts a copy another one removed.
_made: set[tuple[str, str, str, str]] = set()
# What a create's HostConfig.Dns was, per create token, until bind records it on the container.
_asked_dns: dict[str, object] = {}


def obj(value) -> dict:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def spec_of(network: store.Network) -> dict:
    """What the tenant asked for at create (the row's JSON)."""
    return obj(cast(object, network.spec))


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
    """The instance's address between instances: the one its agent reported at registration,
    else its agent's own address."""
    if instance.underlay_address:
        return str(instance.underlay_address)
    address = AgentClient(instance).endpoint.address
    return address[0] if isinstance(address, tuple) else ""


def choose_mtu(floor: int | None, fallback: int, asked) -> int:
    """A new network's MTU: the smallest underlay MTU of the instances that may carry it minus
    VXLAN's headers (``fallback``, ``[networks] mtu``, when no agent reported one), never above
    what the tenant asked for (``-o com.docker.network.driver.mtu``)."""
    mtu = floor - VXLAN_OVERHEAD if floor else fallback
    if str(asked or "").isdigit() and int(asked) > 0:
        mtu = min(mtu, int(asked))
    return max(576, mtu)


def record_underlay(uuid: str, data: dict) -> None:
    """A registration's ``underlay`` (agent/registration.py): the instance's address between
    instances and that interface's MTU. Anything odd is left out, not refused."""
    reported = data.get("underlay")
    if not uuid or not isinstance(reported, dict):
        return
    fields: dict = {}
    with contextlib.suppress(ValueError):
        fields[store.Instance.underlay_address] = str(ipaddress.IPv4Address(str(reported.get("address"))))
    mtu = reported.get("mtu")
    if isinstance(mtu, int) and 576 <= mtu <= 65535:
        fields[store.Instance.underlay_mtu] = mtu
    if fields:
        with store.write_transaction():
            store.Instance.update(fields).where(store.Instance.uuid == uuid).execute()


def responder_address(instance: store.Instance) -> str:
    """Where the agent of ``instance`` answers names for containers of no spanning network at
    their create (agent/segments.py serve_names_at): its underlay address."""
    return underlay(instance)


# -- create ------------------------------------------------------------------------------------
def create(ctx: Context, body: dict, name: str) -> dict:
    """Record a spanning network (no daemon is asked): the create's answer."""
    settings = ctx.settings.networks
    ipam = obj(body.get("IPAM"))
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
    options = obj(body.get("Options"))
    floor = store.spans.mtu_floor(ctx.project if dedicated(ctx.settings) else None)
    mtu = choose_mtu(floor, settings.mtu, options.get(MTU_OPTION))
    labels = {k: v for k, v in obj(body.get("Labels")).items() if k != PROJECT_LABEL}
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
    journal_event(ctx, network, "create")
    return {"Id": network_id, "Warning": ""}


def journal_event(ctx: Context, network: store.Network, action: str) -> None:
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
    member = _member_once_left(network, instance)
    gateway = gateway_address(network, member.slot)
    key = (network.id, instance.uuid, str(instance.claimed_at or ""), str(member.joined or ""))
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


# How long a create waits for a leave of the network from its instance to end (one agent
# call: milliseconds) before it takes the member row over from a remover that died meanwhile.
LEAVE_WAIT = 10.0


def _member_once_left(network: store.Network, instance: store.Instance) -> store.NetworkMember:
    """The network's member row on ``instance``, made if missing; a leave in flight there
    (span_members.leave removing the daemon's copy) is waited out first."""
    while True:
        with store.write_transaction():
            member = store.spans.member_slot(network, instance.uuid)
            if not store.spans.is_leaving(member):
                return member
            if time.time() - store.spans.leaving_since(member) > LEAVE_WAIT:
                member.joined = secrets.token_hex(8)  # its remover died: the copy is ours to make
                member.save()
                return member
        time.sleep(0.02)


def forget_made(network: store.Network, instance: store.Instance) -> None:
    """This worker no longer takes the network's copy on ``instance`` for made."""
    for key in [k for k in _made if k[0] == network.id and k[1] == instance.uuid]:
        _made.discard(key)


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


def join_create(
    ctx: Context, instance: store.Instance, body: dict, joined: dict, name: str, *, default_bridge=False
) -> str:
    """A container create on ``instance`` that joins the spanning networks ``joined`` (daemon
    name -> network): addresses taken under a token (``bind`` then names the container),
    copies made, DNS pointed at the agent. A create on the project's default bridge alone, in
    a project that has spanning networks and without a --dns of its own, gets its DNS at the
    instance's responder, so that the names of a network it is connected to later resolve.
    Returns the token ('' if none of this applies)."""
    if not joined:
        return _default_bridge_dns(ctx, instance, body) if default_bridge else ""
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
            endpoint = endpoints.get(daemon_name)
            if not isinstance(endpoint, dict):
                endpoint = endpoints[daemon_name] = {}
            ipam = obj(endpoint.get("IPAMConfig"))
            aliases = [a for a in endpoint.get("Aliases") or [] if isinstance(a, str)]
            names = list(dict.fromkeys(n.lower() for n in [name, hostname, *aliases] if n))
            # The address first: a held address keeps the network on the instance while its
            # copy is made (span_members.leave removes a copy only where none is held).
            ipam["IPv4Address"] = take_address(
                network, token, instance, names, user_dns, ipam.get("IPv4Address")
            )
            endpoint["IPAMConfig"] = ipam
            gateway = ensure_on(ctx, instance, network)
            first = first or gateway
    except BaseException:
        release(token)
        raise
    host["Dns"] = [first]
    return token


def _default_bridge_dns(ctx: Context, instance: store.Instance, body: dict) -> str:
    host = body.get("HostConfig")
    asked = host.get("Dns") if isinstance(host, dict) else None
    if asked or not store.spans.networks_of(ctx.project) or not responder_address(instance):
        return ""
    if not isinstance(host, dict):
        # A create without one: dockerd then fills in fewer defaults (Runtime, IpcMode) than
        # for an empty one, and inspect shows what it would have without the DNS.
        return ""
    token = "dns-" + secrets.token_hex(12)
    _asked_dns[token] = asked
    host["Dns"] = [responder_address(instance)]
    return token


def bind(ctx: Context, token: str, container_id: str, name: str) -> None:
    """The create's container exists: its addresses are its own, its names known everywhere."""
    if token in _asked_dns:
        asked = _asked_dns.pop(token)
        with store.write_transaction():
            store.Container.update(dns={"asked": asked}).where(store.Container.id == container_id).execute()
    if not token.startswith("create-"):
        return
    with store.write_transaction():
        store.spans.rename_holder(token, container_id, [name.lower(), container_id[:12]])
    for network in store.spans.networks_of_holder(container_id):
        push(ctx, network)


def release(token: str) -> None:
    _asked_dns.pop(token, None)
    if token:
        with store.write_transaction():
            store.spans.release(token)
