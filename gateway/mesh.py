"""The routing mesh: a container's published ports at the gateway's address.

With ``[mesh] enabled`` a port a container publishes is reached at ``[mesh] address`` (the host
of the clients' DOCKER_HOST) on a port Moorage chooses (-P, -p PORT) or the tenant named
(-p 8080:80), unique at that address across instances and projects (gateway/store/mesh.py).
``moorage mesh`` (relay/mesh.py) listens there and forwards to the instance's port. The rows
are written when the container starts and dropped when it stops, dies or is removed, and
``docker port``, inspect and ps show them instead of the instance's address and port.

With the mesh off the rows are still written, at the instance's own published address: they
are what placement's port filter reads (an explicit port is not placed where it is taken).
"""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import urlencode

from gateway import instances, store
from gateway.agentclient import AgentClient, UpstreamError
from gateway.errors import DockerError
from gateway.store import mesh as table
from gateway.wire import PROJECT_LABEL

log = logging.getLogger("moorage.mesh")

MESHED = ("tcp", "udp")  # what the mesh forwards; sctp stays at the instance's address
WILDCARDS = ("", "0.0.0.0")  # an IPv4 binding on every address: the one the mesh forwards to


def on(settings) -> bool:
    return bool(settings.mesh.enabled and settings.mesh.address)


def address_for(settings, instance: store.Instance) -> str:
    return settings.mesh.address if on(settings) else instances.published_address(instance)


def _explicit(host_config, *, every_address: bool = False) -> dict[str, set[int]]:
    """The host ports the tenant named, by container port ("80/tcp": {8080}); with
    ``every_address``, only those on every address (what the mesh forwards)."""
    explicit: dict[str, set[int]] = {}
    bindings = (host_config or {}).get("PortBindings") if isinstance(host_config, dict) else None
    for key, entries in (bindings or {}).items() if isinstance(bindings, dict) else ():
        for entry in entries or []:
            text = str((entry or {}).get("HostPort") or "") if isinstance(entry, dict) else ""
            if every_address and isinstance(entry, dict) and (entry.get("HostIp") or "") not in WILDCARDS:
                continue
            if text.isdigit() and int(text) > 0:
                explicit.setdefault(_key(key), set()).add(int(text))
    return explicit


def _key(container_port: str) -> str:
    return container_port if "/" in container_port else f"{container_port}/tcp"


def explicit_ports(host_config) -> list[tuple[str, int]]:
    """(protocol, host port) for every port the tenant named: placement's port filter."""
    return sorted({(k.split("/")[1], p) for k, ports in _explicit(host_config).items() for p in ports})


def check_start(settings, container_id: str, info: dict) -> None:
    """Before a start: an explicit port another container holds at the address answers as
    dockerd's own bind failure does."""
    if not on(settings):
        return  # the instance's dockerd judges its own ports
    for key, ports in _explicit(info.get("HostConfig"), every_address=True).items():
        protocol = key.split("/")[1]
        for port in ports:
            held = table.holder(settings.mesh.address, protocol, port)
            if held is not None and held != container_id:
                raise _already_allocated(info, port)


def _already_allocated(info: dict, port: int) -> DockerError:
    """dockerd's words (libnetwork's portmapper) for a host port in use."""
    name = str(info.get("Name") or "").lstrip("/")
    return DockerError(
        500,
        f"driver failed programming external connectivity on endpoint {name} "
        f"({info.get('Id', '')}): Bind for 0.0.0.0:{port} failed: port is already allocated",
    )


def publish(settings, instance: store.Instance, project: str, info: dict) -> None:
    """After a start: a row per port the container publishes (``info``: the daemon's inspect of
    the started container). DockerError 500 if an explicit port was taken meanwhile."""
    container_id = info.get("Id", "")
    ports = (info.get("NetworkSettings") or {}).get("Ports") or {}
    explicit = _explicit(info.get("HostConfig"))
    address = address_for(settings, instance)
    target_host = instances.published_address(instance)
    wanted = []
    for key, bindings in ports.items() if isinstance(ports, dict) else ():
        protocol = _key(key).split("/")[1]
        for binding in bindings or []:
            if not isinstance(binding, dict) or binding.get("HostIp") not in WILDCARDS:
                continue
            if not str(binding.get("HostPort") or "").isdigit():
                continue
            target = int(binding["HostPort"])
            named = target in explicit.get(_key(key), set())
            # Moorage's port at the mesh's address, unless named or not meshed (then the
            # instance's own, at its address).
            port = 0 if protocol in MESHED and on(settings) and not named else target
            wanted.append(
                {
                    "address": address if protocol in MESHED or not on(settings) else target_host,
                    "protocol": protocol,
                    "port": port,
                    "project": project,
                    "instance": instance.uuid,
                    "container_port": _key(key),
                    "target_host": target_host,
                    "target_port": target,
                    "explicit": named,
                }
            )
    if not wanted:
        return
    span = (settings.mesh.port_min, settings.mesh.port_max)
    if not on(settings):
        table.take_over(container_id, wanted)
    try:
        table.allocate(container_id, wanted, span)
    except table.PortTaken as exc:
        if not exc.port:
            raise DockerError(
                500,
                f"no free {exc.protocol} port is left at {address} "
                f"({span[0]}-{span[1]}): stop containers that publish ports, or ask the operator",
            ) from None
        raise _already_allocated(info, exc.port) from None


def wait_listening(settings, container_id: str) -> bool:
    """Until `moorage mesh` listens on the container's ports (as dockerd's are bound when its
    start answers), at most ``[mesh] start_wait`` seconds; False if it did not."""
    if not on(settings):
        return True
    deadline = time.monotonic() + settings.mesh.start_wait
    while table.waiting(container_id, settings.mesh.address):
        if time.monotonic() >= deadline:
            log.warning(
                "mesh: no listener for %s's ports after %ss", container_id[:12], settings.mesh.start_wait
            )
            return False
        time.sleep(0.05)
    return True


def listening(rows: list[table.MeshPort], open_keys) -> None:
    """Mark the rows whose listener is open (``open_keys``: (protocol, port))."""
    table.mark_listening([r.id for r in rows if not r.listening and (r.protocol, r.port) in open_keys])


def release(container_id: str) -> None:
    table.release(container_id)


def rows_of(container_ids: list[str]) -> dict[str, list[table.MeshPort]]:
    return table.of_containers(container_ids)


def inspect_ports(settings, ports, rows: list[table.MeshPort]):
    """inspect's NetworkSettings.Ports with the mesh's address and port for each meshed port
    (one binding: the mesh listens on one address); the rest as the instance publishes them."""
    if not on(settings) or not isinstance(ports, dict):
        return None
    meshed: dict[str, list[dict]] = {}
    for row in rows:
        if row.address == settings.mesh.address:
            meshed.setdefault(row.container_port, []).append(
                {"HostIp": row.address, "HostPort": str(row.port)}
            )
    if not meshed:
        return None
    return {key: meshed.get(_key(key), bindings) for key, bindings in ports.items()}


def ps_ports(settings, ports, rows: list[table.MeshPort]):
    """ps's ``Ports`` ([{IP, PrivatePort, PublicPort, Type}]) likewise; None: not meshed."""
    if not on(settings) or not isinstance(ports, list):
        return None
    meshed = {(r.container_port): r for r in rows if r.address == settings.mesh.address}
    if not meshed:
        return None
    shown, seen = [], set()
    for entry in ports:
        if not isinstance(entry, dict):
            continue
        row = meshed.get(f"{entry.get('PrivatePort')}/{entry.get('Type', 'tcp')}")
        if row is None or "PublicPort" not in entry:
            shown.append(entry)
            continue
        if row.container_port in seen:
            continue  # dockerd's IPv6 twin of the same binding
        seen.add(row.container_port)
        shown.append({**entry, "IP": row.address, "PublicPort": row.port})
    return shown


def wanted(settings) -> tuple[list[table.MeshPort], dict[tuple[str, int], tuple[str, int]]]:
    """The rows of the mesh's address, and what ``moorage mesh`` listens on for them."""
    rows = table.at(settings.mesh.address)
    return rows, {(r.protocol, r.port): (r.target_host, r.target_port) for r in rows if r.protocol in MESHED}


def drop_stopped(rows: list[table.MeshPort]) -> int:
    """Drop the rows of containers that stopped or died without the gateway seeing it (their
    process exited, the daemon restarted), or whose instance ports changed (their daemon
    restarted them): each instance says which of them still run, on which ports. The
    rows were read before the instances were asked, so a container started meanwhile keeps its
    new rows. An instance that does not answer keeps its rows."""
    by_instance: dict[str, list[table.MeshPort]] = {}
    for row in rows:
        by_instance.setdefault(row.instance, []).append(row)
    stale: list[int] = []
    for uuid, held in by_instance.items():
        instance = store.Instance.get_or_none(store.Instance.uuid == uuid)
        if instance is None:
            stale += [r.id for r in held]
            continue
        ids = sorted({r.container_id for r in held})
        running = _running(instance, {"id": ids, "status": ["running", "paused", "restarting"]})
        if running is None:
            continue
        # Each running container's instance ports now: a container its daemon restarted between
        # two passes may have others, and its old rows lead nowhere (adopt_running adds anew).
        alive = {
            c.get("Id"): {
                (p.get("PublicPort"), p.get("Type")) for p in c.get("Ports") or [] if isinstance(p, dict)
            }
            for c in running
            if isinstance(c, dict)
        }
        stale += [r.id for r in held if (r.target_port, r.protocol) not in alive.get(r.container_id, ())]
    return table.release_rows(stale)


def _running(instance: store.Instance, filters: dict) -> list[dict] | None:
    """The instance's running containers that pass ``filters``; None if it does not answer."""
    query = urlencode({"filters": json.dumps(filters)})
    try:
        status, running = AgentClient(instance).get_json(f"/containers/json?{query}", timeout=10)
    except UpstreamError:
        return None
    return running if status == 200 and isinstance(running, list) else None


def adopt_running(settings) -> int:
    """Rows for the projects' running containers that publish ports and have none: restarted
    by their daemon (a restart policy) after the mesh dropped their rows, or started before the
    mesh was turned on. Each is inspected first (it may have stopped meanwhile)."""
    adopted = 0
    for instance in instances.live_instances(settings, fresh=True):
        running = _running(instance, {"label": [PROJECT_LABEL], "status": ["running"]}) or []
        published = [
            c
            for c in running
            if isinstance(c, dict)
            and any(
                isinstance(p, dict) and p.get("PublicPort") and p.get("IP") in WILDCARDS
                for p in c.get("Ports") or []
            )
        ]
        held = table.of_containers([c.get("Id", "") for c in published]) if published else {}
        for container in published:
            if container.get("Id") in held:
                continue
            try:
                status, info = AgentClient(instance).get_json(f"/containers/{container['Id']}/json")
            except UpstreamError:
                break
            if status != 200 or not isinstance(info, dict) or not (info.get("State") or {}).get("Running"):
                continue
            project = (container.get("Labels") or {}).get(PROJECT_LABEL, "")
            try:
                publish(settings, instance, project, info)
                adopted += 1
            except DockerError as exc:
                log.warning("mesh: container %s on %s: %s", container["Id"][:12], instance.uuid, exc.message)
    return adopted
