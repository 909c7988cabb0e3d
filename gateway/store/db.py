"""The database: one connection (SQLite, WAL) or a pool of them (PostgreSQL) per process,
and the transactions every writer uses.

peewee on SQLite by default, PostgreSQL for several gateway replicas. Transactions are short
and never span network I/O: under gevent, sqlite3 blocks the whole worker.
"""

from __future__ import annotations

import contextlib
import os
import select
import zlib
from collections.abc import Iterator
from urllib.parse import unquote, urlparse

import peewee
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase

from gateway import generations

# Every model binds to this proxy; init() (gateway/store/schema.py) points it at a database.
database = peewee.DatabaseProxy()

# PostgreSQL advisory lock keys (pg_advisory_xact_lock): one for schema migrations (replicas
# starting together), one that serialises placement decisions across replicas (shared tenancy:
# every instance is every project's), and the two dedicated tenancy splits it into
# (gateway/placement/scheduler.py): one lock per project for its own decisions, and one for
# every claim of a free instance and every boot of the pool, always taken after the project's.
MIGRATION_LOCK = 0x4D6F6F7200000001
PLACEMENT_LOCK = 0x4D6F6F7200000002
CLAIMS_LOCK = 0x4D6F6F7200000005
# A project's placement lock is of PostgreSQL's two-key form (this kind, the project's hash):
# that key space never overlaps the one-key locks above (PostgreSQL's documentation says so).
PROJECT_PLACEMENT_KIND = 0x4D6F5002


def project_lock_key(kind: int, project: str) -> tuple[int, int]:
    """A two-key advisory lock for ``project``: (kind, a stable 32-bit hash of the project,
    the same in every process and replica, as PostgreSQL's signed int4). Two projects may
    share a key (a CRC collision): they then only wait for each other, as every project did
    under one lock."""
    digest = zlib.crc32(project.encode())
    return kind, (digest - (1 << 32) if digest >= 1 << 31 else digest)


# Connections per gateway worker to PostgreSQL (a pool; each request checks one out).
PG_POOL_SIZE = int(os.environ.get("MOORAGE_PG_POOL", "20"))
PG_POOL_WAIT = 30.0  # seconds a request waits for a free pooled connection (then BUSY: 503)


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


class SqliteStore(peewee.SqliteDatabase):
    """The SQLite store, which says when its rows may have changed: after every statement
    that is not a SELECT and after every commit and rollback, the store's generation changes
    (gateway/generations.py), for every process that shares the file. Reads kept by
    gateway/store/kept.py are good only while it is unchanged. After, not before: a reader
    that reads the generation, then the rows, and meets a commit in between has kept the old
    rows under a generation the commit has since changed."""

    def execute_sql(self, sql, params=None):
        try:
            return super().execute_sql(sql, params)
        finally:
            if sql.lstrip()[:6].upper() != "SELECT":
                generations.store_changed()

    def commit(self):
        try:
            return super().commit()
        finally:
            generations.store_changed()

    def rollback(self):
        try:
            return super().rollback()
        finally:
            generations.store_changed()


def _original_select():
    """select.select as the kernel gives it, not gevent's: a zero-timeout poll never blocks,
    and gevent's would hand the worker to its hub for it."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover
        return select.select
    return monkey.get_original("select", "select")


_select = _original_select()


class PooledStore(PooledPostgresqlDatabase):
    """peewee's pool, whose check-out asks the server `SELECT 1` on every idle connection it
    hands out: a round trip for every request and every background pass before its first
    statement (the most frequent statement in PostgreSQL's log of a `run`). An idle
    connection has nothing to read: a server that ends it (a restart, an administrator's
    terminate, its idle timeout) sends a notice and closes, which makes the socket readable.
    So the check is a poll of the socket, no round trip; a connection with something to read
    is closed and not handed out.
    A transaction left open, or a status psycopg2 does not know, is left to peewee's check
    (a rollback, or the connection discarded)."""

    # -- statements sent with the next one ---------------------------------------------------
    # A transaction's BEGIN, and what it takes before its first read (an advisory lock, a SET
    # LOCAL), have no answer anyone reads: each was a round trip of its own, two or three of
    # a placement decision's eight (bench/scale). They wait here and go with the transaction's
    # next statement, in one query string (PostgreSQL runs its statements in order, and the
    # block BEGIN opens stays open after it); a transaction that sends nothing sends no BEGIN.
    # Kept with the greenlet's connection state, so each request has its own.

    _BEGIN = ("BEGIN", ())

    def _deferred(self) -> list[tuple[str, tuple]]:
        state = self._state  # pyright: ignore[reportAttributeAccessIssue] (peewee keeps it private)
        pending = getattr(state, "deferred", None)
        if pending is None or getattr(state, "deferred_conn", None) is not state.conn:
            pending = state.deferred = []  # pyright: ignore[reportAttributeAccessIssue]
            state.deferred_conn = state.conn  # pyright: ignore[reportAttributeAccessIssue]
        return pending

    def defer(self, sql: str, params: tuple = ()) -> None:
        """Send ``sql`` (no result read) with the next statement of this transaction."""
        self._deferred().append((sql, tuple(params)))

    def begin(self, isolation_level=None):
        if isolation_level is not None or getattr(self, "_isolation_level", None):
            return super().begin(isolation_level)
        if self.is_closed():
            self.connect()
        pending = self._deferred()
        pending.clear()
        pending.append(self._BEGIN)

    def execute_sql(self, sql, params=None):
        pending = self._deferred() if not self.is_closed() else None
        if pending:
            # One string, its parameters in order (psycopg2 interpolates them client-side).
            sql = "; ".join([*(s for s, _ in pending), sql])
            params = tuple(p for _, ps in pending for p in ps) + tuple(params or ())
            pending.clear()
        return super().execute_sql(sql, params)

    def commit(self):
        pending = self._deferred() if not self.is_closed() else []
        if pending == [self._BEGIN]:
            pending.clear()  # nothing was sent: nothing to commit
            return
        self.execute_sql("COMMIT")

    def rollback(self):
        pending = self._deferred() if not self.is_closed() else []
        began = bool(pending) and pending[0] == self._BEGIN
        pending.clear()
        if not began:  # else the transaction never reached the server: nothing to undo
            super().rollback()

    def _is_closed(self, conn):
        if conn.closed:
            return True
        adapter = self._adapter  # pyright: ignore[reportAttributeAccessIssue] (peewee's driver adapter)
        if adapter.txn_status(conn) != adapter.txn_idle:
            return super()._is_closed(conn)
        try:
            readable, _, _ = _select([conn], [], [], 0)
        except (OSError, ValueError):
            readable = [conn]
        if readable:
            with contextlib.suppress(Exception):
                conn.close()
            return True
        return False


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
        table = generations.path_for(url)
        if table:
            generations.open_table(table)  # every process that writes the file says so there
        db = SqliteStore(
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
        db = PooledStore(
            name, max_connections=PG_POOL_SIZE, stale_timeout=300, timeout=PG_POOL_WAIT, **params
        )
        state = _greenlet_local_state()
        if state is not None:
            db._state = state  # pyright: ignore[reportAttributeAccessIssue] (peewee keeps it private)
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
def unhurried_commit() -> Iterator[None]:
    """A transaction whose commit does not wait for its WAL record to reach the disk: on
    PostgreSQL, synchronous_commit off for it alone. For writes that the next report makes
    again, such as an agent's heartbeat every interval: a crash may lose the last of them (the
    database stays consistent), and nothing else waits behind their flushes. At 1,000 instances
    they are 100 commits a second, each an fsync that the placement decisions' own commits
    queued behind. On SQLite, a plain transaction."""
    db = database.obj
    with db.atomic():
        if not isinstance(db, peewee.SqliteDatabase):
            _with_next("SET LOCAL synchronous_commit = off")
        yield


@contextlib.contextmanager
def serialized(lock_key: int | tuple[int, int]) -> Iterator[None]:
    """A write transaction that no other holder of ``lock_key`` interleaves with, in any
    process or replica: BEGIN IMMEDIATE on SQLite (the database's one write lock), a
    transaction-scoped advisory lock on PostgreSQL (one 64-bit key, or two 32-bit keys:
    :func:`project_lock_key`). Keep it short and free of network I/O."""
    db = database.obj
    if isinstance(db, peewee.SqliteDatabase):
        with db.atomic("IMMEDIATE"):
            yield
        return
    with db.atomic():
        advisory_lock(lock_key)
        yield


def advisory_lock(lock_key: int | tuple[int, int]) -> None:
    """Inside a transaction: wait for, and hold until it ends, a PostgreSQL advisory lock. A
    no-op on SQLite, whose write transaction is the database's one write lock already.
    Holders of several take them in one order (gateway/placement/scheduler.py says which)."""
    db = database.obj
    if not is_postgres(db):
        return
    keys = lock_key if isinstance(lock_key, tuple) else (lock_key,)
    # Taken with the transaction's next statement, before that statement runs.
    _with_next(f"SELECT pg_advisory_xact_lock({', '.join(['%s'] * len(keys))})", keys)


def with_commit(query: peewee.Query) -> None:
    """A write whose answer no one reads (a row inserted, an event recorded), made inside the
    caller's transaction: on PostgreSQL it goes with the transaction's next statement, its
    commit most often, rather than on a round trip of its own (PooledStore.defer). It is still
    made before anything after it in the transaction, and a failure fails the transaction at
    that statement. Outside a transaction, and on SQLite, it is made at once."""
    sql, params = query.sql()
    _with_next(sql, params)


def _with_next(sql: str, params=()) -> None:
    """``sql``, whose answer no one reads: inside a PostgreSQL transaction, sent with its next
    statement (PooledStore.defer); else at once."""
    db = database.obj
    if isinstance(db, PooledStore) and db.in_transaction():
        db.defer(sql, tuple(params))
    else:
        db.execute_sql(sql, params)


def release_connection() -> None:
    """Return this request's (greenlet's) PostgreSQL connection to the pool. A no-op on
    SQLite (one connection per worker) and when none is open or a transaction is."""
    db = database.obj
    if db is None or not is_postgres(db) or db.is_closed() or db.in_transaction():
        return
    db.close()


def close() -> None:
    """Close every connection this process holds (before gunicorn forks its workers)."""
    db = database.obj
    if db is None:
        return
    if isinstance(db, PooledPostgresqlDatabase):
        db.close_all()
    elif not db.is_closed():
        db.close()


# The database cannot be reached (restarting, its connection lost, locked past the timeout):
# a request that meets one of these is answered 503, try again, not 500 (gateway/app.py).
UNAVAILABLE: tuple[type[Exception], ...] = (peewee.OperationalError, peewee.InterfaceError)
# Every pooled connection stayed in use past PG_POOL_WAIT (a replica with more requests in
# flight than MOORAGE_PG_POOL can serve): 503 too, saying so (gateway/app.py), never a 500.
BUSY: tuple[type[Exception], ...] = (MaxConnectionsExceeded,)
