"""The PostgreSQL pool's check-out (gateway/store/db.py PooledStore): an idle connection is
handed out again without a round trip to the server, and one the server has ended since it was
returned is never handed out: the next request gets a new connection and its query succeeds."""

from __future__ import annotations

import time

import psycopg2
import pytest

from gateway import store
from gateway.store.db import PooledStore


@pytest.fixture
def db(postgres_url):
    store.init(postgres_url)
    assert isinstance(store.database.obj, PooledStore)
    yield store.database.obj
    store.close()


def backend_pid(db) -> int:
    return db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]


def statements_of(postgres_url, pid: int) -> tuple:
    """The session ``pid``'s last statement and when its state last changed, from
    pg_stat_activity: both move with every statement it runs."""
    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT state_change, query FROM pg_stat_activity WHERE pid = %s", (pid,))
        return cur.fetchone()


def test_an_idle_connection_is_handed_out_without_a_statement(db, postgres_url):
    pid = backend_pid(db)
    db.close()  # back to the pool
    before = statements_of(postgres_url, pid)
    db.connect()  # check-out: the pool decides whether the connection is still good
    after = statements_of(postgres_url, pid)
    assert after == before, f"the check-out sent {after[1]!r} to the server"
    assert backend_pid(db) == pid  # the same connection, reused
    db.close()


def test_a_connection_the_server_ended_is_not_handed_out(db, postgres_url):
    pid = backend_pid(db)
    db.close()
    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert cur.fetchone()[0]
    # The server's goodbye reaches the pooled socket before the next check-out.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
            if cur.fetchone()[0] == 0:
                break
        time.sleep(0.05)
    new_pid = backend_pid(db)  # a query on a fresh connection, not an error
    assert new_pid != pid
    db.close()
