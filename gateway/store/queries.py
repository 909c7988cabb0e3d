"""Named queries: what the layers above ask of the store, so that no SQL or model query chain
sits in a handler or a service. Each function is one short statement or transaction."""

from __future__ import annotations

import datetime as _dt
import re

from gateway.store.db import database, is_postgres, with_commit, write_transaction
from gateway.store.kept import KeptReads
from gateway.store.mesh import MeshPort
from gateway.store.models import (
    INSTANCE_DRAINING,
    INSTANCE_UP,
    RESERVATION_PREFIX,
    ClientCert,
    Container,
    Exec,
    Instance,
    Network,
    NetworkAddress,
    ProjectLock,
    Quota,
    RemovedContainer,
    Trust,
    Volume,
    utcnow,
)
from gateway.store.prepared import Prepared


def lock_project(project: str) -> None:
    """Inside a transaction: serialise with every other quota decision for ``project``.
    On PostgreSQL a row lock (SELECT ... FOR UPDATE) on the project's lock row, made on
    demand; SQLite's BEGIN IMMEDIATE (gateway/store/db.py serialized) already serialises writers."""
    if not is_postgres():
        return
    ProjectLock.insert(project=project).on_conflict_ignore().execute()
    ProjectLock.select().where(ProjectLock.project == project).for_update().get()


# -- containers ---------------------------------------------------------------------------------


def _placed(project: str):
    """The project's containers (reservations not included), each with its instance: every
    caller of a resolved container forwards to its instance next, so it comes in the same query."""
    C = Container
    return (
        C.select(C, Instance)
        .join(Instance)
        .where((C.project == project) & ~(C.id.startswith(RESERVATION_PREFIX)))
    )


# The two reads behind nearly every container request (resolve.container), prepared: see
# gateway/store/prepared.py for why.
_container_by_id = Prepared(lambda project, cid: _placed(project).where(Container.id == cid).limit(1))
_container_by_name = Prepared(
    lambda project, name: (
        _placed(project).where(Container.name == name).order_by(Container.created_at.desc()).limit(1)
    )
)


# Two reads of every placement decision (its name check and its quotas), prepared as well: a
# decision is several statements' worth of peewee's SQL building otherwise (bench/scale).
_container_named = Prepared(
    lambda project, name: (
        Container.select().where((Container.project == project) & (Container.name == name)).limit(1)
    )
)
_quota_rows = Prepared(lambda project: Quota.select().where(Quota.project == project))


def quota_rows(project: str) -> list[Quota]:
    """The operator's quotas set for ``project`` (`moorage quota set`)."""
    return _quota_rows(project)


_FULL_ID = re.compile(r"[0-9a-f]{64}")

_kept_containers: KeptReads[Container | None] = KeptReads()


def placed_container(project: str, ref: str) -> Container | None:
    """The project's placed container whose full ID, else whose name, is ``ref`` (kept a
    moment while the store is unchanged, gateway/store/kept.py: not to be changed in place)."""

    def read() -> Container | None:
        # Only a full ID (64 hex digits, as dockerd makes them) can match by ID: a name, the
        # form clients send as often, goes straight to the name's read, not after a miss.
        by_id = _container_by_id(project, ref) if _FULL_ID.fullmatch(ref) else []
        found = by_id or _container_by_name(project, ref)
        return found[0] if found else None

    return _kept_containers.get((project, ref), read)


def rename_container(container_id: str, name: str) -> None:
    """The container is called ``name`` now, by the tenant and (with the project's suffix) by
    its daemon."""
    Container.update(name=name, daemon_name=None).where(Container.id == container_id).execute()


def placed_containers_by_prefix(project: str, prefix: str, limit: int = 2) -> list[Container]:
    """Up to ``limit`` of the project's placed containers whose ID starts with ``prefix``."""
    return list(_placed(project).where(Container.id.startswith(prefix)).limit(limit))


# An instance's agent (its UUID, agent secret and project), and its containers' (ID, creation
# time): read by every heartbeat (100 a second at 1,000 instances), where building their SQL
# took half the heartbeat's CPU, and the whole instance row (its facts parsed) a third of the rest.
_instance_agent = Prepared(
    lambda uuid: Instance.select(Instance.uuid, Instance.agent_secret, Instance.project).where(
        Instance.uuid == uuid
    )
)
_containers_on = Prepared(
    lambda uuid: (
        Container.select(Container.id, Container.created_at).where(Container.instance == uuid).tuples()
    )
)


def instance_agent(uuid: str) -> Instance | None:
    """Instance ``uuid``'s UUID, agent secret and project only (the rest of the row unread)."""
    rows = _instance_agent(uuid)
    return rows[0] if rows else None


def container_times_on(uuid: str) -> dict[str, _dt.datetime]:
    """The map's containers on instance ``uuid``: ID -> creation time."""
    return dict(_containers_on(uuid))


# A project's instances, read on every list, prune and events request with dedicated tenancy.
_project_instances = Prepared(
    lambda project, horizon: (
        Instance.select()
        .where(
            (Instance.project == project)
            & Instance.state.in_([INSTANCE_UP, INSTANCE_DRAINING])
            & ~Instance.daemon_down
            & (Instance.last_heartbeat >= horizon)
        )
        .order_by(Instance.position, Instance.uuid)
    )
)


_kept_instances: KeptReads[list[Instance]] = KeptReads()


def project_live_instances(project: str, horizon: _dt.datetime) -> list[Instance]:
    """The project's instances that are up or draining and heard from since ``horizon``, in
    fill order (kept a moment while the store is unchanged, gateway/store/kept.py: not to be
    changed in place). A kept list was read with an earlier horizon: it is filtered again with
    this one (an instance falls silent with no write; it speaks again only with one)."""
    rows = _kept_instances.get(project, lambda: _project_instances(project, horizon))
    return [row for row in rows if row.last_heartbeat >= horizon]


def _fact_sql(key: str) -> str:
    """One numeric fact of an instance's ``facts`` (JSON text), 0 when absent or not a number."""
    if is_postgres():
        return (
            f"CASE WHEN json_typeof(facts::json -> '{key}') = 'number' "
            f"THEN (facts::json ->> '{key}')::numeric ELSE 0 END"
        )
    return (
        f"CASE WHEN json_type(facts, '$.{key}') IN ('integer', 'real') "
        f"THEN json_extract(facts, '$.{key}') ELSE 0 END"
    )


def live_capacity(horizon: _dt.datetime, project: str | None = None) -> tuple[int, int]:
    """(NCPU, MemTotal) added up over the instances that are up or draining and heard from
    since ``horizon`` (``project``: that project's only, through its index), as their agents
    last reported them: one aggregate in the database, no instance row or JSON in Python."""
    db = database.obj
    where = f"state IN ({db.param}, {db.param}) AND NOT daemon_down AND last_heartbeat >= {db.param}"
    params: list = [INSTANCE_UP, INSTANCE_DRAINING, horizon]
    if project is not None:
        where, params = f"{where} AND project = {db.param}", [*params, project]
    sql = f'SELECT SUM({_fact_sql("NCPU")}), SUM({_fact_sql("MemTotal")}) FROM "instance" WHERE {where}'
    ncpu, memory = db.execute_sql(sql, params).fetchone()
    return int(ncpu or 0), int(memory or 0)


# How long a removal is remembered (RemovedContainer): far longer than an agent's listing can
# take to reach a reconcile (a heartbeat interval, 10 s by default, and its retries).
REMOVED_KEPT = _dt.timedelta(minutes=5)


def forget_container(container_id: str) -> None:
    """The daemon says it is gone: drop it from the map (its execs go with it, and the mesh's
    ports it held: gateway/store/mesh.py), free the addresses it held on spanning networks, and
    remember the removal for REMOVED_KEPT (removed_lately), forgetting those older than that.
    One transaction: on PostgreSQL one round trip, every statement with the COMMIT."""
    now = utcnow()
    R = RemovedContainer
    with write_transaction():
        with_commit(Container.delete().where(Container.id == container_id))
        with_commit(MeshPort.delete().where(MeshPort.container_id == container_id))
        with_commit(NetworkAddress.delete().where(NetworkAddress.container == container_id))
        with_commit(R.insert(id=container_id, removed_at=now).on_conflict_ignore())
        with_commit(R.delete().where(R.removed_at < now - REMOVED_KEPT))


def removed_lately(ids: list[str]) -> set[str]:
    """Those of ``ids`` the map dropped within REMOVED_KEPT."""
    if not ids:
        return set()
    R = RemovedContainer
    horizon = utcnow() - REMOVED_KEPT
    return {r.id for r in R.select(R.id).where(R.id.in_(ids) & (R.removed_at >= horizon))}


def container_named(project: str, name: str) -> Container | None:
    """The project's container row (a reservation included) holding ``name``."""
    rows = _container_named(project, name)
    return rows[0] if rows else None


# A container's creation time in the map is written once, with its row, and never changed; an
# ID is 256 random bits, never reused. So a time once read is kept, per process and store:
# a merged `ps` whose instances made containers within one second (a burst, `compose up
# --scale`) reads only the IDs it has not seen (at 1,000 instances, reading 600 IDs for every
# such `ps` was 5.7% of a replica's CPU, py-spy). Bounded: cleared whole past CREATED_KEPT.
# A row forgotten and adopted again (a new row, a later time) keeps the first time read here.
CREATED_KEPT = 50_000
_created: dict[str, _dt.datetime] = {}
_created_in: list = [None]  # the database those times were read from


def creation_times(ids: list[str]) -> dict[str, _dt.datetime]:
    """The map's creation time of each container ID (those it has), read in one statement per
    500 IDs not read before."""
    db, convert = database.obj, Container.created_at.python_value
    if _created_in[0] is not db:
        _created.clear()
        _created_in[0] = db
    created = {cid: _created[cid] for cid in ids if cid in _created}
    unread = [cid for cid in ids if cid not in created]
    # Written out: peewee takes longer to build an IN of 500 values than the database to answer it.
    for chunk in range(0, len(unread), 500):
        part = unread[chunk : chunk + 500]
        marks = ", ".join([db.param] * len(part))
        rows = db.execute_sql(f'SELECT "id", "created_at" FROM "container" WHERE "id" IN ({marks})', part)
        created.update((cid, convert(at)) for cid, at in rows)
    if unread:
        if len(_created) + len(unread) > CREATED_KEPT:
            _created.clear()
        _created.update((cid, created[cid]) for cid in unread if cid in created)
    return created


def mine_among(project: str, container_ids: list[str]) -> set[str]:
    """Which of these container IDs are the project's."""
    rows = Container.select(Container.id).where(
        (Container.project == project) & Container.id.in_(container_ids)
    )
    return {row.id for row in rows}


# -- execs --------------------------------------------------------------------------------------


def record_exec(exec_id: str, container_id: str, project: str) -> None:
    row = {Exec.container: container_id, Exec.project: project}
    # An upsert SQLite and PostgreSQL both speak (PostgreSQL has no INSERT OR REPLACE).
    Exec.insert({Exec.id: exec_id, **row}).on_conflict(conflict_target=[Exec.id], update=row).execute()


# -- networks -----------------------------------------------------------------------------------


def network_named(project: str, name: str) -> Network | None:
    return Network.get_or_none((Network.project == project) & (Network.name == name))


def record_network(network_id: str, project: str, name: str, daemon_name: str, instance_uuid: str) -> None:
    row = {
        Network.project: project,
        Network.name: name,
        Network.daemon_name: daemon_name,
        Network.instance: instance_uuid,
    }
    Network.insert({Network.id: network_id, **row}).on_conflict(
        conflict_target=[Network.id], update=row
    ).execute()


def forget_network(network_id: str) -> None:
    Network.delete().where(Network.id == network_id).execute()


def forget_networks(instance_uuid: str, daemon_names: list[str]) -> None:
    """Networks a prune removed from one instance."""
    Network.delete().where(
        (Network.instance == instance_uuid) & Network.daemon_name.in_(daemon_names)
    ).execute()


# -- volumes ------------------------------------------------------------------------------------


def volume_named(project: str, name: str) -> Volume | None:
    """The project's volume by its name, with its instance."""
    return (
        Volume.select(Volume, Instance)
        .join(Instance)
        .where((Volume.project == project) & (Volume.name == name))
        .first()
    )


def record_volume(daemon_name: str, project: str, name: str, instance_uuid: str) -> None:
    Volume.insert(
        daemon_name=daemon_name, project=project, name=name, instance=instance_uuid
    ).on_conflict_ignore().execute()


def forget_volumes(daemon_names: list[str]) -> None:
    Volume.delete().where(Volume.daemon_name.in_(daemon_names)).execute()


# -- client certificates ------------------------------------------------------------------------


def record_cert(
    serial: str, project: str, project_name: str, user_id: str, user_name: str, not_after: _dt.datetime
) -> None:
    ClientCert.create(
        serial=serial,
        project=project,
        project_name=project_name,
        user_id=user_id,
        user_name=user_name,
        not_after=not_after,
    )


def cert(serial: str) -> ClientCert | None:
    return ClientCert.get_or_none(ClientCert.serial == serial)


def certs(project: str | None = None) -> list[ClientCert]:
    """The certificates issued for ``project`` (None: every project's), oldest first."""
    query = ClientCert.select()
    if project is not None:
        query = query.where(ClientCert.project == project)
    return list(query.order_by(ClientCert.created_at, ClientCert.serial))


def revoke_cert(serial: str, project: str | None = None) -> ClientCert | None:
    """Mark the certificate revoked (kept: a revoked serial is refused, not forgotten); None if
    there is no such certificate (of ``project``, when given). Revoking twice keeps the first time."""
    where = ClientCert.serial == serial
    if project is not None:
        where &= ClientCert.project == project
    ClientCert.update(revoked_at=utcnow()).where(where & ClientCert.revoked_at.is_null()).execute()
    return ClientCert.get_or_none(where)


# -- Keystone trusts (gateway/tenancy/trusts.py) -----------------------------------------------


def trust_of(project: str) -> Trust | None:
    return Trust.get_or_none(Trust.project == project)


def record_trust(
    project: str, sealed_id: str, trustor_user_id: str, trustee_user_id: str, roles: list
) -> bool:
    """Keep the project's trust unless one is recorded already (another worker or replica made
    one at the same moment); True if this one was recorded."""
    return bool(
        Trust.insert(
            project=project,
            sealed_id=sealed_id,
            trustor_user_id=trustor_user_id,
            trustee_user_id=trustee_user_id,
            roles=roles,
        )
        .on_conflict_ignore()
        .execute()
        and trust_of(project).sealed_id == sealed_id  # type: ignore[union-attr]
    )


def forget_trust(project: str, sealed_id: str) -> None:
    """Drop the project's trust if it is still this one (Keystone no longer honours it)."""
    Trust.delete().where((Trust.project == project) & (Trust.sealed_id == sealed_id)).execute()


def trusted_projects() -> list[str]:
    return [row.project for row in Trust.select(Trust.project).order_by(Trust.project)]
