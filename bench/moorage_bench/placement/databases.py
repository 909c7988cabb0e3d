"""Scratch databases (SQLite, a throwaway PostgreSQL), their schema made by the store's own
migrations and seeded in bulk.
"""

from __future__ import annotations

import contextlib
import io
import os
import time

from .data import CONTAINER_COLUMNS, INSTANCE_COLUMNS, Population, quota_rows

# --- databases -------------------------------------------------------------------------------------


class ScratchDB:
    """One scratch database, its schema made by the store's own migrations, seeded in bulk."""

    kind = ""

    def __init__(self):
        self.db = None
        self.seed_seconds = 0.0
        self.note = ""

    def bind(self):
        from gateway import store

        store.database.initialize(self.db)

    def seed(self, pop: Population) -> None:
        from gateway import store

        t0 = time.perf_counter()
        store.init(self.url)
        self.db = store.database.obj
        self._bulk(pop)
        self.seed_seconds = time.perf_counter() - t0

    def close(self) -> None:
        from gateway import store

        if self.db is not None:
            store.database.initialize(self.db)
            store.close()


class SQLiteDB(ScratchDB):
    kind = "sqlite"

    def __init__(self, workdir: str):
        super().__init__()
        self.path = os.path.join(workdir, "placement.db")
        self.url = f"sqlite:///{self.path}"

    def _bulk(self, pop: Population) -> None:
        conn = self.db.connection()
        marks = ",".join("?" * len(INSTANCE_COLUMNS))
        # A large page cache for the load only (one transaction that touches every index);
        # the decisions then run with SQLite's default, as the gateway does.
        default_cache = self.db.execute_sql("PRAGMA cache_size").fetchone()[0]
        self.db.execute_sql("PRAGMA cache_size = -1000000")
        with self.db.atomic():
            conn.executemany(
                f"INSERT INTO instance ({','.join(INSTANCE_COLUMNS)}) VALUES ({marks})",
                ((*r[:10], str(r[10]), str(r[11]), r[12]) for r in pop.instance_rows()),
            )
            conn.executemany(
                f"INSERT INTO container ({','.join(CONTAINER_COLUMNS)}) VALUES "
                f"({','.join('?' * len(CONTAINER_COLUMNS))})",
                pop.container_rows(),
            )
            conn.executemany("INSERT INTO quota (project, resource, value) VALUES (?, ?, ?)", quota_rows(pop))
        self.db.execute_sql(f"PRAGMA cache_size = {int(default_cache)}")
        # No ANALYZE: the gateway never runs it, so the planner works as it would in production.
        self.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        self.note = f"{os.path.getsize(self.path) / 1e6:.0f} MB file, WAL, synchronous=normal, no ANALYZE"


class PostgresDB(ScratchDB):
    kind = "postgres"

    def __init__(self):
        super().__init__()
        from tests import pgserver

        # Durable commits as in devstack and production (the test server runs with fsync off).
        self.server = pgserver.ThrowawayPostgres(settings={"fsync": "on", "shared_buffers": "128MB"})
        self.url = ""

    def seed(self, pop: Population) -> None:
        t0 = time.perf_counter()
        self.server.start()
        self.url = self.server.createdb("placement")
        started = time.perf_counter() - t0
        super().seed(pop)
        self.note += f"; server start (initdb) {started:.0f} s, not counted"

    def _copy(self, cur, table: str, columns, rows) -> None:
        def text(v):
            if v is None:
                return "\\N"
            return str(v)

        buf = io.StringIO()
        for count, r in enumerate(rows, 1):
            buf.write("\t".join(text(v) for v in r))
            buf.write("\n")
            if count % 100_000 == 0:
                buf.seek(0)
                cur.copy_expert(f'COPY "{table}" ({",".join(columns)}) FROM STDIN', buf)
                buf = io.StringIO()
        buf.seek(0)
        cur.copy_expert(f'COPY "{table}" ({",".join(columns)}) FROM STDIN', buf)

    def _bulk(self, pop: Population) -> None:
        from gateway import store

        with self.db.atomic():
            # A bulk load: no per-row triggers (the container count, foreign keys), then the
            # counts recomputed as the migration does. Through the triggers, each instance row
            # would be rewritten once per container, leaving a table hundreds of times its size.
            self.db.execute_sql("SET LOCAL session_replication_role = replica")
            cur = self.db.cursor()
            self._copy(cur, "instance", INSTANCE_COLUMNS, pop.instance_rows())
            self._copy(cur, "container", CONTAINER_COLUMNS, pop.container_rows())
            self._copy(cur, "quota", ("project", "resource", "value"), quota_rows(pop))
            store.recount_containers(self.db)
        # What autovacuum would soon do after a bulk load: fresh statistics and visibility map.
        conn = self.db.connection()
        old = conn.autocommit
        conn.autocommit = True
        try:
            self.db.execute_sql("VACUUM ANALYZE")
        finally:
            conn.autocommit = old
        size = self.db.execute_sql("SELECT pg_database_size(current_database())").fetchone()[0]
        self.note = f"{size / 1e6:.0f} MB database, fsync on, VACUUM ANALYZE after the load"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            super().close()
        self.server.stop()
