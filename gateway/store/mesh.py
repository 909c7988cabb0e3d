"""The routing mesh's map: which port of which address forwards to which container's port.

One ``MeshPort`` row per published port of a running container (gateway/mesh.py writes them
when the container starts and drops them when it stops, dies or is removed). ``address`` is
where clients reach the port: the mesh's address ([mesh] address) with the mesh on, else the
instance's own published address. The unique (address, protocol, port) is what makes a port
unique per gateway address across instances, projects and gateway replicas: two starts that
want one port cannot both insert it. ``moorage mesh`` listens on the rows of its address.
"""

from __future__ import annotations

import peewee

from gateway.store.db import serialized
from gateway.store.models import BaseModel, utcnow

# The advisory lock (PostgreSQL) under which ephemeral ports are chosen: two replicas choosing
# at once would pick the same lowest free port, and one would fail its insert.
MESH_LOCK = 0x4D6F6F7200000003


class MeshPort(BaseModel):
    id = peewee.BigAutoField()
    address = peewee.CharField(max_length=255)
    protocol = peewee.CharField(max_length=8)  # "tcp", "udp" (and "sctp", never meshed)
    port = peewee.IntegerField()  # the port at ``address``
    container_id = peewee.CharField(max_length=64)
    project = peewee.CharField(max_length=64)
    instance = peewee.CharField(max_length=64)
    container_port = peewee.CharField(max_length=32)  # "80/tcp", as dockerd keys it
    target_host = peewee.CharField(max_length=255)  # the instance's address
    target_port = peewee.IntegerField()  # the instance's port dockerd published
    explicit = peewee.BooleanField(default=False)  # the tenant asked for this port
    listening = peewee.BooleanField(default=False)  # `moorage mesh` has opened its listener
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        table_name = "mesh_port"
        indexes = (
            (("address", "protocol", "port"), True),
            (("container_id",), False),
            (("instance", "protocol", "target_port"), False),
        )


def create_mesh(db: peewee.Database) -> None:
    """The migration (gateway/store/schema.py MIGRATIONS)."""
    db.create_tables([MeshPort], safe=True)


class PortTaken(Exception):
    """The explicit port is another container's at this address."""

    def __init__(self, port: int, protocol: str):
        super().__init__(f"{port}/{protocol}")
        self.port, self.protocol = port, protocol


def holder(address: str, protocol: str, port: int) -> str | None:
    """The container that holds ``port`` at ``address``, if any."""
    M = MeshPort
    return (
        M.select(M.container_id)
        .where((M.address == address) & (M.protocol == protocol) & (M.port == port))
        .scalar()
    )


def allocate(container_id: str, wanted: list[dict], span: tuple[int, int]) -> list[MeshPort]:
    """Insert one row per entry of ``wanted`` (MeshPort's fields; "port" 0: choose one in
    ``span``, the lowest free at that address and protocol), all or none. PortTaken when an
    explicit port is another container's."""
    rows = []
    with serialized(MESH_LOCK):
        # Already there (the gateway's start and the mesh's adoption of a container may both
        # publish it): each of the container's ports once.
        M = MeshPort
        have = {
            (r.protocol, r.container_port, r.target_port)
            for r in M.select().where(M.container_id == container_id)
        }
        for entry in wanted:
            if (entry["protocol"], entry["container_port"], entry["target_port"]) in have:
                continue
            port = entry["port"]
            if port:
                held = holder(entry["address"], entry["protocol"], port)
                if held is not None and held != container_id:
                    raise PortTaken(port, entry["protocol"])
                if held == container_id:
                    continue
            else:
                port = _lowest_free(entry["address"], entry["protocol"], span)
            rows.append(MeshPort.create(**{**entry, "port": port, "container_id": container_id}))
    return rows


def _lowest_free(address: str, protocol: str, span: tuple[int, int]) -> int:
    M = MeshPort
    query = M.select(M.port).where(
        (M.address == address) & (M.protocol == protocol) & (M.port >= span[0]) & (M.port <= span[1])
    )
    used = {row.port for row in query}
    for port in range(span[0], span[1] + 1):
        if port not in used:
            return port
    raise PortTaken(0, protocol)


def take_over(container_id: str, wanted: list[dict]) -> int:
    """Drop other containers' rows for these exact ports (the mesh off: the instance's daemon
    has just bound them, so whoever held them there has stopped without the gateway seeing)."""
    M = MeshPort
    dropped = 0
    for entry in wanted:
        dropped += (
            M.delete()
            .where(
                (M.address == entry["address"])
                & (M.protocol == entry["protocol"])
                & (M.port == entry["port"])
                & (M.container_id != container_id)
            )
            .execute()
        )
    return dropped


def of_containers(container_ids: list[str]) -> dict[str, list[MeshPort]]:
    """The rows of these containers, by container ID."""
    found: dict[str, list[MeshPort]] = {}
    for start in range(0, len(container_ids), 500):
        chunk = container_ids[start : start + 500]
        for row in MeshPort.select().where(MeshPort.container_id.in_(chunk)).order_by(MeshPort.id):
            found.setdefault(row.container_id, []).append(row)
    return found


def release(container_id: str) -> int:
    """Drop a container's ports (it stopped, died or was removed)."""
    return MeshPort.delete().where(MeshPort.container_id == container_id).execute()


def mark_listening(ids: list[int]) -> int:
    """`moorage mesh` listens for these rows now (a start waits for it: gateway/mesh.py)."""
    return MeshPort.update(listening=True).where(MeshPort.id.in_(ids)).execute() if ids else 0


def waiting(container_id: str, address: str) -> int:
    """How many of the container's ports at ``address`` have no listener yet."""
    M = MeshPort
    return (
        M.select()
        .where((M.container_id == container_id) & (M.address == address) & (M.listening == False))  # noqa: E712
        .count()
    )


def release_rows(ids: list[int]) -> int:
    """Drop these rows (by ID: rows written since they were read stay)."""
    return MeshPort.delete().where(MeshPort.id.in_(ids)).execute() if ids else 0


def at(address: str) -> list[MeshPort]:
    """Every row of one address: what its mesh listens on."""
    return list(MeshPort.select().where(MeshPort.address == address).order_by(MeshPort.id))


def taken_on(protocol: str, port: int) -> set[str]:
    """The instances whose own ``port`` a running container publishes (placement's port filter)."""
    M = MeshPort
    query = M.select(M.instance).where((M.protocol == protocol) & (M.target_port == port)).distinct()
    return {row.instance for row in query}
