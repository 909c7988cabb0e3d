"""The instance pool: where instances come from, behind one Provider interface.

Providers (``[placement] provider``):

- ``local`` (the default): the machine's own dockerd with one agent. The pool never grows.
- ``static``: instances whose agents register with the operator's registration secret
  (listed by the operator, one agent each). The pool never grows.
- ``nova``: instances the gateway boots itself through Nova (gateway/placement/nova.py).
  When no instance has room, a create asks the pool to grow, waits (bounded by
  ``[nova] boot_timeout``) for the new instance's agent to register, then is placed again.
  An instance that stays empty for ``[nova] empty_grace_seconds`` is deleted.

What the pool decides lives in the store, so every worker and replica agrees:

- a PoolMember row per instance the pool booted (building → active → draining → deleting,
  or failed). A building member counts the creates waiting for it (``claimed``): a create
  that finds no room joins a building member that still has room for it, and only boots
  another when none has, so Nova sees about one boot per ``capacity`` creates. That claim is
  made inside the scheduler's placement transaction (scheduler.place's ``when_full``), after
  its name and quota checks and under the claims lock: no placement that could take the same
  instances interleaves between "every instance is full" and "join or boot one", in any
  worker or replica;
- the one-time bootstrap secret the booted agent registers with is kept as a SHA-256 only,
  and cleared when it is used: the agent registers under the server's UUID, once;
- a PoolLease row elects the one worker (of every worker of every replica) that reaps.

Network I/O (Nova, agents) never happens inside a database transaction.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import secrets
import time
import uuid as _uuid
from collections.abc import Callable

import peewee

from gateway import instances, metrics, notifications, store
from gateway.config import PlacementSettings, Settings
from gateway.errors import DockerError
from gateway.placement import scheduler
from gateway.placement.local import LocalProvider
from gateway.placement.provider import Provider, StaticProvider
from gateway.store import ACTIVE, BUILDING, FAILED, PoolMember
from relay.upstream import Endpoint

log = logging.getLogger("moorage.pool")

POLL_INTERVAL = 0.25

_providers: dict[tuple, Provider] = {}


def provider_for(settings: Settings) -> Provider:
    kind = settings.placement.provider or PlacementSettings.provider
    key = (kind, id(settings))
    if key not in _providers:
        if kind == "local":
            _providers[key] = LocalProvider(settings.local, settings)
        elif kind == "static":
            _providers[key] = StaticProvider()
        elif kind == "nova":
            from gateway.placement.nova import NovaProvider

            _providers[key] = NovaProvider(settings.nova, settings)
        else:
            raise ValueError(f"unknown [placement] provider {kind!r}: local, static or nova")
    return _providers[key]


def pool_id(settings: Settings) -> str:
    return settings.placement.pool_id or PlacementSettings.pool_id


# -- the store ----------------------------------------------------------------------------------


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def claim(
    provider: Provider, settings, project: str | None = None, now: _dt.datetime | None = None
) -> tuple[str, str | None]:
    """Join a building member with room, or start a new one. ``project``: dedicated tenancy's
    owner of the instance (only that project's creates join its boot). Runs inside the placement
    transaction (through scheduler.place's ``when_full``), under the lock every decision that
    may boot holds (scheduler.lock_claims, or with shared tenancy the one placement lock): what
    keeps two creates, of one project or two, from both seeing "nothing building" and both
    booting, or both counting the last instance the pool's size allows.

    Returns (member id, bootstrap secret): the secret is set only for the caller that must
    boot the instance. Raises DockerError 503 when the pool is at its size limit."""
    now = now or store.utcnow()
    for_project = PoolMember.project.is_null() if project is None else PoolMember.project == project
    building = (
        PoolMember.select()
        .where((PoolMember.state == BUILDING) & (PoolMember.provider == provider.name) & for_project)
        .order_by(PoolMember.created_at)
    )
    for member in building:
        if member.capacity <= 0 or member.claimed < member.capacity:
            PoolMember.update(claimed=PoolMember.claimed + 1).where(PoolMember.id == member.id).execute()
            return member.id, None
    if provider.max_instances:
        size = (
            PoolMember.select()
            .where(PoolMember.provider == provider.name, PoolMember.state != FAILED)
            .count()
        )
        if size >= provider.max_instances:
            what = (
                "this project's instances are full, none is free to claim,"
                if project is not None
                else "every instance is full"
            )
            raise DockerError(
                503,
                f"{what} and no more can be added: the pool has "
                f"reached its limit of {provider.max_instances} instances; remove "
                "containers you no longer need, or ask the operator for more capacity",
            )
    secret = secrets.token_urlsafe(32)
    member_id = _uuid.uuid4().hex
    PoolMember.create(
        id=member_id,
        provider=provider.name,
        pool=pool_id(settings),
        state=BUILDING,
        capacity=provider.capacity,
        claimed=1,
        secret_sha256=_sha(secret),
        created_at=now,
        updated_at=now,
        project=project,
    )
    return member_id, secret


def unclaim(member_id: str) -> None:
    PoolMember.update(claimed=PoolMember.claimed - 1).where(
        (PoolMember.id == member_id) & (PoolMember.state == BUILDING) & (PoolMember.claimed > 0)
    ).execute()


def fail(member_id: str, error: str) -> bool:
    """Mark a building member failed (the reaper deletes its server); True if this call did."""
    return bool(
        PoolMember.update(state=FAILED, error=error[:2000], secret_sha256=None, updated_at=store.utcnow())
        .where((PoolMember.id == member_id) & (PoolMember.state == BUILDING))
        .execute()
    )


def record_server(member_id: str, server_id: str) -> bool:
    """The booter learnt the server's UUID: note it, and show the instance as building."""
    now = store.utcnow()
    with store.write_transaction():
        member = PoolMember.get_or_none(PoolMember.id == member_id)
        if member is None or member.state != BUILDING:
            return False
        PoolMember.update(server_id=server_id, updated_at=now).where(PoolMember.id == member_id).execute()
        if store.Instance.get_or_none(store.Instance.uuid == server_id) is None:
            last = store.Instance.select(peewee.fn.MAX(store.Instance.position)).scalar() or 0
            store.Instance.create(
                uuid=server_id,
                provider=member.provider,
                agent_url="",
                agent_secret="",
                capacity=member.capacity,
                state=BUILDING,
                project=member.project,
                claimed_at=now if member.project else None,
                position=last + 1,
                registered_at=now,
                last_heartbeat=now,
            )
    return True


# -- growing on demand -------------------------------------------------------------------------


def place(request: scheduler.PlacementRequest, settings) -> scheduler.Placement:
    """``_place``, timed: every decision is observed by its outcome ("placed"; "refused": an
    answer in Docker's shape, such as a full quota or no room; "error": anything else)."""
    started = time.monotonic()
    began = store.utcnow()
    outcome = "error"
    try:
        # Its own events are recorded in the decision's transaction, with its reservation.
        placement = _place(request, settings, lambda placement: _tell_placed(request, placement, began))
        outcome = "placed"
        return placement
    except DockerError:
        outcome = "refused"
        raise
    finally:
        metrics.PLACEMENT_SECONDS.labels(outcome).observe(time.monotonic() - started)


def _tell_placed(request: scheduler.PlacementRequest, placement: scheduler.Placement, began) -> None:
    """The gateway's own events of a placement (gateway/notifications/own_events.py): the
    instance claimed for the project by it, if it was; the container's placement."""
    instance = placement.instance
    if instance.project == request.project and instance.claimed_at and instance.claimed_at >= began:
        notifications.own_event(request.project, instance.uuid, "claim", provider=instance.provider)
    if not request.probe:
        notifications.own_event(
            request.project, instance.uuid, "place", container=request.name, provider=instance.provider
        )


def _place(
    request: scheduler.PlacementRequest,
    settings,
    on_placed: Callable[[scheduler.Placement], None] | None = None,
) -> scheduler.Placement:
    """Placement with a pool that may grow. The scheduler decides in its one transaction;
    when no instance has room for an unpinned request and the provider can add one, the pool
    claims a slot on a booting instance in that same transaction (``claim``). Then it boots
    the instance (if this create started it), waits for its agent, and places again."""
    provider = provider_for(settings)
    if request.pinned or not provider.can_grow:
        return scheduler.place(request, settings, on_placed=on_placed)
    deadline = time.monotonic() + provider.boot_timeout
    owner = request.project if scheduler.dedicated(settings) else None  # whose instance a boot is
    claimed: list[tuple[str, str | None]] = []  # (member, secret) of this attempt's claim
    first = True
    while True:
        if not first and time.monotonic() > deadline:
            try:
                return scheduler.place(request, settings, on_placed=on_placed)
            except DockerError as exc:
                if exc.status != 503:
                    raise
                # The instances added for this request filled up before it got its slot.
                raise DockerError(
                    503,
                    "no instance could be added: the instances added for this request "
                    "were taken by others; try again",
                ) from None
        first = False
        claimed.clear()
        placement = scheduler.place(
            request,
            settings,
            when_full=lambda: claimed.append(claim(provider, settings, owner)),
            on_placed=on_placed,
        )
        if placement is not None:
            return placement
        member_id, secret = claimed[-1]
        store.release_connection()  # none is held across the boot and the wait (network I/O)
        if secret is not None:
            _boot(provider, member_id, secret, owner, request.delegation)
        _wait(member_id, provider)


@notifications.instance_hook("create")  # compute.container_instance.create.*
def _boot(provider: Provider, member_id: str, secret: str, project: str | None, delegation=None) -> None:
    log.info(
        "no instance has room: booting a %s instance (pool member %s%s)",
        provider.name,
        member_id,
        f", for project {project}" if project else "",
    )
    try:
        provider.authorize(project, delegation)  # nova, dedicated: the project's Keystone trust
        server_id = provider.boot(member_id, secret, project)
    except Exception as exc:  # any cloud error ends this boot
        # A refusal the provider put in Docker's shape keeps its status (a Nova quota: 403).
        status, message = (exc.status, exc.message) if isinstance(exc, DockerError) else (503, _one_line(exc))
        fail(member_id, message)
        log.warning("booting an instance failed: %s", message)
        raise DockerError(status, f"no instance could be added: {message}") from exc
    if not record_server(member_id, server_id):
        log.warning("pool member %s was abandoned while server %s booted", member_id, server_id)


def _wait(member_id: str, provider: Provider) -> None:
    """Wait until the member's agent registers (its instance then takes placements)."""
    done = False
    try:
        while True:
            member = PoolMember.get_or_none(PoolMember.id == member_id)
            if member is None:
                done = True
                raise DockerError(503, "no instance could be added: its boot was abandoned")
            if member.state == FAILED:
                done = True
                raise DockerError(503, f"no instance could be added: {member.error or 'its boot failed'}")
            if member.state != BUILDING:
                done = True
                return
            age = (store.utcnow() - member.created_at).total_seconds()
            if age > provider.boot_timeout:
                what = f"instance {member.server_id}" if member.server_id else "the instance"
                message = (
                    f"{what} did not register its agent within {provider.boot_timeout:g} s "
                    "([nova] boot_timeout)"
                )
                fail(member_id, message)
                done = True
                raise DockerError(503, f"no instance could be added: {message}")
            store.release_connection()
            time.sleep(POLL_INTERVAL)
    finally:
        if not done:
            unclaim(member_id)  # interrupted: leave the slot to another create


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]


# -- registration with a bootstrap secret ------------------------------------------------------


def bootstrap(presented: str, data: dict) -> tuple[str, str]:
    """Spend a bootstrap secret: the instance row goes up; returns (server UUID, agent secret)."""
    agent_url = str(data.get("agent_url", "")).strip()
    if not agent_url:
        raise DockerError(400, "agent registration needs agent_url")
    try:
        Endpoint.parse(agent_url)
    except ValueError as exc:
        raise DockerError(400, str(exc)) from exc
    digest = _sha(presented)
    agent_secret = secrets.token_urlsafe(32)
    now = store.utcnow()
    spent = DockerError(401, "agent registration refused: unknown or already used bootstrap secret")
    with store.write_transaction():
        member = PoolMember.get_or_none(PoolMember.secret_sha256 == digest)
        if member is None or member.state != BUILDING:
            raise spent
        if not member.server_id:
            raise DockerError(409, "agent registration: the gateway has not yet recorded this server; retry")
        # Conditional, so that of two registrations racing with one secret only one spends it.
        if (
            not PoolMember.update(
                state=ACTIVE, secret_sha256=None, registered_at=now, updated_at=now, empty_since=None
            )
            .where((PoolMember.id == member.id) & (PoolMember.state == BUILDING))
            .execute()
        ):
            raise spent
        instance = store.Instance.get_or_none(store.Instance.uuid == member.server_id)
        created = instance is None
        if created:
            last = store.Instance.select(peewee.fn.MAX(store.Instance.position)).scalar() or 0
            instance = store.Instance(uuid=member.server_id, position=last + 1, registered_at=now)
        instance.provider = member.provider
        instance.agent_url = agent_url
        instance.agent_secret = agent_secret
        instance.state = store.INSTANCE_UP
        instance.daemon_down = False  # its agent registers once its daemon answers
        instance.last_heartbeat = now
        if instance.project != member.project:  # booted for it (dedicated tenancy), or None
            instance.project, instance.claimed_at = member.project, now if member.project else None
        instances.apply_facts(instance, data)
        if not instance.capacity:
            instance.capacity = member.capacity
        instance.save(force_insert=created)
    log.info(
        "instance %s (pool member %s) registered its agent at %s", member.server_id, member.id, agent_url
    )
    return member.server_id, agent_secret
