"""The schema: migrations from every earlier version, and bringing a database up to date.

Index i of MIGRATIONS upgrades schema version i to i+1. A newer gateway upgrades an older
database in place (`moorage db upgrade`, also run at `serve` start) without losing a row.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import peewee

from gateway.store.db import (
    MIGRATION_LOCK,
    database,
    is_postgres,
    open_database,
    release_connection,
    serialized,
)
from gateway.store.journal import create_journal
from gateway.store.mesh import create_mesh
from gateway.store.models import (
    INSTANCE_UP,
    ClientCert,
    Container,
    Exec,
    ImagePresence,
    ImageRef,
    Instance,
    Network,
    NetworkAddress,
    NetworkMember,
    PoolLease,
    PoolMember,
    ProjectLock,
    Quota,
    QuotaReservation,
    RemovedContainer,
    SchemaVersion,
    ShareReport,
    Trust,
    Volume,
)
from gateway.store.notices import create_notices
from gateway.store.sockets import create_socket_credentials

_init_lock = threading.Lock()


def _m0_initial(db: peewee.Database) -> None:
    db.create_tables([Instance, Container, Exec], safe=True)


def _m1_networks_volumes(db: peewee.Database) -> None:
    db.create_tables([Network, Volume], safe=True)


def _m2_container_daemon_name(db: peewee.Database) -> None:
    from playhouse.migrate import SchemaMigrator, migrate

    columns = {c.name for c in db.get_columns(Container._meta.table_name)}
    if "daemon_name" not in columns:
        migrate(
            SchemaMigrator.from_database(db).add_column(
                Container._meta.table_name, "daemon_name", peewee.CharField(max_length=255, null=True)
            )
        )


def _add_column(db: peewee.Database, table: str, column: str, ddl: str) -> None:
    """ALTER TABLE ... ADD COLUMN, unless the column is there already (an earlier migration
    creates tables from the current models, so a fresh database may have it)."""
    if column in {c.name for c in db.get_columns(table)}:
        return
    db.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {ddl}')


def _m3_quotas(db: peewee.Database) -> None:
    """Quotas: per-project limits, reservations in flight, lock rows; what each container asked for."""
    _add_column(db, "container", "memory", "BIGINT NOT NULL DEFAULT 0")
    _add_column(db, "container", "nano_cpus", "BIGINT NOT NULL DEFAULT 0")
    db.create_tables([Quota, QuotaReservation, ProjectLock], safe=True)


def _m4_images(db: peewee.Database) -> None:
    db.create_tables([ImageRef, ImagePresence], safe=True)


def _m5_pool(db: peewee.Database) -> None:
    """The instance pool's tables: pool_member, pool_lease (gateway/placement/pool.py)."""
    db.create_tables([PoolMember, PoolLease], safe=True)


# Placement at scale (bench/placement: 10,000 instances, 1,000,000 containers). Unnamed by
# number; it runs after _m5_pool.
_COUNT_TRIGGERS = ("container_count_insert", "container_count_delete", "container_count_move")


def recount_containers(db: peewee.Database) -> None:
    """Set every instance's container_count from the container rows: the migration's backfill,
    and the end of a bulk load that bypassed the triggers (bench/placement)."""
    db.execute_sql(
        'UPDATE "instance" SET "container_count" = (SELECT COUNT(*) FROM "container" '
        'WHERE "container"."instance_id" = "instance"."uuid")'
    )


def _m_placement_usage(db: peewee.Database) -> None:
    """instance.container_count, kept by triggers, and the indexes the scheduler's queries use,
    so that a decision reads a few index entries instead of every instance and container row:

    - instance_fill (position, uuid, ...) and instance_spread (container_count, position, uuid),
      both over the instances that are up and have room by their own capacity: fill's and
      spread's choice is the first entry that also passes the heartbeat (and default capacity)
      test;
    - container_project_usage (project, memory, nano_cpus): a project's quota usage from the
      index alone.
    The count is backfilled from the rows; from then on every insert, delete or change of
    instance of a container row updates it in the same statement, whoever issues it."""
    _add_column(db, "instance", "container_count", "INTEGER NOT NULL DEFAULT 0")
    recount_containers(db)
    if is_postgres(db):
        db.execute_sql("""
            CREATE OR REPLACE FUNCTION moorage_container_count() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'UPDATE' AND OLD.instance_id IS NOT DISTINCT FROM NEW.instance_id THEN
                    RETURN NULL;
                END IF;
                IF TG_OP IN ('DELETE', 'UPDATE') THEN
                    UPDATE "instance" SET "container_count" = "container_count" - 1
                    WHERE "uuid" = OLD.instance_id;
                END IF;
                IF TG_OP IN ('INSERT', 'UPDATE') THEN
                    UPDATE "instance" SET "container_count" = "container_count" + 1
                    WHERE "uuid" = NEW.instance_id;
                END IF;
                RETURN NULL;
            END $$""")
        db.execute_sql('DROP TRIGGER IF EXISTS container_count ON "container"')
        db.execute_sql(
            "CREATE TRIGGER container_count AFTER INSERT OR DELETE OR UPDATE OF instance_id "
            'ON "container" FOR EACH ROW EXECUTE FUNCTION moorage_container_count()'
        )
    else:
        # (REPLACE deletes fire no delete trigger in SQLite: nothing replaces container rows.)
        plus = (
            'UPDATE "instance" SET "container_count" = "container_count" + 1 '
            'WHERE "uuid" = NEW."instance_id";'
        )
        minus = (
            'UPDATE "instance" SET "container_count" = "container_count" - 1 '
            'WHERE "uuid" = OLD."instance_id";'
        )
        insert, delete, move = _COUNT_TRIGGERS
        db.execute_sql(f'CREATE TRIGGER IF NOT EXISTS {insert} AFTER INSERT ON "container" BEGIN {plus} END')
        db.execute_sql(f'CREATE TRIGGER IF NOT EXISTS {delete} AFTER DELETE ON "container" BEGIN {minus} END')
        db.execute_sql(
            f'CREATE TRIGGER IF NOT EXISTS {move} AFTER UPDATE OF "instance_id" ON "container" '
            f'WHEN OLD."instance_id" IS NOT NEW."instance_id" BEGIN {minus} {plus} END'
        )
    room = f"state = '{INSTANCE_UP}' AND (capacity <= 0 OR container_count < capacity)"
    # capacity and container_count ride along so that SQLite tests an instance's room on the
    # index entry: instances on the [placement] default capacity (0) are in the index full or not.
    db.execute_sql(
        'CREATE INDEX IF NOT EXISTS "instance_fill" ON "instance" ("position", "uuid", "capacity", '
        f'"container_count") WHERE {room}'
    )
    db.execute_sql(
        'CREATE INDEX IF NOT EXISTS "instance_spread" ON "instance" ("container_count", "position", "uuid") '
        f"WHERE {room}"
    )
    db.execute_sql(
        'CREATE INDEX IF NOT EXISTS "container_project_usage" ON "container" '
        '("project", "memory", "nano_cpus")'
    )


def _m_dedicated(db: peewee.Database) -> None:
    """Dedicated tenancy: which project owns an instance, and which project a boot is for."""
    _add_column(db, "instance", "project", "VARCHAR(64)")
    _add_column(db, "instance", "claimed_at", "TIMESTAMP")
    db.execute_sql('CREATE INDEX IF NOT EXISTS "instance_project" ON "instance" ("project")')
    _add_column(db, "pool_member", "project", "VARCHAR(64)")


def _m_client_certs(db: peewee.Database) -> None:
    """The client certificates the gateway issued (gateway/tenancy/certs.py)."""
    db.create_tables([ClientCert], safe=True)


def _m_trusts(db: peewee.Database) -> None:
    """The nova provider's Keystone trusts, one per project, sealed (gateway/tenancy/trusts.py)."""
    db.create_tables([Trust], safe=True)


def _m_buildkit(db: peewee.Database) -> None:
    """When each instance last served a BuildKit connection (gateway/services/buildkit.py)."""
    _add_column(db, "instance", "buildkit_at", "TIMESTAMP")


def _m_fair_shares(db: peewee.Database) -> None:
    """The workers' fair-share reports (gateway/fairshare.py)."""
    db.create_tables([ShareReport], safe=True)


def _m_spanning_networks(db: peewee.Database) -> None:
    """Networks that span instances (gateway/services/spans.py): a network's subnet, VNI, MTU
    and spec; no instance for a spanning one; its members and address table."""
    from playhouse.migrate import SchemaMigrator, migrate

    table = Network._meta.table_name
    columns = {c.name: c for c in db.get_columns(table)}
    migrator = SchemaMigrator.from_database(db)
    steps = [
        migrator.add_column(table, name, getattr(Network, name))
        for name in ("subnet", "vni", "mtu", "spec")
        if name not in columns
    ]
    if columns["instance_id"].null is False:
        steps.append(migrator.drop_not_null(table, "instance_id"))
    if steps:
        migrate(*steps)
    db.create_tables([NetworkMember, NetworkAddress], safe=True)


def _m_container_publishes(db: peewee.Database) -> None:
    """Whether a container's create published ports (gateway/services/ports.py)."""
    _add_column(db, "container", "publishes", "BOOLEAN")


def _m_span_underlay(db: peewee.Database) -> None:
    """Each instance's underlay address and MTU (agent/registration.py), the DNS a container
    asked for when the gateway pointed it at its instance's responder, and each network
    member's joining (gateway/services/spans.py)."""
    _add_column(db, "instance", "underlay_address", "VARCHAR(64)")
    _add_column(db, "instance", "underlay_mtu", "INTEGER")
    _add_column(db, "container", "dns", "TEXT")
    _add_column(db, "networkmember", "joined", "VARCHAR(32)")


def _m_daemon_health(db: peewee.Database) -> None:
    """An instance's daemon health in a column of its own (Instance.daemon_down): its state
    held both, and a heartbeat that reported the daemon down, then up, turned a draining
    instance back up. A row that was down was up before (nothing else set down)."""
    _add_column(db, "instance", "daemon_down", "BOOLEAN NOT NULL DEFAULT FALSE")
    db.execute_sql(
        f"UPDATE instance SET daemon_down = {db.param}, state = {db.param} WHERE state = {db.param}",
        (True, "up", "down"),
    )


def _m_instance_churn(db: peewee.Database) -> None:
    """Instance rows take an update per heartbeat (100 a second at 1,000 instances). On
    PostgreSQL a row of about 1.7 KB (its facts) filled its page, so no update could stay on
    its page (HOT): each one added an entry to every index of the table, the placement indexes
    grew to 35 times their rows between vacuums, and a decision's candidate query (a bitmap AND
    over them) took 1.7 ms at 1,000 instances (0.05 ms in the database with the index below,
    on the same bloated table). Pages now keep half their room
    for the next versions of their rows (fillfactor, for pages written from now on), and a
    project's instances in fill order with room have an index of their own: a dedicated
    decision reads its first entry."""
    if not isinstance(db, peewee.SqliteDatabase):
        db.execute_sql('ALTER TABLE "instance" SET (fillfactor = 50)')
    room = f"state = '{INSTANCE_UP}' AND (capacity <= 0 OR container_count < capacity)"
    db.execute_sql(
        'CREATE INDEX IF NOT EXISTS "instance_project_fill" ON "instance" ("project", "position", "uuid") '
        f"WHERE {room}"
    )


def _m_removed_containers(db: peewee.Database) -> None:
    """Containers the map dropped lately (RemovedContainer): a heartbeat's listing taken before
    a `docker rm` adopted the container again, and its name stayed taken for up to a minute."""
    db.create_tables([RemovedContainer], safe=True)


MIGRATIONS: list[Callable[[peewee.Database], None]] = [
    _m0_initial,
    _m1_networks_volumes,
    _m2_container_daemon_name,
    _m3_quotas,
    _m4_images,
    _m5_pool,
    _m_placement_usage,
    _m_dedicated,
    _m_client_certs,
    _m_trusts,
    _m_buildkit,
    _m_fair_shares,
    create_journal,  # the notification outbox and the event journal (gateway/store/journal.py)
    create_socket_credentials,  # the tenant sockets' credentials (gateway/store/sockets.py)
    create_notices,  # projects' webhooks and their deliveries (gateway/store/notices.py)
    create_mesh,  # the routing mesh's ports (gateway/store/mesh.py)
    _m_spanning_networks,
    _m_container_publishes,
    _m_span_underlay,
    _m_daemon_health,
    _m_instance_churn,
    _m_removed_containers,
]
SCHEMA_VERSION = len(MIGRATIONS)


def init(url: str, *, migrate: bool = True) -> peewee.Database:
    """Bind the models to ``url`` and bring the schema up to date."""
    with _init_lock:
        db = open_database(url)
        database.initialize(db)
        if migrate:
            for attempt in range(5):
                try:
                    upgrade()
                    break
                except peewee.OperationalError as exc:
                    # A new SQLite file: the first connection switching it to WAL needs it to
                    # itself for a moment, and SQLite may refuse that without waiting.
                    if "locked" not in str(exc) or attempt == 4:
                        raise
                    db.close()
                    time.sleep(0.2 * (attempt + 1))
        return db


def current_version() -> int:
    db = database.obj
    if not db.table_exists(SchemaVersion._meta.table_name):
        return 0
    row = SchemaVersion.select().first()
    return row.version if row else 0


def upgrade() -> tuple[int, int]:
    """Apply pending migrations; returns (from_version, to_version).

    One transaction that replicas starting together cannot interleave (an advisory lock on
    PostgreSQL, whose DDL is transactional; BEGIN IMMEDIATE on SQLite): the second finds the
    schema up to date."""
    db = database.obj
    with serialized(MIGRATION_LOCK):
        db.create_tables([SchemaVersion], safe=True)
        start = current_version()
        for step in MIGRATIONS[start:]:
            step(db)
        if start < SCHEMA_VERSION:
            SchemaVersion.delete().execute()
            SchemaVersion.create(version=SCHEMA_VERSION)
    release_connection()
    return start, SCHEMA_VERSION
