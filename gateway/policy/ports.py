"""Published ports: the instance's ports and addresses a container would take, and the ports
reserved for Moorage's agents, which no container publishes whatever the policy."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from gateway.errors import DockerError
from gateway.policy.bodies import GoObject
from gateway.policy.rules import Request, short

log = logging.getLogger("moorage.policy")

# Below this the instance's own services listen (sshd, ...).
PRIVILEGED_PORTS_BELOW = 1024
# A HostIp that means what no HostIp means: every address of the instance.
WILDCARD_HOST_IPS = frozenset({"", "0.0.0.0", "::"})
# The instance's loopback: reached from the instance itself only. On a shared instance that is
# every other project's containers in host mode and the agent's neighbours; on a dedicated one,
# the project's own (dedicated tenancy accepts it without the host_ip rule).
LOOPBACK_HOST_IPS = frozenset({"127.0.0.1", "::1", "localhost"})
# The agent's port (`moorage agent --listen`'s default): never published, whatever the policy
# (the daemon's port forwarding would take the gateway's traffic to the agent).
AGENT_PORT = 2376


def reserved_ports(operator_ports: Iterable[int | str], agent_ports: Iterable[int] = ()) -> frozenset[int]:
    """Host ports no container publishes, whatever the policy: the agents' (``agent_ports``,
    those of the registered agents, which the caller reads from the store, and the default
    port for agents yet to come) and the operator's ([policy] reserved_ports)."""
    ports = {AGENT_PORT, *agent_ports}
    for port in operator_ports:
        try:
            ports.add(int(port))
        except (TypeError, ValueError):
            log.error("[policy] reserved_ports: %r is not a port number", port)
    return frozenset(ports)


def _go_port(text: str) -> int | None:
    """strconv.ParseUint(text, 10, 16): digits only, at most 65535."""
    if not re.fullmatch(r"[0-9]+", text):
        return None
    value = int(text)
    return value if value <= 65535 else None


def _host_port_range(text: str) -> tuple[int, int] | None:
    """A binding's HostPort as dockerd reads it (go-connections' nat.ParsePortRange): "8080",
    or a range "8000-8010". None for "" (a port the daemon chooses) and for what dockerd
    cannot parse (it refuses the create itself)."""
    if not text:
        return None
    parts = text.split("-")
    start = _go_port(parts[0])
    end = start if len(parts) == 1 else _go_port(parts[1])
    if start is None or end is None or end < start:
        return None
    return start, end


def check_ports(req: Request, bindings) -> None:
    """PortBindings ({"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}): the instance's ports
    and addresses a container would take. A port the daemon chooses (-p 80, -P, HostPort ""
    or "0") on every address is always fine."""
    if not isinstance(bindings, dict):
        return
    for container_port, entries in bindings.items():
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            binding = GoObject(entry, "a port binding")
            host_ip, host_port = binding.get("HostIp"), binding.get("HostPort")
            host_ip = host_ip if isinstance(host_ip, str) else ""
            host_port = host_port if isinstance(host_port, str) else ""
            shown = (
                "-p "
                + (f"{short(host_ip, 40)}:" if host_ip else "")
                + f"{short(host_port, 20)}:{short(str(container_port), 20)}"
            )
            span = _host_port_range(host_port)
            if span is not None:
                start, end = span
                taken = sorted(p for p in req.reserved_ports if start <= p <= end)
                if taken:
                    raise DockerError(
                        403,
                        f"the instance's port {taken[0]} is reserved for Moorage (its agent listens "
                        f"there) and is never published ({shown}): publish another port, or let "
                        "Docker choose one (-p PORT, -P)",
                    )
                if start < PRIVILEGED_PORTS_BELOW and end >= 1:
                    req.require(
                        "container:create:privileged_ports",
                        f"publishing the instance's port {max(start, 1)} ({shown}; ports below "
                        f"{PRIVILEGED_PORTS_BELOW} belong to the instance's own services)",
                        "publish a port of 1024 or above (-p 8080:80), or let Docker choose one (-p 80, -P)",
                    )
            if host_ip not in WILDCARD_HOST_IPS and not (req.dedicated and host_ip in LOOPBACK_HOST_IPS):
                req.require(
                    "container:create:host_ip",
                    f"publishing on the instance's address {short(host_ip, 40)} ({shown})",
                    "publish on every address of the instance (-p 8080:80)",
                )
