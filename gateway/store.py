"""The store: Moorage's one map of instances and the objects placed on them.

peewee on SQLite (WAL) by default, PostgreSQL for several gateway replicas. Nothing else in
the gateway keeps state, so workers and replicas stay interchangeable. Transactions are
short and never span network I/O: under gevent, sqlite3 blocks the whole worker.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import unquote, urlparse

import peewee
from playhouse.pool import PooledPostgresqlDatabase

database = peewee.DatabaseProxy()

INSTANCE_UP = "up"
INSTANCE_DOWN = "down"
INSTANCE_DRAINING = "draining"


def utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC).replace(tzinfo=None)


class JSONField(peewee.TextField):
    def db_value(self, value):
        return None if value is None else json.dumps(value, sort_keys=True)

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(peewee.Model):
    class Meta:
        database = database


class SchemaVersion(BaseModel):
    """One row: the schema version this database was last migrated to."""

    version = peewee.IntegerField()


class Instance(BaseModel):
    """A host with a dockerd and a Moorage agent: a Nova instance, or a local/static host."""

    uuid = peewee.CharField(primary_key=True, max_length=64)
    provider = peewee.CharField(default="static", max_length=32)
    agent_url = peewee.CharField(max_length=255)
    # Issued by the gateway at registration; the agent refuses any request without it.
    agent_secret = peewee.CharField(max_length=128)
    capacity = peewee.IntegerField(default=0)  # containers; 0 = no limit
    state = peewee.CharField(default=INSTANCE_UP, max_length=16)
    daemon_version = peewee.CharField(default="", max_length=64)
    api_version = peewee.CharField(default="", max_length=16)
    min_api_version = peewee.CharField(default="", max_length=16)
    facts = JSONField(null=True)  # NCPU, MemTotal, ... as the agent last reported
    registered_at = peewee.DateTimeField(default=utcnow)
    last_heartbeat = peewee.DateTimeField(default=utcnow)
    # Fill order: instances are filled in the order they first registered.
    position = peewee.IntegerField(default=0, index=True)
    # How many container rows (reservations included) name this instance: kept by the database
    # itself, by triggers on the container table (_m_placement_usage), in the statement that
    # inserts, deletes or moves the row. The gateway reads it and never writes it (hence
    # only_save_dirty: saving a loaded instance must not write back a count read earlier).
    container_count = peewee.IntegerField(default=0, constraints=[peewee.SQL("DEFAULT 0")])

    class Meta:
        only_save_dirty = True


class Container(BaseModel):
    """A container the gateway created (or adopted), the project that owns it, where it runs."""

    id = peewee.CharField(primary_key=True, max_length=64)
    project = peewee.CharField(max_length=64, index=True)
    name = peewee.CharField(max_length=255)  # as the tenant sees it, without the leading '/'
    # The daemon's name when it is not the tenant's with the project's suffix (tenancy.names):
    # containers adopted as they were created behind the gateway's back.
    daemon_name = peewee.CharField(max_length=255, null=True)
    instance = peewee.ForeignKeyField(Instance, backref="containers", on_delete="RESTRICT")
    labels = JSONField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    # What the container asked for (HostConfig), counted against the project's quotas (migration 2).
    memory = peewee.BigIntegerField(default=0)  # bytes; 0 = no limit
    nano_cpus = peewee.BigIntegerField(default=0)  # 1e9 = one CPU; 0 = no limit

    class Meta:
        indexes = ((("project", "name"), False),)


class Exec(BaseModel):
    """An exec session, tied to its container (and so to its instance and project)."""

    id = peewee.CharField(primary_key=True, max_length=64)
    container = peewee.ForeignKeyField(Container, backref="execs", on_delete="CASCADE")
    project = peewee.CharField(max_length=64, index=True)
    created_at = peewee.DateTimeField(default=utcnow)


class Network(BaseModel):
    """A user-defined network: the daemon's own ID, the project that made it, the name it sees.

    The daemon's name is rewritten (tenancy.names) so that two projects can each have ``app``."""

    id = peewee.CharField(primary_key=True, max_length=64)
    project = peewee.CharField(max_length=64, index=True)
    name = peewee.CharField(max_length=255)  # as the tenant sees it
    daemon_name = peewee.CharField(max_length=255)
    instance = peewee.ForeignKeyField(Instance, backref="networks", on_delete="RESTRICT")
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("project", "name"), False),)


class Volume(BaseModel):
    """A named volume. Volume names are the daemon's keys, so the daemon's name is rewritten
    per project (tenancy.names); the tenant sees and uses ``name``."""

    daemon_name = peewee.CharField(primary_key=True, max_length=255)
    project = peewee.CharField(max_length=64, index=True)
    name = peewee.CharField(max_length=255)
    instance = peewee.ForeignKeyField(Instance, backref="volumes", on_delete="RESTRICT")
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("project", "name"), True),)


class Quota(BaseModel):
    """An operator's limit for one project and resource (`moorage quota set`), overriding the
    [quotas] defaults of the settings file. -1 lifts the limit for that project."""

    project = peewee.CharField(max_length=64)
    resource = peewee.CharField(max_length=16)  # containers, memory, cpus, volumes, networks, images
    value = peewee.BigIntegerField()  # a count, bytes (memory) or nano-CPUs (cpus); -1 = unlimited

    class Meta:
        primary_key = peewee.CompositeKey("project", "resource")


class QuotaReservation(BaseModel):
    """A create in flight for a resource counted from its own table (volumes, networks,
    images): counted as in use until the create's row is recorded or it fails. Containers
    need none: their placement reservation (a Container row) is what counts."""

    id = peewee.CharField(primary_key=True, max_length=64)
    project = peewee.CharField(max_length=64, index=True)
    resource = peewee.CharField(max_length=16)
    created_at = peewee.DateTimeField(default=utcnow)


class ProjectLock(BaseModel):
    """One row per project, created on demand: SELECT ... FOR UPDATE on it serialises a
    project's quota checks across gateway replicas on PostgreSQL."""

    project = peewee.CharField(primary_key=True, max_length=64)


class ImageRef(BaseModel):
    """A project's reference to an image (gateway.imagemap). Daemon tags are global and image IDs
    are shared by content, so who owns an image lives here, not on the daemons.

    ``reference`` is the tenant's normalized name ("app:1", "reg:5000/team/app:1"), or "" for an
    untagged image the project made or whose tag moved away (it lists as <none>:<none>).
    ``daemon_ref`` is the name Moorage gave it on the daemons ("moorage/p-<project>/...", see
    imagemap.daemon_ref), "" for an untagged one. Public images (operator-published base
    images) have project "" and daemon_ref == reference."""

    project = peewee.CharField(max_length=64, index=True)
    reference = peewee.CharField(max_length=512)
    daemon_ref = peewee.CharField(max_length=512)
    image_id = peewee.CharField(max_length=80, index=True)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("project", "reference", "image_id"), True),)


class ImagePresence(BaseModel):
    """Which instances hold which image (by ID): where to copy an image from when a container
    lands on an instance that lacks it (images follow containers)."""

    image_id = peewee.CharField(max_length=80)
    instance = peewee.ForeignKeyField(Instance, backref="images", on_delete="CASCADE")

    class Meta:
        indexes = ((("image_id", "instance"), True),)


MODELS = [
    SchemaVersion,
    Instance,
    Container,
    Exec,
    Network,
    Volume,
    Quota,
    QuotaReservation,
    ProjectLock,
    ImageRef,
    ImagePresence,
]


# Migrations: index i upgrades schema version i to i+1. A newer gateway upgrades an older
# database in place (`moorage db upgrade`, also run at `serve` start) without losing a row.
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
    from gateway.placement import pool

    pool.migrate(db)


# Placement at scale (issue 5's benchmark: 10,000 instances, 1,000,000 containers). Unnumbered
# (it was written beside _m5_pool); it comes after it.
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
                    UPDATE "instance" SET "container_count" = "container_count" - 1 WHERE "uuid" = OLD.instance_id;
                END IF;
                IF TG_OP IN ('INSERT', 'UPDATE') THEN
                    UPDATE "instance" SET "container_count" = "container_count" + 1 WHERE "uuid" = NEW.instance_id;
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
        plus = 'UPDATE "instance" SET "container_count" = "container_count" + 1 WHERE "uuid" = NEW."instance_id";'
        minus = 'UPDATE "instance" SET "container_count" = "container_count" - 1 WHERE "uuid" = OLD."instance_id";'
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


MIGRATIONS: list[Callable[[peewee.Database], None]] = [
    _m0_initial,
    _m1_networks_volumes,
    _m2_container_daemon_name,
    _m3_quotas,
    _m4_images,
    _m5_pool,
    _m_placement_usage,
]
SCHEMA_VERSION = len(MIGRATIONS)

_init_lock = threading.Lock()

# PostgreSQL advisory lock keys (pg_advisory_xact_lock): one for schema migrations (replicas
# starting together), one that serialises placement decisions across replicas.
MIGRATION_LOCK = 0x4D6F6F7200000001
PLACEMENT_LOCK = 0x4D6F6F7200000002

# Connections per gateway worker to PostgreSQL (a pool; each request checks one out).
PG_POOL_SIZE = int(os.environ.get("MOORAGE_PG_POOL", "20"))


def cooperative() -> bool:
    """Under gevent's monkey-patching (the gunicorn worker): make psycopg2 yield to other
    greenlets while it waits on PostgreSQL (psycogreen), so one slow query never blocks the
    worker. True if gevent is patched. Call it before any PostgreSQL connection is opened."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover
        return False
    if not monkey.is_module_patched("socket"):
        return False
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
    return True


def _greenlet_local_state() -> peewee._ConnectionState | None:
    """peewee keeps its connection and transaction stack in a ``threading.local`` subclass
    bound when peewee was imported. Imported before gevent patched ``threading`` (gunicorn's
    master imports it), that class is the C thread-local: every greenlet of a worker would
    share one connection and one transaction stack. Under gevent, a greenlet-local state."""
    try:
        from gevent import local as gevent_local
        from gevent import monkey
    except ImportError:  # pragma: no cover
        return None
    if not monkey.is_module_patched("threading"):
        return None

    class _GreenletState(peewee._ConnectionState, gevent_local.local):
        pass

    return _GreenletState()


def _pg_params(url: str) -> tuple[str, dict]:
    parsed = urlparse(url)
    params: dict = {}
    if parsed.hostname:
        params["host"] = parsed.hostname
    if parsed.port:
        params["port"] = parsed.port
    if parsed.username:
        params["user"] = unquote(parsed.username)
    if parsed.password:
        params["password"] = unquote(parsed.password)
    for pair in filter(None, parsed.query.split("&")):
        key, _, value = pair.partition("=")
        params[unquote(key)] = unquote(value)
    return unquote(parsed.path.lstrip("/")), params


def open_database(url: str) -> peewee.Database:
    """Open the database at ``url`` (``sqlite:////abs/path.db`` or ``postgresql://...``).

    PostgreSQL gets a pool of connections per process; under gevent, peewee's connection
    state is made greenlet-local so that each request (greenlet) uses its own connection
    (checked out on first use, returned by :func:`release_connection`)."""
    scheme = urlparse(url).scheme
    if scheme.startswith("sqlite"):
        path = url.split("://", 1)[1]
        if path.startswith("/"):
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        db = peewee.SqliteDatabase(
            path,
            pragmas={
                "busy_timeout": 10000,
                "journal_mode": "wal",
                "foreign_keys": 1,
                "synchronous": "normal",
            },
            check_same_thread=False,
        )
    elif scheme in ("postgres", "postgresql"):
        name, params = _pg_params(url)
        params.setdefault("connect_timeout", 10)
        # stale_timeout: a pooled connection is recycled after 5 minutes; timeout: a request
        # waits up to 30 s for a free connection rather than failing at once.
        db = PooledPostgresqlDatabase(
            name, max_connections=PG_POOL_SIZE, stale_timeout=300, timeout=30, **params
        )
        state = _greenlet_local_state()
        if state is not None:
            db._state = state
    else:
        raise ValueError(f"unsupported database URL {url!r}: use sqlite:////path or postgresql://...")
    return db


def is_postgres(db: peewee.Database | None = None) -> bool:
    return isinstance(db if db is not None else database.obj, peewee.PostgresqlDatabase)


def write_transaction():
    """A transaction that reads, then writes. On SQLite it takes the write lock up front
    (BEGIN IMMEDIATE): a deferred one that reads first cannot upgrade while another writer
    holds the lock, and fails at once ("database is locked") instead of waiting its turn."""
    db = database.obj
    return db.atomic("IMMEDIATE") if isinstance(db, peewee.SqliteDatabase) else db.atomic()


@contextlib.contextmanager
def serialized(lock_key: int) -> Iterator[None]:
    """A write transaction that no other holder of ``lock_key`` interleaves with, in any
    process or replica: BEGIN IMMEDIATE on SQLite (the database's one write lock), a
    transaction-scoped advisory lock on PostgreSQL. Keep it short and free of network I/O."""
    db = database.obj
    if isinstance(db, peewee.SqliteDatabase):
        with db.atomic("IMMEDIATE"):
            yield
        return
    with db.atomic():
        if is_postgres(db):
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
        yield


def lock_project(project: str) -> None:
    """Inside a transaction: serialise with every other quota decision for ``project``.
    On PostgreSQL a row lock (SELECT ... FOR UPDATE) on the project's lock row, made on
    demand; SQLite's BEGIN IMMEDIATE (see :func:`serialized`) already serialises writers."""
    if not is_postgres():
        return
    ProjectLock.insert(project=project).on_conflict_ignore().execute()
    ProjectLock.select().where(ProjectLock.project == project).for_update().get()


def release_connection() -> None:
    """Return this request's (greenlet's) PostgreSQL connection to the pool. A no-op on
    SQLite (one connection per worker) and when none is open or a transaction is."""
    db = database.obj
    if db is None or not is_postgres(db) or db.is_closed() or db.in_transaction():
        return
    db.close()


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


def close() -> None:
    """Close every connection this process holds (before gunicorn forks its workers)."""
    db = database.obj
    if db is None:
        return
    if isinstance(db, PooledPostgresqlDatabase):
        db.close_all()
    elif not db.is_closed():
        db.close()


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
