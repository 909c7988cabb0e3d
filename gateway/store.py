"""The store: Moorage's one map of instances and the objects placed on them.

peewee on SQLite (WAL) by default, PostgreSQL for several gateway replicas. Nothing else in
the gateway keeps state, so workers and replicas stay interchangeable. Transactions are
short and never span network I/O: under gevent, sqlite3 blocks the whole worker.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
from collections.abc import Callable
from urllib.parse import urlparse

import peewee
from playhouse.db_url import connect as _connect_url

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


class Container(BaseModel):
    """A container the gateway created (or adopted), the project that owns it, where it runs."""

    id = peewee.CharField(primary_key=True, max_length=64)
    project = peewee.CharField(max_length=64, index=True)
    name = peewee.CharField(max_length=255)  # as the tenant sees it, without the leading '/'
    instance = peewee.ForeignKeyField(Instance, backref="containers", on_delete="RESTRICT")
    labels = JSONField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("project", "name"), False),)


class Exec(BaseModel):
    """An exec session, tied to its container (and so to its instance and project)."""

    id = peewee.CharField(primary_key=True, max_length=64)
    container = peewee.ForeignKeyField(Container, backref="execs", on_delete="CASCADE")
    project = peewee.CharField(max_length=64, index=True)
    created_at = peewee.DateTimeField(default=utcnow)


MODELS = [SchemaVersion, Instance, Container, Exec]


# Migrations: index i upgrades schema version i to i+1. A newer gateway upgrades an older
# database in place (`moorage db upgrade`, also run at `serve` start) without losing a row.
def _m0_initial(db: peewee.Database) -> None:
    db.create_tables([Instance, Container, Exec], safe=True)


def _m_pool(db: peewee.Database) -> None:
    """The instance pool's tables: pool_member, pool_lease (gateway/placement/pool.py)."""
    from gateway.placement import pool

    pool.migrate(db)


MIGRATIONS: list[Callable[[peewee.Database], None]] = [_m0_initial, _m_pool]
SCHEMA_VERSION = len(MIGRATIONS)

_init_lock = threading.Lock()


def open_database(url: str) -> peewee.Database:
    """Open the database at ``url`` (``sqlite:////abs/path.db`` or ``postgresql://...``)."""
    scheme = urlparse(url).scheme
    if scheme.startswith("sqlite"):
        path = url.split("://", 1)[1]
        if path.startswith("/"):
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        db = peewee.SqliteDatabase(
            path,
            pragmas={"journal_mode": "wal", "busy_timeout": 10000, "foreign_keys": 1, "synchronous": "normal"},
            check_same_thread=False,
        )
    elif scheme in ("postgres", "postgresql"):
        db = _connect_url(url)
    else:
        raise ValueError(f"unsupported database URL {url!r}: use sqlite:////path or postgresql://...")
    return db


def init(url: str, *, migrate: bool = True) -> peewee.Database:
    """Bind the models to ``url`` and bring the schema up to date."""
    with _init_lock:
        db = open_database(url)
        database.initialize(db)
        if migrate:
            upgrade()
        return db


def current_version() -> int:
    db = database.obj
    if not db.table_exists(SchemaVersion._meta.table_name):
        return 0
    row = SchemaVersion.select().first()
    return row.version if row else 0


def upgrade() -> tuple[int, int]:
    """Apply pending migrations; returns (from_version, to_version)."""
    db = database.obj
    with db.atomic():
        db.create_tables([SchemaVersion], safe=True)
        start = current_version()
        for step in MIGRATIONS[start:]:
            step(db)
        if start != SCHEMA_VERSION:
            SchemaVersion.delete().execute()
            SchemaVersion.create(version=SCHEMA_VERSION)
    return start, SCHEMA_VERSION
