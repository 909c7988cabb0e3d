"""Named queries of spanning networks (gateway/services/spans.py): their subnets and VNIs, the
instances they reach (members) and the gateway's one address table per network."""

from __future__ import annotations

import ipaddress
import secrets
from typing import cast

import peewee

from gateway.store.db import is_postgres
from gateway.store.kept import KeptReads
from gateway.store.models import INSTANCE_UP, Container, Instance, Network, NetworkAddress, NetworkMember
from gateway.store.prepared import Prepared

# VNIs start here, so that a segment's ID never looks like a small, hand-made one.
FIRST_VNI = 4096
# The advisory lock (PostgreSQL) under which subnets, VNIs, slots and addresses are chosen:
# two replicas choosing at once would read the same free ones, and one insert would fail (a
# VNI, a slot, an address) or, worse, both succeed (two projects' subnets in shared tenancy,
# which no constraint forbids).
SPANS_LOCK = 0x4D6F6F7200000004


def record(
    network_id: str,
    project: str,
    name: str,
    daemon_name: str,
    *,
    subnet: str | None,
    pool: str,
    prefix: int,
    mtu: int,
    spec: dict,
    per_project: bool,
) -> Network:
    """Inside a write transaction: a new spanning network with a free subnet (``subnet`` when
    the tenant gave one) and the next VNI. Subnets are unique where two networks can meet a
    daemon: within the project (``per_project``, dedicated tenancy) or across every project.
    ValueError when the pool is full or the tenant's subnet is taken."""
    locked()
    rows = Network.select(Network.subnet).where(Network.subnet.is_null(False))
    if per_project:
        rows = rows.where(Network.project == project)
    taken = [ipaddress.ip_network(str(r.subnet)) for r in rows]
    if subnet is not None:
        wanted = ipaddress.ip_network(subnet, strict=False)
        if any(wanted.overlaps(t) for t in taken):
            raise ValueError(f"Pool overlaps with other one on this address space ({wanted})")
        chosen = wanted
    else:
        chosen = next(
            (
                n
                for n in ipaddress.ip_network(pool).subnets(new_prefix=prefix)
                if not any(n.overlaps(t) for t in taken)
            ),
            None,
        )
        if chosen is None:
            raise ValueError(f"every subnet of the network pool {pool} is in use")
    top = Network.select(peewee.fn.MAX(Network.vni)).scalar()
    return Network.create(
        id=network_id,
        project=project,
        name=name,
        daemon_name=daemon_name,
        instance=None,
        subnet=str(chosen),
        vni=max(int(top or 0) + 1, FIRST_VNI),
        mtu=mtu,
        spec=spec,
    )


def networks_of(project: str | None) -> list[Network]:
    """The spanning networks of ``project`` (None: every project's), oldest first."""
    if project is not None:
        return _project_networks(project)  # every ps of a container on a network asks
    query = Network.select().where(Network.subnet.is_null(False))
    return list(query.order_by(Network.created_at, Network.id))


_project_networks = Prepared(
    lambda project: (
        Network.select()
        .where(Network.subnet.is_null(False) & (Network.project == project))
        .order_by(Network.created_at, Network.id)
    )
)


def locked() -> None:
    """Inside a write transaction: wait for, and hold until it ends, the lock under which
    every replica chooses slots and addresses (a no-op on SQLite, whose write transaction
    is the database's one write lock already)."""
    if is_postgres():
        Network._meta.database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (SPANS_LOCK,))


def member_slot(network: Network, instance_uuid: str) -> NetworkMember:
    """Inside a write transaction: the network's member row on the instance, made on first
    use with the lowest free slot."""
    locked()
    found = NetworkMember.get_or_none(
        (NetworkMember.network == network.id) & (NetworkMember.instance == instance_uuid)
    )
    if found is not None:
        return found
    used = {
        m.slot for m in NetworkMember.select(NetworkMember.slot).where(NetworkMember.network == network.id)
    }
    slot = next(i for i in range(len(used) + 1) if i not in used)
    return NetworkMember.create(
        network=network.id, instance=instance_uuid, slot=slot, joined=secrets.token_hex(8)
    )


def holders_on(network: Network, instance_uuid: str) -> int:
    """How many addresses of the network are held on the instance (containers and creates)."""
    return (
        NetworkAddress.select()
        .where((NetworkAddress.network == network.id) & (NetworkAddress.instance == instance_uuid))
        .count()
    )


# A member row whose ``joined`` starts so is leaving its instance (span_members.leave): its
# daemon copy is being removed. A create or connect that takes an address there meanwhile
# waits for the leave to end before it touches the daemon (spans.ensure_on), so that no
# container is ever created against the copy being removed: dockerd lets a network with
# created-but-not-started containers go, and such a container then never starts ("network
# not found": it names the copy by ID, and the copy made again has another).
LEAVING = "leaving:"


def is_leaving(member: NetworkMember) -> bool:
    return str(member.joined or "").startswith(LEAVING)


def leaving_since(member: NetworkMember) -> float:
    try:
        return float(str(member.joined)[len(LEAVING) :])
    except ValueError:
        return 0.0


def start_leaving(network: Network, instance_uuid: str, now: float) -> str | None:
    """Inside a write transaction: the member row is marked leaving if no address of the
    network is held on the instance; its ``joined`` before, or None (held, or no member)."""
    locked()
    if holders_on(network, instance_uuid):
        return None
    member = NetworkMember.get_or_none(
        (NetworkMember.network == network.id) & (NetworkMember.instance == instance_uuid)
    )
    if member is None or is_leaving(member):
        return None  # gone already, or another remover is at it
    before = str(member.joined or "")
    member.joined = f"{LEAVING}{now:.3f}"
    member.save()
    return before


def end_leaving(network: Network, instance_uuid: str, kept: str | None) -> bool:
    """Inside a write transaction: the leave is over. ``kept``: the daemon's copy stayed (its
    removal failed), and the member row gets back that ``joined``. Otherwise the row is
    dropped if no address there is held (whether it was), else it gets a new joining (a
    create took an address meanwhile: the copy is made again by whoever needs it)."""
    locked()
    where = (NetworkMember.network == network.id) & (NetworkMember.instance == instance_uuid)
    if kept is None and not holders_on(network, instance_uuid):
        forget_member(network, instance_uuid)
        return True
    NetworkMember.update(joined=kept or secrets.token_hex(8)).where(where).execute()
    return False


def mtu_floor(project: str | None) -> int | None:
    """The smallest underlay MTU the agents of the instances that may carry ``project``'s
    containers reported (None: every one, shared tenancy): its own and the free ones in
    dedicated tenancy. None when no live instance reported one."""
    query = Instance.select(peewee.fn.MIN(Instance.underlay_mtu)).where(
        (Instance.state == INSTANCE_UP) & ~Instance.daemon_down & Instance.underlay_mtu.is_null(False)
    )
    if project is not None:
        query = query.where((Instance.project == project) | Instance.project.is_null())
    found = query.scalar()
    return int(found) if found else None


def members(network: Network) -> list[tuple[Instance, int]]:
    """(instance, slot) of every instance the network reaches."""
    rows = (
        NetworkMember.select(NetworkMember, Instance)
        .join(Instance)
        .where(NetworkMember.network == network.id)
        .order_by(NetworkMember.slot)
    )
    return [(m.instance, m.slot) for m in rows]


def networks_on(instance_uuid: str) -> list[tuple[Network, int]]:
    """(network, slot) of every spanning network that reaches the instance."""
    rows = (
        NetworkMember.select(NetworkMember, Network)
        .join(Network)
        .where(NetworkMember.instance == instance_uuid)
    )
    return [(m.network, m.slot) for m in rows]


def forget_member(network: Network, instance_uuid: str) -> None:
    NetworkMember.delete().where(
        (NetworkMember.network == network.id) & (NetworkMember.instance == instance_uuid)
    ).execute()


def addresses(network: Network) -> list[NetworkAddress]:
    return list(
        NetworkAddress.select().where(NetworkAddress.network == network.id).order_by(NetworkAddress.address)
    )


def address_of(network: Network, container: str) -> NetworkAddress | None:
    return NetworkAddress.get_or_none(
        (NetworkAddress.network == network.id) & (NetworkAddress.container == container)
    )


def take_address(
    network: Network,
    candidates,
    container: str,
    instance_uuid: str,
    names: list[str],
    dns,
    asked: bool = False,
) -> str | None:
    """Inside a write transaction: the first of ``candidates`` (addresses as strings) that no
    container holds, now held by ``container``; None when every one is taken."""
    locked()
    held = {
        a.address
        for a in NetworkAddress.select(NetworkAddress.address).where(NetworkAddress.network == network.id)
    }
    for address in candidates:
        if address not in held:
            NetworkAddress.create(
                network=network.id,
                address=address,
                container=container,
                instance=instance_uuid,
                names=names,
                dns=dns,
                asked=asked,
            )
            return address
    return None


def rename_holder(token: str, container_id: str, names: list[str]) -> None:
    """A create's addresses, held under its token until the daemon named the container, now
    the container's, with its name and short ID among its names."""
    for row in NetworkAddress.select().where(NetworkAddress.container == token):
        row.container = container_id
        held = cast(list, row.names or [])
        row.names = cast(str, list(dict.fromkeys([*held, *(n for n in names if n)])))  # a JSONField
        row.save()


_kept_holdings: KeptReads[list[tuple[NetworkAddress, Network]]] = KeptReads()


def held_by(container: str) -> list[tuple[NetworkAddress, Network]]:
    """(address, network) of every spanning network on which ``container`` holds an address.
    Every inspect asks: kept a moment while the store is unchanged (gateway/store/kept.py),
    so not to be changed in place."""
    return _kept_holdings.get(container, lambda: [(row, row.network) for row in _held_by(container)])


_held_by = Prepared(
    lambda container: (
        NetworkAddress.select(NetworkAddress, Network)
        .join(Network)
        .where(NetworkAddress.container == container)
    )
)


def networks_of_holder(container: str) -> list[Network]:
    """The spanning networks on which ``container`` holds an address."""
    held = NetworkAddress.select(NetworkAddress.network).where(NetworkAddress.container == container)
    return list(Network.select().where(Network.id.in_(held)))


def release(container: str, network: Network | None = None) -> None:
    """The addresses ``container`` (an ID or a create's token) holds, on ``network`` or every one."""
    query = NetworkAddress.delete().where(NetworkAddress.container == container)
    if network is not None:
        query = query.where(NetworkAddress.network == network.id)
    query.execute()


def release_gone() -> int:
    """Addresses of containers the map no longer has (removed, or a create that failed long
    ago): the address table follows the container map."""
    live = Container.select(Container.id)
    return (
        NetworkAddress.delete()
        .where(~NetworkAddress.container.startswith("create-") & NetworkAddress.container.not_in(live))
        .execute()
    )


def forget(network: Network) -> None:
    """The network, its members and its addresses."""
    NetworkAddress.delete().where(NetworkAddress.network == network.id).execute()
    NetworkMember.delete().where(NetworkMember.network == network.id).execute()
    Network.delete().where(Network.id == network.id).execute()
