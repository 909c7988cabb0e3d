"""The tenant's views of a spanning network (services/spans.py): composed by the gateway, as
dockerd shows a bridge network, with the containers of every instance the network reaches."""

from __future__ import annotations

import datetime as _dt
import ipaddress

from gateway import store
from gateway.context import Context
from gateway.forward import call
from gateway.services.spans import spec_of
from gateway.tenancy import names, scope


def _obj(value) -> dict:
    return value if isinstance(value, dict) else {}


def view(network: store.Network, containers: dict | None = None) -> dict:
    """The network as dockerd shows a bridge network (``containers``: every instance's)."""
    spec = spec_of(network)
    ipam = dict(spec.get("IPAM") or {})
    subnet = ipaddress.IPv4Network(network.subnet)
    ipam["Driver"] = ipam.get("Driver") or "default"
    ipam["Config"] = [{"Subnet": network.subnet, "Gateway": str(subnet.broadcast_address - 1)}]
    created = network.created_at.replace(tzinfo=_dt.UTC).isoformat().replace("+00:00", "Z")
    return {
        "Name": network.name,
        "Id": network.id,
        "Created": created,
        "Scope": "local",
        "Driver": "bridge",
        "EnableIPv6": False,
        "IPAM": ipam,
        "Internal": bool(spec.get("Internal")),
        "Attachable": bool(spec.get("Attachable")),
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": containers or {},
        # What was asked, as dockerd shows it (compat parity); the MTU the gateway chose is
        # the daemons' copies' (com.docker.network.driver.mtu there, and each container's).
        "Options": dict(spec.get("Options") or {}),
        "Labels": dict(spec.get("Labels") or {}),
    }


def members_view(ctx: Context, network: store.Network) -> dict:
    """The containers on the network, from every instance it reaches."""
    found: dict = {}
    for instance, _ in store.spans.members(network):
        if instance.daemon_down:
            continue
        status, payload = call(ctx, instance, "GET", f"/networks/{network.daemon_name}")
        if status == 200 and isinstance(payload, dict) and isinstance(payload.get("Containers"), dict):
            found.update(payload["Containers"])
    return found


def matches(network: store.Network, filters: dict) -> bool:
    """dockerd's network list filters, on a spanning network (daemon/network/filter.go): each
    key given must match; within a key any value may (names and IDs as regular expressions,
    names.matches), but for labels, which must all (MatchKVList: `label=a` and `label=b` is a
    network carrying both)."""

    def values(key: str) -> list[str]:
        value = filters.get(key)
        return [str(v) for v in value] if isinstance(value, (list, dict)) else []

    labels = spec_of(network).get("Labels") or {}

    def has_label(value: str) -> bool:
        key, equals, wanted = value.partition("=")
        return key in labels and (not equals or labels[key] == wanted)

    checks = {
        "name": lambda vs: names.matches(vs, network.name),
        "id": lambda vs: names.matches(vs, network.id),
        "driver": lambda vs: "bridge" in vs,
        "type": lambda vs: "custom" in vs,
        "scope": lambda vs: "local" in vs,
        "label": lambda vs: all(has_label(v) for v in vs),
    }
    return all(check(values(key)) for key, check in checks.items() if values(key))


def show_network_ids(ctx: Context, containers: list[dict]) -> None:
    """A list's containers (keyed by the daemons' network names) with each spanning network's
    one ID, not its daemon copy's: compose compares a container's NetworkID with the ID
    `network inspect` gives, and recreates the container when they differ."""
    # Not the daemon's own networks, nor the project's own bridge (shared tenancy's default
    # bridge, which every container not on another network is on): a list of those asks the
    # store nothing.
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


def as_asked(payload: dict, container: store.Container) -> None:
    """A container's inspect as the tenant made it: the DNS servers and addresses it asked for,
    not the ones the gateway gave it (on its spanning networks, or at its instance's responder:
    spans.join_create), and each network's one ID."""
    held = store.spans.held_by(container.id)
    host = payload.get("HostConfig")
    if isinstance(host, dict) and isinstance(container.dns, dict):
        host["Dns"] = container.dns.get("asked")
    elif isinstance(host, dict) and held:
        dns = held[0][0].dns
        host["Dns"] = list(dns) if isinstance(dns, list) else dns  # the kept row's is shared
    networks = _obj(payload.get("NetworkSettings")).get("Networks")
    for address, network in held:
        endpoint = _obj(networks).get(network.name) if isinstance(networks, dict) else None
        if isinstance(endpoint, dict):
            endpoint["NetworkID"] = network.id  # the network's one ID, not its daemon copy's
        if isinstance(endpoint, dict) and not address.asked and isinstance(endpoint.get("IPAMConfig"), dict):
            endpoint["IPAMConfig"].pop("IPv4Address", None)
            if not endpoint["IPAMConfig"]:
                endpoint["IPAMConfig"] = None
