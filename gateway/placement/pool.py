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
  its name and quota checks: no placement interleaves between "every instance is full" and
  "join or boot one", in any worker or replica;
- the one-time bootstrap secret the booted agent registers with is kept as a SHA-256 only,
  and cleared when it is used: the agent registers under the server's UUID, once;
- a PoolLease row elects the one worker (of every worker of every replica) that reaps.

Network I/O (Nova, agents) never happens inside a database transaction.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import secrets
import socket
import time
import uuid as _uuid

import peewee

from gateway import instances, store
from gateway.errors import DockerError
from gateway.forward import AGENT_SECRET_HEADER
from relay import request as upstream_request

log = logging.getLogger("moorage.pool")

BUILDING = "building"
ACTIVE = "active"
DRAINING = "draining"
DELETING = "deleting"
FAILED = "failed"

BOOTSTRAP_HEADER = "X-Moorage-Bootstrap-Secret"
POLL_INTERVAL = 0.25
DRAIN_STUCK = _dt.timedelta(seconds=120)  # a draining member a dead worker left behind
FAILED_KEEP = _dt.timedelta(seconds=60)  # waiters read a failed member's error meanwhile
ORPHAN_SWEEP_SECONDS = 60.0


class PoolMember(store.BaseModel):
    """An instance the pool booted (or is booting), by the pool's own ID for it."""

    id = peewee.CharField(primary_key=True, max_length=64)
    provider = peewee.CharField(max_length=32)
    pool = peewee.CharField(max_length=64)  # [placement] pool_id: the gateway that booted it
    server_id = peewee.CharField(max_length=64, null=True, unique=True)  # = Instance.uuid
    state = peewee.CharField(max_length=16, default=BUILDING, index=True)
    capacity = peewee.IntegerField(default=0)  # containers; 0 = no limit
    claimed = peewee.IntegerField(default=0)  # creates waiting for this boot
    secret_sha256 = peewee.CharField(max_length=64, null=True, unique=True)
    error = peewee.TextField(default="")
    created_at = peewee.DateTimeField(default=store.utcnow)
    updated_at = peewee.DateTimeField(default=store.utcnow)
    registered_at = peewee.DateTimeField(null=True)
    empty_since = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "pool_member"


class PoolLease(store.BaseModel):
    """A named lease (the reaper's): held by one worker until it expires."""

    name = peewee.CharField(primary_key=True, max_length=32)
    holder = peewee.CharField(max_length=128, default="")
    expires_at = peewee.DateTimeField(default=store.utcnow)

    class Meta:
        table_name = "pool_lease"


def migrate(db: peewee.Database) -> None:
    """The pool's tables (a migration step in store.MIGRATIONS)."""
    db.create_tables([PoolMember, PoolLease], safe=True)


# -- providers --------------------------------------------------------------------------------


class Provider:
    """Where instances come from. The pool logic is here; a provider only talks to its cloud."""

    name = "static"
    can_grow = False
    boot_timeout = 300.0
    empty_grace = 600.0
    capacity = 0
    max_instances = 0

    def boot(self, member_id: str, secret: str) -> str:
        """Start an instance whose agent registers with ``secret``; returns its server UUID."""
        raise NotImplementedError

    def delete(self, server_id: str) -> bool:
        """Delete a server this pool created (False: refused, it is not ours; gone is True)."""
        raise NotImplementedError

    def owned_servers(self) -> list[dict]:
        """The servers carrying this pool's mark: [{"id", "member", "created"}]."""
        return []


class LocalProvider(Provider):
    """The embedded default: this machine's dockerd with its one agent."""

    name = "local"


class StaticProvider(Provider):
    """Instances the operator runs, each with an agent that registers."""

    name = "static"


_providers: dict[tuple, Provider] = {}


def provider_for(settings) -> Provider:
    kind = str(settings.placement.get("provider", "local") or "local")
    nova_conf = getattr(settings, "nova", {}) or {}
    key = (kind, id(settings))
    if key not in _providers:
        if kind == "local":
            _providers[key] = LocalProvider()
        elif kind == "static":
            _providers[key] = StaticProvider()
        elif kind == "nova":
            from gateway.placement.nova import NovaProvider

            _providers[key] = NovaProvider(nova_conf, settings)
        else:
            raise ValueError(f"unknown [placement] provider {kind!r}: local, static or nova")
    return _providers[key]


def pool_id(settings) -> str:
    return str(settings.placement.get("pool_id") or "moorage")


# -- the store ----------------------------------------------------------------------------------


def _sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def claim(provider: Provider, settings, now: _dt.datetime | None = None) -> tuple[str, str | None]:
    """Join a building member with room, or start a new one. Runs inside the placement
    transaction (store.serialized(PLACEMENT_LOCK), through scheduler.place's ``when_full``),
    which is what keeps two creates from both seeing "nothing building" and both booting.

    Returns (member id, bootstrap secret): the secret is set only for the caller that must
    boot the instance. Raises DockerError 503 when the pool is at its size limit."""
    now = now or store.utcnow()
    building = (
        PoolMember.select()
        .where((PoolMember.state == BUILDING) & (PoolMember.provider == provider.name))
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
            raise DockerError(
                503,
                "every instance is full and no more can be added: the pool has "
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
                position=last + 1,
                registered_at=now,
                last_heartbeat=now,
            )
    return True


# -- growing on demand -------------------------------------------------------------------------


def place(request, settings):
    """Placement with a pool that may grow. The scheduler decides in its one transaction;
    when no instance has room for an unpinned request and the provider can add one, the pool
    claims a slot on a booting instance in that same transaction (``claim``). Then it boots
    the instance (if this create started it), waits for its agent, and places again."""
    from gateway.placement import scheduler

    provider = provider_for(settings)
    if request.pinned or not provider.can_grow:
        return scheduler.place(request, settings)
    deadline = time.monotonic() + provider.boot_timeout
    claimed: list[tuple[str, str | None]] = []  # (member, secret) of this attempt's claim
    first = True
    while True:
        if not first and time.monotonic() > deadline:
            try:
                return scheduler.place(request, settings)
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
            request, settings, when_full=lambda: claimed.append(claim(provider, settings))
        )
        if placement is not None:
            return placement
        member_id, secret = claimed[-1]
        store.release_connection()  # none is held across the boot and the wait (network I/O)
        if secret is not None:
            _boot(provider, member_id, secret)
        _wait(member_id, provider)


def _boot(provider: Provider, member_id: str, secret: str) -> None:
    log.info("no instance has room: booting a %s instance (pool member %s)", provider.name, member_id)
    try:
        server_id = provider.boot(member_id, secret)
    except Exception as exc:  # noqa: BLE001 (any cloud error ends this boot)
        message = _one_line(exc)
        fail(member_id, message)
        log.warning("booting an instance failed: %s", message)
        raise DockerError(503, f"no instance could be added: {message}") from exc
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


def register_bootstrapped(req, resp, settings, presented: str) -> None:
    """An agent the pool booted registers with its one-time bootstrap secret.

    The secret names the pool member, hence the server: the instance registers under the
    server's UUID (whatever UUID the agent sends is ignored), and the secret is spent."""
    data = instances._json_body(req)
    server_id, agent_secret = bootstrap(presented, data)
    resp.status = 201
    resp.content_type = "application/json"
    resp.media = {
        "agent_secret": agent_secret,
        "heartbeat_interval": settings.heartbeat_interval,
        "uuid": server_id,
    }


def bootstrap(presented: str, data: dict) -> tuple[str, str]:
    """Spend a bootstrap secret: the instance row goes up; returns (server UUID, agent secret)."""
    from relay.upstream import Endpoint

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
        instance.last_heartbeat = now
        instances._apply_facts(instance, data)
        if not instance.capacity:
            instance.capacity = member.capacity
        instance.save(force_insert=created)
    log.info(
        "instance %s (pool member %s) registered its agent at %s", member.server_id, member.id, agent_url
    )
    return member.server_id, agent_secret


# -- the reaper ----------------------------------------------------------------------------------


def take_lease(name: str, holder: str, ttl: float, now: _dt.datetime | None = None) -> bool:
    now = now or store.utcnow()
    expires = now + _dt.timedelta(seconds=ttl)
    query = PoolLease.update(holder=holder, expires_at=expires).where(
        (PoolLease.name == name) & ((PoolLease.holder == holder) | (PoolLease.expires_at < now))
    )
    if query.execute():
        return True
    inserted = PoolLease.insert(name=name, holder=holder, expires_at=expires).on_conflict_ignore().execute()
    return bool(inserted) and PoolLease.get_by_id(name).holder == holder


def held(server_id: str) -> bool:
    """Whether the map puts anything on the instance: a container (or a placement's
    reservation), a user-defined network, a named volume (their rows keep the instance's), or
    the only copy of a project's image (built, committed, loaded: deleting the instance would
    lose it; `docker rmi` lets the instance go)."""
    if any(
        model.select().where(model.instance == server_id).exists()
        for model in (store.Container, store.Network, store.Volume)
    ):
        return True
    P, R = store.ImagePresence, store.ImageRef
    elsewhere = store.ImagePresence.alias()
    return (
        P.select()
        .where(
            (P.instance == server_id)
            & P.image_id.in_(R.select(R.image_id).where(R.project != ""))
            & P.image_id.not_in(elsewhere.select(elsewhere.image_id).where(elsewhere.instance != server_id))
        )
        .exists()
    )


def daemon_busy(instance: store.Instance) -> str:
    """What keeps the instance's daemon from being empty ("" if nothing), asked through its agent."""
    headers = [(AGENT_SECRET_HEADER, instance.agent_secret)]
    found = []
    resp = upstream_request(
        instances.endpoint(instance), "GET", "/containers/json?all=1", headers, connect_timeout=3, timeout=15
    )
    body = resp.read()
    if resp.status != 200:
        return f"the daemon answered {resp.status} to the container list"
    if json.loads(body or b"[]"):
        found.append(f"{len(json.loads(body))} container(s)")
    resp = upstream_request(
        instances.endpoint(instance), "GET", "/volumes", headers, connect_timeout=3, timeout=15
    )
    body = resp.read()
    if resp.status != 200:
        return f"the daemon answered {resp.status} to the volume list"
    named = [
        v
        for v in (json.loads(body or b"{}").get("Volumes") or [])
        if not (len(v.get("Name", "")) == 64 and all(c in "0123456789abcdef" for c in v["Name"]))
    ]
    if named:
        found.append(f"{len(named)} named volume(s)")
    return ", ".join(found)


def reap_once(
    settings, provider: Provider, now: _dt.datetime | None = None, check_daemon=daemon_busy
) -> dict:
    """One pass: fail overdue boots, delete what failed, delete members empty for the grace."""
    is_live = instances.is_live
    now = now or store.utcnow()
    done = {"failed": 0, "deleted": 0}
    mine = PoolMember.select().where(PoolMember.provider == provider.name)
    for member in list(mine):
        if member.state == BUILDING:
            if (now - member.created_at).total_seconds() > provider.boot_timeout:
                if fail(
                    member.id,
                    f"the instance did not register its agent within {provider.boot_timeout:g} s "
                    "([nova] boot_timeout)",
                ):
                    done["failed"] += 1
            continue
        if member.state == FAILED:
            if member.server_id and _delete_server(provider, member):
                member.server_id = None
            if not member.server_id and now - member.updated_at > FAILED_KEEP:
                PoolMember.delete().where(PoolMember.id == member.id).execute()
            continue
        if member.state == DRAINING and now - member.updated_at > DRAIN_STUCK:
            _undrain(member)  # a worker died between draining and deleting; start over
            continue
        if member.state == DELETING:
            if _delete_server(provider, member):
                done["deleted"] += 1
            continue
        if member.state != ACTIVE:
            continue
        instance = store.Instance.get_or_none(store.Instance.uuid == member.server_id)
        if held(member.server_id):
            if member.empty_since is not None:
                PoolMember.update(empty_since=None).where(PoolMember.id == member.id).execute()
            continue
        if member.empty_since is None:
            PoolMember.update(empty_since=now).where(PoolMember.id == member.id).execute()
            continue
        if (now - member.empty_since).total_seconds() < provider.empty_grace:
            continue
        if instance is not None and not is_live(instance, settings):
            continue  # its daemon cannot say whether it holds anything: keep it
        # Empty for the whole grace: take it out of placement, atomically with the last check
        # (in the placement transaction: no create is placed on it between the two).
        with store.serialized(store.PLACEMENT_LOCK):
            if held(member.server_id):
                PoolMember.update(empty_since=None).where(PoolMember.id == member.id).execute()
                continue
            store.Instance.update(state=store.INSTANCE_DRAINING).where(
                store.Instance.uuid == member.server_id
            ).execute()
            PoolMember.update(state=DRAINING, updated_at=now).where(PoolMember.id == member.id).execute()
        if instance is not None:
            store.release_connection()  # none is held across network I/O
            try:
                busy = check_daemon(instance)
            except Exception as exc:  # noqa: BLE001
                busy = f"its agent did not answer ({_one_line(exc)})"
            if busy:
                log.info(
                    "instance %s has been empty in the map for %g s, but its daemon holds %s; keeping it",
                    member.server_id,
                    provider.empty_grace,
                    busy,
                )
                _undrain(member)
                continue
        PoolMember.update(state=DELETING, updated_at=now).where(PoolMember.id == member.id).execute()
        log.info("instance %s stayed empty for %g s: deleting it", member.server_id, provider.empty_grace)
        if _delete_server(provider, member):
            done["deleted"] += 1
    return done


def _undrain(member: PoolMember) -> None:
    with store.write_transaction():
        store.Instance.update(state=store.INSTANCE_UP).where(
            (store.Instance.uuid == member.server_id) & (store.Instance.state == store.INSTANCE_DRAINING)
        ).execute()
        PoolMember.update(state=ACTIVE, empty_since=None, updated_at=store.utcnow()).where(
            PoolMember.id == member.id
        ).execute()


def _delete_server(provider: Provider, member: PoolMember) -> bool:
    """Delete the member's server, then its rows. True when it is gone."""
    if member.server_id:
        store.release_connection()
        try:
            if not provider.delete(member.server_id):
                log.error(
                    "refusing to delete server %s: it does not carry this pool's mark", member.server_id
                )
                return False
        except Exception as exc:  # noqa: BLE001 (retried on the next pass)
            log.warning("deleting server %s failed (will retry): %s", member.server_id, _one_line(exc))
            return False
    with store.write_transaction():
        if member.server_id and not held(member.server_id):
            store.Instance.delete().where(store.Instance.uuid == member.server_id).execute()
        if member.state == FAILED:
            PoolMember.update(server_id=None).where(PoolMember.id == member.id).execute()
        else:
            PoolMember.delete().where(PoolMember.id == member.id).execute()
    return True


def sweep_orphans(settings, provider: Provider, now: _dt.datetime | None = None) -> int:
    """Delete servers with this pool's mark that no member knows (a worker died mid-boot)."""
    now = now or store.utcnow()
    known_servers = {m.server_id for m in PoolMember.select(PoolMember.server_id) if m.server_id}
    known_members = {m.id for m in PoolMember.select(PoolMember.id)}
    store.release_connection()
    deleted = 0
    servers = provider.owned_servers()
    forget_vanished(settings, provider, servers)
    for server in servers:
        if server["id"] in known_servers or server.get("member") in known_members:
            continue
        created = server.get("created")
        if created is not None and (now - created).total_seconds() < provider.boot_timeout:
            continue
        log.info("server %s carries this pool's mark but no member knows it: deleting it", server["id"])
        try:
            if provider.delete(server["id"]):
                deleted += 1
        except Exception as exc:  # noqa: BLE001
            log.warning("deleting orphan server %s failed: %s", server["id"], _one_line(exc))
    return deleted


def forget_vanished(settings, provider: Provider, servers: list[dict]) -> int:
    """Members whose server is no longer in Nova (deleted behind Moorage's back) and whose
    agent has gone silent: what ran there went with the server, so its rows in the map go too
    (containers and their execs, networks, volumes, image copies), freeing the project's
    quota, and the instance leaves placement. Both signs are needed: a server missing from
    one listing alone may be a listing's fault. Returns how many were forgotten."""
    existing = {server["id"] for server in servers}
    forgotten = 0
    members = PoolMember.select().where(
        (PoolMember.provider == provider.name) & PoolMember.state.in_([ACTIVE, DRAINING])
    )
    for member in list(members):
        server_id = member.server_id
        if not server_id or server_id in existing:
            continue
        instance = store.Instance.get_or_none(store.Instance.uuid == server_id)
        if instance is not None and instances.is_live(instance, settings):
            continue
        with store.serialized(store.PLACEMENT_LOCK):
            C = store.Container
            on_it = C.select(C.id).where(C.instance == server_id)
            store.Exec.delete().where(store.Exec.container.in_(on_it)).execute()
            counts = {
                model.__name__.lower() + "s": model.delete().where(model.instance == server_id).execute()
                for model in (C, store.Network, store.Volume, store.ImagePresence)
            }
            store.Instance.delete().where(store.Instance.uuid == server_id).execute()
            PoolMember.delete().where(PoolMember.id == member.id).execute()
        log.warning(
            "server %s was deleted outside Moorage and its agent is silent: forgot it and what ran on "
            "it (%s)",
            server_id,
            ", ".join(f"{n} {kind}" for kind, n in counts.items()),
        )
        forgotten += 1
    return forgotten


_reaper = None


def start_reaper(settings) -> None:
    """Run the reaper in this worker (every worker does; one at a time acts, by lease)."""
    global _reaper
    provider = provider_for(settings)
    if not provider.can_grow or _reaper is not None:
        return
    import gevent

    if not log.handlers and not logging.getLogger().handlers:
        # the pool's decisions (boots, deletions) are the operator's business: to stderr, the
        # gateway's log, unless logging is configured otherwise
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s [%(process)d] %(name)s %(levelname)s %(message)s")
        )
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    interval = float(settings.placement.get("reap_interval", 2) or 2)
    holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    def loop() -> None:
        last_sweep = 0.0
        while True:
            try:
                if take_lease("reaper", holder, ttl=max(10.0, interval * 5)):
                    reap_once(settings, provider)
                    if time.monotonic() - last_sweep > ORPHAN_SWEEP_SECONDS:
                        last_sweep = time.monotonic()
                        sweep_orphans(settings, provider)
            except Exception:  # noqa: BLE001 (the reaper must outlive any one failure)
                log.exception("instance pool reaper pass failed")
            finally:
                store.release_connection()
            gevent.sleep(interval)

    _reaper = gevent.spawn(loop)
