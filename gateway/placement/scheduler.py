"""The scheduler: filters and strategies as small functions, one transaction to decide."""

from __future__ import annotations

import contextlib
import datetime as _dt
import uuid as _uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import overload

from gateway import quotas, store
from gateway.errors import DockerError
from gateway.instances import is_live
from gateway.store import RESERVATION_PREFIX, mesh
from gateway.tenancy.trusts import Delegation
from gateway.wire import PIN_LABEL  # `docker run --label org.openstack.nova.instance=<uuid>`


@dataclass
class PlacementRequest:
    project: str
    name: str
    labels: dict
    pinned: str | None = None  # instance UUID
    memory: int = 0  # bytes (HostConfig.Memory), counted against the project's memory quota
    nano_cpus: int = 0  # HostConfig.NanoCpus (or CpuQuota/CpuPeriod), against its cpus quota
    # Only where a container would go (a new network or volume's instance): no container
    # quota is checked and no slot is reserved.
    probe: bool = False
    # The caller's Keystone credentials: used only if this request must boot an instance in its
    # project and the provider holds no trust for it yet (nova, dedicated tenancy).
    delegation: Delegation | None = field(default=None, repr=False)
    # (protocol, port) the container publishes on a port it names (-p 8080:80): not placed
    # where a running container publishes that port already (Swarm classic's port filter).
    ports: tuple[tuple[str, int], ...] = ()


@dataclass
class Placement:
    instance: store.Instance
    reservation_id: str
    memory: int = 0
    nano_cpus: int = 0


def _capacity(instance: store.Instance, default_capacity: int) -> int:
    return instance.capacity or default_capacity


def has_room(instance: store.Instance, default_capacity: int) -> bool:
    capacity = _capacity(instance, default_capacity)
    return capacity <= 0 or instance.container_count < capacity


# Filters and strategies are SQL, so that one decision reads a few index entries whatever the
# number of instances and containers (store._m_placement_usage: the per-instance count kept by
# the database, and partial indexes over the instances that are up and have room). Written out
# rather than built with peewee: this query runs in every decision, and building it costs more
# than running it.
ROOM = "(capacity <= 0 OR container_count < capacity)"  # word for word the indexes' condition


def live(settings, param: str) -> tuple[str, list]:
    """Up and heard from recently (gateway.instances.is_live)."""
    horizon = store.utcnow() - _dt.timedelta(seconds=settings.gateway.heartbeat_timeout)
    return f"state = {param} AND NOT daemon_down AND last_heartbeat >= {param}", [store.INSTANCE_UP, horizon]


def _unavailable(instance: store.Instance) -> str:
    """Why a pinned instance takes no container, for the refusal."""
    if instance.state == store.INSTANCE_DRAINING:
        return "is draining"
    if instance.daemon_down:
        return "has its daemon down"
    return "is not answering"


def room(default_capacity: int, param: str) -> tuple[str, list]:
    """Fewer containers than its capacity: its own, else the default; 0 = no limit."""
    if default_capacity <= 0:
        return ROOM, []
    return f"{ROOM} AND (capacity > 0 OR container_count < {param})", [default_capacity]


# A strategy is the order in which the candidates are taken; the first one is chosen.
STRATEGIES: dict[str, str] = {
    # fill: the first instance in fill order: fill each before the next is used.
    "fill": "position, uuid",
    # spread: the least used instance; ties go to fill order.
    "spread": "container_count, position, uuid",
}


def dedicated(settings) -> bool:
    """Whether an instance holds one project's objects only ([placement] tenancy)."""
    return settings.placement.tenancy != "shared"


def choose(
    order: str,
    settings,
    default_capacity: int,
    *,
    with_room: bool = True,
    owner: str | None = None,
    free: bool = False,
    exclude: frozenset[str] = frozenset(),
) -> store.Instance | None:
    """The first live instance with room (or any live one) in ``order``, or None. ``owner``:
    only that project's instances; ``free``: only instances no project owns and nothing runs
    on (dedicated tenancy: what a project may claim)."""
    param = store.database.obj.param
    where, params = live(settings, param)
    if with_room:
        room_sql, room_params = room(default_capacity, param)
        where, params = f"{where} AND {room_sql}", params + room_params
    if owner is not None:
        where, params = f"{where} AND project = {param}", [*params, owner]
    elif free:
        where = f"{where} AND project IS NULL AND container_count = 0"
    if exclude:
        where = f"{where} AND uuid NOT IN ({', '.join([param] * len(exclude))})"
        params = [*params, *sorted(exclude)]
    sql = f'SELECT * FROM "instance" WHERE {where} ORDER BY {order} LIMIT 1'
    return next(iter(store.Instance.raw(sql, *params)), None)


# -- locks ----------------------------------------------------------------------------------------
# What a decision reads and writes, and who else may touch it meanwhile:
# - shared tenancy: any instance takes any project's container, so every decision of every
#   project competes for the same slots: one lock for all (store.PLACEMENT_LOCK);
# - dedicated tenancy: a decision reads and writes its own project's names, quotas and
#   instances' slots, which no other project's decision touches; a lock per project lets
#   projects decide in parallel. What crosses projects (claiming a free instance, the pool's
#   boots, counted against the pool's size) takes the claims lock as well, always after the
#   project's: one order for every holder of both, so no two wait for each other. Probes (where
#   a new network or volume goes, services/common.py) are decisions too, and may claim.
# On SQLite both are the database's one write lock (BEGIN IMMEDIATE): one writer anyway.


def decision_lock(settings, project: str) -> contextlib.AbstractContextManager[None]:
    """The transaction a placement decision for ``project`` runs in (see above)."""
    if dedicated(settings):
        return store.serialized(store.project_lock_key(store.PROJECT_PLACEMENT_KIND, project))
    return store.serialized(store.PLACEMENT_LOCK)


def lock_claims(settings) -> None:
    """Inside a decision (after its project's lock): hold the claims lock to its end, before
    reading which instances are free or what the pool is booting. With shared tenancy (and on
    SQLite) the decision's own lock excludes every other decision already."""
    if dedicated(settings):
        store.advisory_lock(store.CLAIMS_LOCK)


@contextlib.contextmanager
def instance_lock(settings, uuid: str) -> Iterator[bool]:
    """A write transaction no placement decision that could put a container on instance
    ``uuid`` interleaves with (the reaper's: taking an empty instance out of placement with its
    last emptiness check, forgetting a vanished one): the lock of the project that owns it, or
    the claims lock when none does (only a claim could then place there). Yields whether it
    still has the owner it was locked for: False if a claim or a release changed it between the
    read and the lock (the caller leaves it for its next pass)."""
    if not dedicated(settings):
        with store.serialized(store.PLACEMENT_LOCK):
            yield True
        return
    Inst = store.Instance
    owner = Inst.select(Inst.project).where(Inst.uuid == uuid).scalar()
    key = store.CLAIMS_LOCK if owner is None else store.project_lock_key(store.PROJECT_PLACEMENT_KIND, owner)
    with store.serialized(key):
        yield Inst.select(Inst.project).where(Inst.uuid == uuid).scalar() == owner


def claim_free(
    project: str, settings, default_capacity: int, exclude: frozenset[str] = frozenset()
) -> store.Instance | None:
    """Dedicated tenancy: make the first free instance (fill order) the project's. Chosen and
    claimed under the claims lock, so two projects never claim one instance."""
    lock_claims(settings)
    for _ in range(3):
        chosen = choose(STRATEGIES["fill"], settings, default_capacity, free=True, exclude=exclude)
        if chosen is None or claim(chosen, project, settings):
            return chosen
        # (only a writer outside the claims lock could have changed it: try the next one)
        exclude = exclude | {chosen.uuid}
    raise DockerError(503, "the free instances were taken meanwhile; try again")


def claim(instance: store.Instance, project: str, settings) -> bool:
    """Make a free instance the project's, under the claims lock: the update itself checks
    that it is still free (no project's, nothing on it), as read under that lock, so that two
    projects deciding in parallel never both claim it. False when it no longer is."""
    lock_claims(settings)
    now = store.utcnow()
    Inst = store.Instance
    taken = (
        Inst.update(project=project, claimed_at=now)
        .where((Inst.uuid == instance.uuid) & Inst.project.is_null() & (Inst.container_count == 0))
        .execute()
    )
    if taken:
        instance.project, instance.claimed_at = project, now
    return bool(taken)


@overload
def place(
    request: PlacementRequest,
    settings,
    when_full: None = None,
    on_placed: Callable[[Placement], None] | None = None,
) -> Placement: ...
@overload
def place(
    request: PlacementRequest,
    settings,
    when_full: Callable[[], None],
    on_placed: Callable[[Placement], None] | None = None,
) -> Placement | None: ...
def place(
    request: PlacementRequest,
    settings,
    when_full: Callable[[], None] | None = None,
    on_placed: Callable[[Placement], None] | None = None,
) -> Placement | None:
    """Check the project's container quotas, choose an instance and reserve a slot on it,
    atomically: one transaction that no other placement which could take the same name, quota
    or slot interleaves with, in any worker or replica (BEGIN IMMEDIATE on SQLite, advisory
    locks on PostgreSQL: ``decision_lock`` and ``lock_claims``).

    ``when_full`` (the instance pool, gateway/placement/pool.py): when no instance has room
    for an unpinned request that passed the name and quota checks, it runs inside this same
    transaction instead of the 503 (the pool claims a slot on a booting instance), and place
    returns None: "every instance is full" and "add one" are one decision.

    ``on_placed`` runs in the transaction once the slot is reserved (the pool records its own
    events there: they commit with the reservation, in its one round trip)."""
    order = STRATEGIES.get(settings.placement.strategy, STRATEGIES["fill"])
    default_capacity = settings.placement.capacity
    reservation_id = RESERVATION_PREFIX + _uuid.uuid4().hex
    # Two creates can neither count the same free slot nor the same quota headroom.
    with decision_lock(settings, request.project):
        if request.name:
            # Names are the project's across every instance: checked and reserved here, in the
            # same transaction, so two creates of one name cannot both pass.
            holder = store.container_named(request.project, request.name)
            if holder is not None:
                raise name_conflict(request.name, holder.id)
        if not request.probe:
            quotas.check_container(request.project, request.memory, request.nano_cpus, settings)
        own = dedicated(settings)
        if request.pinned:
            chosen = store.Instance.get_or_none(store.Instance.uuid == request.pinned)
            # Another project's instance is as unknown as another project's container; a free
            # one is claimed below, once it is known to be live and empty.
            if (
                chosen is not None
                and own
                and chosen.project != request.project
                and (chosen.project is not None or chosen.container_count)
            ):
                chosen = None
            if chosen is None:
                raise DockerError(404, f"no such instance: {request.pinned} (label {PIN_LABEL})")
            if not is_live(chosen, settings) or chosen.state == store.INSTANCE_DRAINING:
                raise DockerError(
                    503,
                    f"instance {chosen.uuid} {_unavailable(chosen)}; "
                    f"pin another instance or drop the {PIN_LABEL} label",
                )
            if not has_room(chosen, default_capacity):
                raise DockerError(
                    409,
                    f"instance {chosen.uuid} is full ({_capacity(chosen, default_capacity)} "
                    f"containers); pin another instance or drop the {PIN_LABEL} label",
                )
            if own and chosen.project is None and not claim(chosen, request.project, settings):
                # another project claimed it since it was read: as unknown as any of its instances
                raise DockerError(404, f"no such instance: {request.pinned} (label {PIN_LABEL})")
        else:
            busy = frozenset(i for protocol, port in request.ports for i in mesh.taken_on(protocol, port))
            if own:
                chosen = choose(
                    order, settings, default_capacity, owner=request.project, exclude=busy
                ) or claim_free(request.project, settings, default_capacity, busy)
            else:
                chosen = choose(order, settings, default_capacity, exclude=busy)
            if chosen is None and busy and when_full is None:
                raise _ports_taken(request)
            if chosen is None:
                if when_full is not None:
                    lock_claims(settings)  # the pool's size and building members are every project's
                    when_full()
                    return None
                if choose(STRATEGIES["fill"], settings, 0, with_room=False) is None:
                    raise DockerError(
                        503,
                        "no instance is available to run containers: no agent is registered "
                        "and answering; ask the operator to check `moorage instances list`",
                    )
                if own:
                    raise DockerError(
                        503,
                        "every instance of this project is full and no free instance is left "
                        "to add: remove containers you no longer need, or ask the operator "
                        "for more instances",
                    )
                raise DockerError(
                    503,
                    "every instance is full and no more can be added: remove containers "
                    "you no longer need, or ask the operator for more capacity",
                )
        if not request.probe:
            # Its answer is not read: it goes with the commit (store.with_commit).
            store.with_commit(
                store.Container.insert(
                    id=reservation_id,
                    project=request.project,
                    name=request.name,
                    instance=chosen.uuid,
                    labels=None,
                    memory=request.memory,
                    nano_cpus=request.nano_cpus,
                )
            )
        placement = Placement(chosen, reservation_id, request.memory, request.nano_cpus)
        if on_placed is not None:
            on_placed(placement)
    return placement


def _ports_taken(request: PlacementRequest) -> DockerError:
    """No instance with room has the ports free: dockerd's words, and what to do."""
    port = request.ports[0][1]
    return DockerError(
        500,
        f"Bind for 0.0.0.0:{port} failed: port is already allocated (on every instance with "
        f"room: {', '.join(f'{p}/{t}' for t, p in request.ports)}): publish another port, or "
        "let Docker choose one (-p PORT, -P)",
    )


def name_conflict(name: str, holder_id: str) -> DockerError:
    """dockerd's own words for a name in use."""
    if holder_id.startswith(RESERVATION_PREFIX):
        holder_id = "(being created)"
    return DockerError(
        409,
        f'Conflict. The container name "/{name}" is already in use by container "{holder_id}". '
        "You have to remove (or rename) that container to be able to reuse that name.",
    )


def release(placement: Placement) -> None:
    """Drop a reservation whose create failed."""
    store.Container.delete().where(store.Container.id == placement.reservation_id).execute()


def confirm(
    placement: Placement,
    container_id: str,
    name: str,
    project: str,
    labels: dict,
    *,
    publishes: bool | None = None,
) -> None:
    """Turn the reservation into the container's row: one round trip on PostgreSQL (no
    answer is read: each write goes with the COMMIT, store.with_commit)."""
    with store.write_transaction():
        store.with_commit(store.Container.delete().where(store.Container.id == placement.reservation_id))
        # The daemon accepted this name, so any older row holding it is stale.
        store.with_commit(
            store.Container.delete().where(
                (store.Container.project == project)
                & (store.Container.name == name)
                & (store.Container.instance == placement.instance.uuid)
            )
        )
        # An upsert both SQLite and PostgreSQL speak (a heartbeat may have adopted it already).
        C = store.Container
        row = {
            C.project: project,
            C.name: name,
            C.instance: placement.instance.uuid,
            C.labels: labels or None,
            C.memory: placement.memory,
            C.nano_cpus: placement.nano_cpus,
            C.publishes: publishes,
        }
        store.with_commit(
            C.insert({C.id: container_id, **row}).on_conflict(conflict_target=[C.id], update=row)
        )
