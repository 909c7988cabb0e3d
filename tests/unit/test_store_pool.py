"""The PostgreSQL pool's check-out (gateway/store/db.py PooledStore): an idle connection is
handed out again without a round trip to the server, and one the server has ended since it was
returned is never handed out: the next request gets a new connection and its query succeeds."""

from __future__ import annotations

import time

import peewee
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


# -- statements sent with the next one (PooledStore.defer) -------------------------------------


@pytest.fixture
def sent(caplog):
    """The query strings the store sends, one per round trip (peewee logs each as it runs it)."""
    import logging

    caplog.set_level(logging.DEBUG, logger="peewee")

    def queries() -> list[str]:
        # peewee logs each statement as its (sql, params) tuple
        return [r.msg[0] for r in caplog.records if r.name == "peewee" and isinstance(r.msg, tuple)]

    return queries


def other_session_can_lock(postgres_url, key: int) -> bool:
    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (key,))
        return cur.fetchone()[0]


def test_begin_and_a_lock_go_with_the_first_read(db, postgres_url, sent):
    key = 0x4D6F6F72000000F1
    with store.serialized(key):
        assert sent() == []  # nothing yet: BEGIN and the lock wait for a statement
        assert db.execute_sql("SELECT 41 + 1").fetchone()[0] == 42
        # The lock is held from that round trip on, before the read ran.
        assert not other_session_can_lock(postgres_url, key)
    assert other_session_can_lock(postgres_url, key)
    queries = sent()
    assert len(queries) == 2, queries
    assert queries[0].startswith("BEGIN; SELECT pg_advisory_xact_lock(")
    assert queries[0].endswith("SELECT 41 + 1")
    assert queries[1] == "COMMIT"


def test_a_transaction_that_sends_nothing_costs_nothing_but_a_lock_is_still_taken(db, postgres_url, sent):
    with db.atomic():
        pass
    assert sent() == []
    with pytest.raises(ZeroDivisionError), db.atomic():
        _ = 1 / 0  # rolled back before anything reached the server: nothing to send
    assert sent() == []
    # A transaction that only takes a lock still waits for it, with its commit.
    with store.serialized(0x4D6F6F72000000F2):
        pass
    assert len(sent()) == 1 and sent()[0].startswith("BEGIN; SELECT pg_advisory_xact_lock(")
    assert sent()[0].endswith("; COMMIT")


def test_a_write_with_the_commit_is_made_before_what_follows_it_and_fails_with_it(db, postgres_url, sent):
    from gateway.store import Quota

    Quota.delete().where(Quota.project == "p-defer").execute()
    with db.atomic():
        store.with_commit(Quota.insert(project="p-defer", resource="volumes", value=3))
        with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM quota WHERE project = 'p-defer'")
            assert cur.fetchone()[0] == 0  # not committed
        # A read after it in the transaction sees it: it went first, in the same round trip.
        assert Quota.select().where(Quota.project == "p-defer").count() == 1
    assert Quota.select().where(Quota.project == "p-defer").count() == 1
    # A write that fails fails its transaction at the statement it went with: nothing stays.
    with pytest.raises(peewee.IntegrityError), db.atomic():
        store.with_commit(Quota.insert(project="p-defer", resource="networks", value=1))
        store.with_commit(Quota.insert(project="p-defer", resource="volumes", value=4))  # a duplicate
    assert [q.resource for q in Quota.select().where(Quota.project == "p-defer")] == ["volumes"]
    assert db.execute_sql("SELECT 1").fetchone()[0] == 1  # the connection goes on
    Quota.delete().where(Quota.project == "p-defer").execute()
