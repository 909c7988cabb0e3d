"""The instance registry: which instances are live, what their agents report, and where
their published ports are reached.

Agents register and heartbeat through the agent API (gateway/agentapi.py), authenticated by
their own secrets: the operator's registration secret to register, the issued per-agent
secret to heartbeat.
"""

from __future__ import annotations

import datetime as _dt
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from typing import Generic, TypeVar
from urllib.parse import urlsplit

import peewee

from gateway import metrics, store
from gateway.errors import DockerError
from gateway.tenancy import names
from relay.upstream import Endpoint

log = logging.getLogger("moorage.instances")

T = TypeVar("T")


class Kept(Generic[T]):
    """A value worked out at most once per ``seconds`` in this worker, for the store it was
    read from (tests open several stores in one process): what many requests ask and the
    store answers alike for a while, such as the live instances, the agents' ports, the
    fleet's capacity, or (a value of None, for its side effect) the instance census."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._held: tuple[object, float, T] | None = None  # (store, when, value)

    def get(
        self,
        compute: Callable[[], T],
        *,
        seconds: float | None = None,
        fresh: bool = False,
        keep: Callable[[T], bool] = lambda value: True,
    ) -> T:
        """The value kept, else ``compute()`` (always with ``fresh``), kept unless ``keep``
        says otherwise; ``seconds`` overrides how long for this call."""
        now, db = time.monotonic(), store.database.obj
        held = self._held
        ttl = self.seconds if seconds is None else seconds
        if not fresh and held is not None and held[0] is db and now - held[1] < ttl:
            return held[2]
        value = compute()
        self._held = (db, now, value) if keep(value) else None
        return value

    def clear(self) -> None:
        self._held = None


def _live_where(settings):
    horizon = store.utcnow() - _dt.timedelta(seconds=settings.gateway.heartbeat_timeout)
    return (
        store.Instance.state.in_([store.INSTANCE_UP, store.INSTANCE_DRAINING])
        & ~store.Instance.daemon_down
        & (store.Instance.last_heartbeat >= horizon)
    )


LIVE_CACHE_SECONDS = 1.0
_live_cache: Kept[list[store.Instance]] = Kept(LIVE_CACHE_SECONDS)


def live_instances(settings, *, fresh: bool = False) -> list[store.Instance]:
    """Instances that are up or draining and heard from recently, in fill order: a draining
    instance takes no new container (placement reads the store itself) but its containers
    still run, and every merged view shows them.

    Kept for a second per worker: lists and system calls ask on every request, and a
    second's staleness only delays a new instance's first listing (placement always reads
    the store itself, in its transaction)."""

    def read() -> list[store.Instance]:
        Inst = store.Instance
        return list(Inst.select().where(_live_where(settings)).order_by(Inst.position, Inst.uuid))

    # An empty answer is never kept: it would refuse work for a second after the first agent
    # registers.
    return list(_live_cache.get(read, fresh=fresh, keep=bool))


def live_uuids(settings) -> list[str]:
    """The live instances' UUIDs (as ``live_instances``, read now): for who needs to know
    which are live, not their rows (loading every live row, its facts parsed, costs tens of
    milliseconds at 1,000 instances; bench/README.md, bench/scale)."""
    Inst = store.Instance
    return [uuid for (uuid,) in Inst.select(Inst.uuid).where(_live_where(settings)).tuples()]


def by_uuid(uuids: list[str]) -> dict[str, store.Instance]:
    """These instances' rows, read now (a statement per 500)."""
    Inst, found = store.Instance, {}
    for start in range(0, len(uuids), 500):
        found.update((i.uuid, i) for i in Inst.select().where(Inst.uuid.in_(uuids[start : start + 500])))
    return found


_api_versions: Kept[tuple[str, ...]] = Kept(LIVE_CACHE_SECONDS)


def live_api_versions(settings) -> tuple[str, ...]:
    """The API versions the live instances' daemons speak (each once), kept a second per
    worker as the live instances are: what a request body's translation asks on every create
    (gateway/context.py), a few rows rather than every live instance's."""

    def read() -> tuple[str, ...]:
        Inst = store.Instance
        rows = (
            Inst.select(Inst.api_version).where(_live_where(settings) & (Inst.api_version != "")).distinct()
        )
        return tuple(sorted(v for (v,) in rows.tuples()))

    return _api_versions.get(read, keep=bool)


_capacity_kept: Kept[tuple[int, int]] = Kept(LIVE_CACHE_SECONDS)


def capacity(settings, project: str | None = None) -> tuple[int, int]:
    """(NCPU, MemTotal) of the live instances (up or draining) added up, as their agents last
    reported them: ``project``'s own (dedicated tenancy: what its daemon is; read each time,
    an aggregate over its instances through the project index, so that a claim shows at
    once), else every one (kept a second per worker, as the live instances are). One
    aggregate in the store either way: no instance row is loaded, no JSON parsed here."""

    def read() -> tuple[int, int]:
        horizon = store.utcnow() - _dt.timedelta(seconds=settings.gateway.heartbeat_timeout)
        return store.live_capacity(horizon, project)

    return read() if project is not None else _capacity_kept.get(read)


def project_instances(settings, project: str) -> list[store.Instance]:
    """The live instances (up or draining) a project owns (dedicated tenancy), in fill order.
    Read from the store every time, not cached: a create that has just claimed an instance is
    followed at once by lists that must show its container, in any worker."""
    horizon = store.utcnow() - _dt.timedelta(seconds=settings.gateway.heartbeat_timeout)
    return store.project_live_instances(project, horizon)


def count_by_state(settings) -> dict[str, int]:
    """How many instances are in each state; "silent": up or draining but not heard from
    within the heartbeat timeout (counted there, not under its state)."""
    horizon = store.utcnow() - _dt.timedelta(seconds=settings.gateway.heartbeat_timeout)
    counts = dict.fromkeys((store.INSTANCE_UP, store.INSTANCE_DRAINING, store.INSTANCE_DOWN, "silent"), 0)
    rows = store.Instance.select(
        store.Instance.state, store.Instance.daemon_down, store.Instance.last_heartbeat
    ).tuples()
    for state, daemon_down, last in rows:
        if daemon_down:
            state = store.INSTANCE_DOWN
        elif last < horizon:
            state = "silent"
        counts[state] = counts.get(state, 0) + 1
    return counts


def heartbeats_missed(settings) -> dict[str, int]:
    """Per instance that is up or draining: how many heartbeats it has missed in a row once
    silent past the heartbeat timeout (0 while it is heard from in time). An instance marked
    down by its agent (its dockerd stopped) still heartbeats, so it counts 0 here."""
    now = store.utcnow()
    timeout = settings.gateway.heartbeat_timeout
    interval = settings.gateway.heartbeat_interval or 1.0
    rows = (
        store.Instance.select(store.Instance.uuid, store.Instance.last_heartbeat)
        .where(
            store.Instance.state.in_([store.INSTANCE_UP, store.INSTANCE_DRAINING])
            & ~store.Instance.daemon_down
        )
        .tuples()
    )
    missed = {}
    for uuid, last in rows:
        silent = (now - last).total_seconds()
        missed[uuid] = int(silent // interval) if silent > timeout else 0
    return missed


_missed_seen: set[str] = set()


def publish_census(settings) -> None:
    """Set the instances-by-state gauge and each instance's missed heartbeats (gateway/metrics.py).
    An instance gone from the store since the last census reads 0: the gauge's value lives in
    every worker's file, so it is zeroed rather than removed."""
    for state, count in count_by_state(settings).items():
        metrics.INSTANCES.labels(state).set(count)
    missed = heartbeats_missed(settings)
    for uuid in _missed_seen - missed.keys():
        metrics.HEARTBEATS_MISSED.labels(uuid).set(0)
    for uuid, count in missed.items():
        metrics.HEARTBEATS_MISSED.labels(uuid).set(count)
    _missed_seen.clear()
    _missed_seen.update(missed)


def is_live(instance: store.Instance, settings) -> bool:
    horizon = store.utcnow() - _dt.timedelta(seconds=settings.gateway.heartbeat_timeout)
    return (
        instance.state == store.INSTANCE_UP
        and not instance.daemon_down
        and instance.last_heartbeat >= horizon
    )


def agent_ports() -> frozenset[int]:
    """The TCP ports every registered agent listens on (its agent URL's): the daemon's port
    forwarding would take a container publishing one of them the gateway's traffic to that
    agent, so policy refuses them (gateway/policy/ports.py).

    Read from the store at most once a second per worker: every create asks, the answer reads
    every instance's row (bench/scale: 11 ms of CPU a create at 1,000 instances), and agents'
    ports change only when an agent registers with another one."""

    return _agent_ports.get(_read_agent_ports)


def _read_agent_ports() -> frozenset[int]:
    urls = [url for (url,) in store.Instance.select(store.Instance.agent_url).distinct().tuples()]
    if len(_port_of_url) > 4 * len(urls) + 1024:
        _port_of_url.clear()  # agents that moved away
    return frozenset(port for port in map(_agent_port, urls) if port is not None)


def parse_agent_urls() -> None:
    """Parse every registered agent's URL now (a worker's start), so that its first create
    does not: the ports are not kept from here, and the first create still reads them."""
    _read_agent_ports()


def _agent_port(url: str) -> int | None:
    """The TCP port of an agent URL, None for another scheme or a URL that does not parse;
    each URL parsed once per worker (a reload reads every instance's URL: at 1,000 instances
    parsing them again was most of a create's first-in-a-second cost)."""
    if url not in _port_of_url:
        try:
            agent = Endpoint.parse(url)
        except ValueError:
            _port_of_url[url] = None
        else:
            _port_of_url[url] = int(agent.address[1]) if agent.scheme == "tcp" else None
    return _port_of_url[url]


_agent_ports: Kept[frozenset[int]] = Kept(1.0)
_port_of_url: dict[str, int | None] = {}


def fact_fields(data: dict) -> dict:
    """What an agent's report (registration or heartbeat) sets on its instance's row: the
    daemon's versions and facts, and the capacity, those the report gives."""
    model = store.Instance
    out: dict = {}
    for field in (model.daemon_version, model.api_version, model.min_api_version):
        if data.get(field.name):
            out[field] = str(data[field.name])
    if isinstance(data.get("facts"), dict):
        out[model.facts] = data["facts"]
    if "capacity" in data:
        out[model.capacity] = max(0, int(data.get("capacity") or 0))
    return out


def apply_facts(instance: store.Instance, data: dict) -> None:
    for field, value in fact_fields(data).items():
        setattr(instance, field.name, value)


def register(presented: str, data: dict, settings, previous: str = "") -> tuple[bool, str]:
    """A static host's agent registers with the operator's secret; (created, agent secret).

    An agent is bound to its instance: while an instance's agent is live, registering under
    its UUID again needs that agent's own secret (``previous``, which a restarted agent keeps
    in its state directory). The operator's secret alone would otherwise let whoever holds it
    (any static host's agent configuration) take over another instance's traffic."""
    expected = settings.gateway.registration_secret
    if not expected or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise DockerError(401, "agent registration refused: wrong or missing registration secret")
    uuid = str(data.get("uuid", "")).strip()
    agent_url = str(data.get("agent_url", "")).strip()
    if not uuid or not agent_url:
        raise DockerError(400, "agent registration needs uuid and agent_url")
    try:
        Endpoint.parse(agent_url)
    except ValueError as exc:
        raise DockerError(400, str(exc)) from exc
    agent_secret = secrets.token_urlsafe(32)
    now = store.utcnow()
    with store.write_transaction():
        instance = store.Instance.get_or_none(store.Instance.uuid == uuid)
        created = instance is None
        if (
            instance is not None
            and instance.agent_secret
            and is_live(instance, settings)
            and not hmac.compare_digest(previous.encode(), instance.agent_secret.encode())
        ):
            log.warning(
                "refused a registration for live instance %s from an agent at %s without its agent's "
                "secret (its agent is at %s)",
                uuid,
                agent_url,
                instance.agent_url,
            )
            raise DockerError(
                409,
                f"instance {uuid} is registered and its agent is answering: registering it again "
                "needs that agent's secret; if the instance was rebuilt, wait for its old agent's "
                "heartbeats to lapse, or remove it first (`moorage instances remove`)",
            )
        if created:
            last = store.Instance.select(peewee.fn.MAX(store.Instance.position)).scalar() or 0
            instance = store.Instance(uuid=uuid, position=last + 1, registered_at=now)
        instance.provider = str(data.get("provider") or instance.provider or "static")
        instance.agent_url = agent_url
        instance.agent_secret = agent_secret
        if instance.state != store.INSTANCE_DRAINING:
            instance.state = store.INSTANCE_UP
        instance.daemon_down = False  # an agent registers once its daemon answers
        instance.last_heartbeat = now
        apply_facts(instance, data)
        instance.save(force_insert=created)
    return created, agent_secret


# The heartbeat's UPDATE, its SQL compiled once per field set (daemon up with its facts, down).
_heartbeat_update = store.PreparedUpdate(store.Instance, store.Instance.uuid)


def heartbeat(uuid: str, presented: str, data: dict, settings=None) -> None:
    """An agent's heartbeat: its daemon's state and facts, and the containers it holds."""
    instance = store.instance_agent(uuid)
    if instance is None:
        raise DockerError(404, f"unknown instance {uuid}: register first")
    if not hmac.compare_digest(presented.encode(), instance.agent_secret.encode()):
        raise DockerError(401, "heartbeat refused: wrong agent secret; register again")
    # The daemon's health only: the state (up or draining) is the operator's and the reaper's.
    daemon_down = data.get("daemon") == "down"
    fields = {store.Instance.last_heartbeat: store.utcnow(), store.Instance.daemon_down: daemon_down}
    if not daemon_down:
        fields.update(fact_fields(data))
    # The next heartbeat writes it again (store/db.py); on PostgreSQL one round trip: BEGIN,
    # SET LOCAL, the update and the COMMIT in one query string (store.with_commit).
    with store.unhurried_commit():
        store.with_commit(_heartbeat_update(fields, uuid))
    if isinstance(data.get("containers"), list):
        dedicated = settings is not None and settings.placement.tenancy != "shared"
        reconcile(instance, data["containers"], dedicated=dedicated)


# A row younger than this is left alone: its create may still be in flight (reserved, or
# created on the daemon after the agent listed it).
RECONCILE_GRACE = _dt.timedelta(seconds=60)


def reconcile(instance: store.Instance, on_daemon: list[dict], *, dedicated: bool = False) -> dict[str, int]:
    """The daemon is the truth about which containers exist; the map follows it.

    Rows whose container the daemon no longer has (removed by --rm, or behind the gateway's
    back) are dropped; labelled containers the map lacks (created while the gateway was
    down, or by an earlier database) are adopted with their project. Nothing else is touched.

    ``dedicated``: what an agent reports can only touch its instance's own project's records.
    A container labelled for another project (or on an instance no project owns) is not
    adopted, and is logged: an agent is believed about its own instance and project only.
    """
    C = store.Container
    daemon = {c["id"]: c for c in on_daemon if isinstance(c, dict) and c.get("id") and c.get("project")}
    present = set(daemon)  # (what the daemon holds, adoptable or not)
    if dedicated:
        foreign = [c for c in daemon.values() if c["project"] != instance.project]
        for c in foreign:
            del daemon[c["id"]]
        if foreign:
            log.warning(
                "the agent of instance %s (project %s) reported %d container(s) of other projects "
                "(%s): not adopted",
                instance.uuid,
                instance.project or "none",
                len(foreign),
                ", ".join(sorted({c["project"] for c in foreign}))[:200],
            )
    horizon = store.utcnow() - RECONCILE_GRACE
    with store.write_transaction():
        # (ID, creation time) only: a heartbeat a second per 10 instances reads its instance's
        # rows, and whole rows (their labels parsed) took 2.5 times as long as the pairs
        known = store.container_times_on(instance.uuid)
        gone = [cid for cid, created in known.items() if cid not in present and created < horizon]
        if gone:
            store.with_commit(C.delete().where(C.id.in_(gone)))
        adopted = [c for cid, c in daemon.items() if cid not in known]
        if adopted:
            # A listing taken before a removal reaches the store after it: not adopted again.
            removed = store.removed_lately([c["id"] for c in adopted])
            adopted = [c for c in adopted if c["id"] not in removed]
        for c in adopted:
            daemon_name = c.get("name", "")
            tenant_name = names.to_tenant(c["project"], daemon_name)
            store.with_commit(
                C.insert(
                    id=c["id"],
                    project=c["project"],
                    name=tenant_name,
                    daemon_name=daemon_name if tenant_name == daemon_name else None,
                    instance=instance.uuid,
                    labels=c.get("labels") or None,
                ).on_conflict_ignore()
            )
    return {"dropped": len(gone), "adopted": len(adopted)}


def fact(instance: store.Instance, key: str):
    """One of the facts the instance's agent last reported (NCPU, MemTotal, ...), or None."""
    facts = instance.facts
    return facts.get(key) if isinstance(facts, dict) else None


_roots: tuple[float, tuple[str, ...]] = (0.0, ())


def daemon_roots() -> tuple[str, ...]:
    """The data roots (``DockerRootDir``) the agents report for their daemons: paths the
    gateway removes from error messages (gateway/errors.py scrub_paths). Cached for a few
    seconds, since every error answer asks."""
    global _roots
    now = time.monotonic()
    if now - _roots[0] < 10:
        return _roots[1]
    found = set()
    try:
        rows = list(store.Instance.select(store.Instance.facts).tuples())
    except (peewee.PeeweeException, *store.BUSY):
        return _roots[1]  # (an error answer while the store is away: the last roots known)
    for (facts,) in rows:
        root = facts.get("DockerRootDir") if isinstance(facts, dict) else None
        if isinstance(root, str) and root.startswith("/") and root.strip("/"):
            found.add(root)
    _roots = (now, tuple(sorted(found)))
    return _roots[1]


def published_address(instance: store.Instance) -> str:
    """The address clients reach an instance's published ports on: what its agent was told
    (``moorage agent --public-address``), else the host the gateway reaches its agent at."""
    return str(fact(instance, "PublicAddress") or urlsplit(instance.agent_url).hostname or "")


def publish_bindings(bindings, address: str, key: str):
    """A container's port bindings (inspect's ``[{"HostIp", "HostPort"}]`` with key "HostIp"
    for one port, or ps's ``Ports`` with key "IP") with "every address" of the published
    address's family replaced by that address, as Swarm classic showed them: ``docker port``
    and ``docker ps`` then print where the port is reached. The other family's binding stays
    as dockerd reports it (one line each, as dockerd prints them)."""
    if not address or not isinstance(bindings, list):
        return bindings
    any_address = ("::",) if ":" in address else ("0.0.0.0", "")
    return [
        {**binding, key: address}
        if isinstance(binding, dict) and binding.get(key) in any_address
        else binding
        for binding in bindings
    ]
