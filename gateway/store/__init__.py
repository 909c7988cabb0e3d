"""The store: Moorage's one map of instances and the objects placed on them.

peewee on SQLite (WAL) by default, PostgreSQL for several gateway replicas. Nothing else in
the gateway keeps state, so workers and replicas stay interchangeable. The package is the only
place that speaks SQL or builds model queries for the layers above it:

- ``db``: the connection (pool), transactions, advisory locks;
- ``models``: the tables;
- ``schema``: migrations and ``init``;
- ``queries``: named queries the services and the domain use.
"""

from gateway.store.db import (
    MIGRATION_LOCK,
    PG_POOL_SIZE,
    PLACEMENT_LOCK,
    close,
    cooperative,
    database,
    is_postgres,
    open_database,
    release_connection,
    serialized,
    write_transaction,
)
from gateway.store.models import (
    ACTIVE,
    BUILDING,
    DELETING,
    DRAINING,
    FAILED,
    INSTANCE_DOWN,
    INSTANCE_DRAINING,
    INSTANCE_UP,
    MODELS,
    RESERVATION_PREFIX,
    BaseModel,
    Container,
    Exec,
    ImagePresence,
    ImageRef,
    Instance,
    JSONField,
    Network,
    PoolLease,
    PoolMember,
    ProjectLock,
    Quota,
    QuotaReservation,
    SchemaVersion,
    Volume,
    utcnow,
)
from gateway.store.queries import container_named, creation_times, forget_container, lock_project
from gateway.store.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    current_version,
    init,
    recount_containers,
    upgrade,
)

__all__ = [
    "ACTIVE",
    "BUILDING",
    "DELETING",
    "DRAINING",
    "FAILED",
    "INSTANCE_DOWN",
    "INSTANCE_DRAINING",
    "INSTANCE_UP",
    "MIGRATIONS",
    "MIGRATION_LOCK",
    "MODELS",
    "PG_POOL_SIZE",
    "PLACEMENT_LOCK",
    "RESERVATION_PREFIX",
    "SCHEMA_VERSION",
    "BaseModel",
    "Container",
    "Exec",
    "ImagePresence",
    "ImageRef",
    "Instance",
    "JSONField",
    "Network",
    "PoolLease",
    "PoolMember",
    "ProjectLock",
    "Quota",
    "QuotaReservation",
    "SchemaVersion",
    "Volume",
    "close",
    "container_named",
    "cooperative",
    "creation_times",
    "current_version",
    "database",
    "forget_container",
    "init",
    "is_postgres",
    "lock_project",
    "open_database",
    "recount_containers",
    "release_connection",
    "serialized",
    "upgrade",
    "utcnow",
    "write_transaction",
]
