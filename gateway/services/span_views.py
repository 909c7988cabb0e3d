"""The tenant's views of a spanning network (services/spans.py): composed by the gateway, as
dockerd shows a bridge network, with the containers of every instance the network reaches."""

from __future__ import annotations

import datetime as _dt
import ipaddress

from gateway import store
from gateway.context import Context
from gateway.forward import call
from gateway.services.spans import spec_of


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
        "Options": dict(spec.get("Options") or {}),
        "Labels": dict(spec.get("Labels") or {}),
    }


def members_view(ctx: Context, network: store.Network) -> dict:
    """The containers on the network, from every instance it reaches."""
    found: dict = {}
    for instance, _ in store.spans.members(network):
        if instance.state == store.INSTANCE_DOWN:
            continue
        status, payload = call(ctx, instance, "GET", f"/networks/{network.daemon_name}")
        if status == 200 and isinstance(payload, dict) and isinstance(payload.get("Containers"), dict):
            found.update(payload["Containers"])
    return found


def matches(network: store.Network, filters: dict) -> bool:
    """dockerd's network list filters, on a spanning network."""

    def values(key: str) -> list[str]:
        value = filters.get(key)
        return list(value) if isinstance(value, (list, dict)) else []

    labels = spec_of(network).get("Labels") or {}
    checks = {
        "name": lambda v: v in network.name,
        "id": network.id.startswith,
        "driver": lambda v: v == "bridge",
        "type": lambda v: v == "custom",
        "scope": lambda v: v == "local",
        "label": lambda v: (
            (labels.get(v.partition("=")[0]) == v.partition("=")[2]) if "=" in v else v in labels
        ),
    }
    return all(any(check(v) for v in values(key)) for key, check in checks.items() if values(key))
