"""Placement's locks on PostgreSQL (gateway/placement/scheduler.py): with dedicated tenancy a
decision locks its own project only, so projects decide in parallel, and claims of a free
instance take one more lock, after the project's, under which the claim re-checks that the
instance is still free. With shared tenancy every decision still takes the one lock.

Each test holds a lock from a connection of its own (as another replica's decision would) and
watches a real place() on a throwaway PostgreSQL (tests/pgserver.py) wait for it or not."""

from __future__ import annotations

import threading

import psycopg2
import pytest

from gateway import config, store
from gateway.errors import DockerError
from gateway.placement import PlacementRequest, place

WAIT = 0.5  # seconds a decision that is not held up must have finished within (it takes ms)


@pytest.fixture
def settings(postgres_url):
    s = config.Settings(gateway=config.GatewaySettings(database=postgres_url))
    assert s.placement.tenancy == "dedicated"  # the default
    store.init(s.gateway.database)
    yield s
    store.close()


@pytest.fixture
def other(postgres_url):
    """Another session on the same database: another replica's decision, in a transaction."""
    conn = psycopg2.connect(postgres_url)
    yield conn
    conn.close()


def hold(conn, key) -> None:
    keys = key if isinstance(key, tuple) else (key,)
    with conn.cursor() as cur:
        cur.execute(f"SELECT pg_advisory_xact_lock({', '.join(['%s'] * len(keys))})", keys)


def project_lock(project: str) -> tuple[int, int]:
    return store.project_lock_key(store.PROJECT_PLACEMENT_KIND, project)


def add_instance(uuid, position, project=None, capacity=5):
    store.Instance.create(
        uuid=uuid,
        agent_url=f"tcp://127.0.0.1:{2000 + position}",
        agent_secret="s-" + uuid,
        capacity=capacity,
        position=position,
        project=project,
    )


class Decision:
    """place() in a thread of its own (its own pooled connection), its outcome kept."""

    def __init__(self, settings, project, **kw):
        self.result: str | None = None
        self.error: DockerError | None = None
        request = PlacementRequest(project=project, name="", labels={}, **kw)

        def run():
            try:
                self.result = place(request, settings).instance.uuid
            except DockerError as exc:
                self.error = exc
            finally:
                store.release_connection()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def done_within(self, seconds: float) -> bool:
        self.thread.join(seconds)
        return not self.thread.is_alive()


def owner(uuid):
    return store.Instance.get_by_id(uuid).project


def test_the_key_is_stable_and_postgres_sized():
    kind, key = project_lock("p")
    assert kind == store.PROJECT_PLACEMENT_KIND < 2**31
    assert project_lock("p") == (kind, key)  # the same in every process: a CRC, not hash()
    keys = {project_lock(f"project-{i}")[1] for i in range(2000)}
    assert all(-(2**31) <= k < 2**31 for k in keys) and min(keys) < 0 < max(keys)


def test_two_projects_decide_in_parallel(settings, other):
    add_instance("a", 0, project="p")
    add_instance("b", 1, project="q")
    hold(other, project_lock("p"))  # a decision of p's, in another replica, not yet committed
    try:
        q = Decision(settings, "q")
        assert q.done_within(WAIT), "q's decision waited for p's lock"
        assert q.result == "b"
        p = Decision(settings, "p")
        assert not p.done_within(WAIT), "p's decision did not wait for p's own lock"
    finally:
        other.rollback()
    assert p.done_within(10) and p.result == "a"


def test_a_claim_waits_for_the_claims_lock_and_a_decision_on_its_own_instance_does_not(settings, other):
    add_instance("b", 1, project="q")
    add_instance("c", 2)
    hold(other, store.CLAIMS_LOCK)
    try:
        q = Decision(settings, "q")
        assert q.done_within(WAIT) and q.result == "b"
        r = Decision(settings, "r")  # owns nothing: must claim c
        assert not r.done_within(WAIT), "a claim did not wait for the claims lock"
    finally:
        other.rollback()
    assert r.done_within(10) and r.result == "c" and owner("c") == "r"


def test_a_claim_rechecks_under_the_claims_lock_that_the_instance_is_free(settings, other):
    """Another project claims c while this decision waits for the claims lock: it takes the
    next free instance, never c (the free instances are read under the lock)."""
    add_instance("c", 2)
    add_instance("d", 3)
    hold(other, store.CLAIMS_LOCK)
    try:
        s = Decision(settings, "s")
        assert not s.done_within(WAIT)
        with other.cursor() as cur:  # what the other replica's claim writes
            cur.execute("UPDATE instance SET project = 'r', claimed_at = now() WHERE uuid = 'c'")
    finally:
        other.commit()
    assert s.done_within(10) and s.result == "d"
    assert (owner("c"), owner("d")) == ("r", "s")


def test_a_pinned_claim_of_an_instance_claimed_meanwhile_is_404(settings, other):
    add_instance("c", 2)
    hold(other, store.CLAIMS_LOCK)
    try:
        s = Decision(settings, "s", pinned="c")  # read c free, then waits to claim it
        assert not s.done_within(WAIT)
        with other.cursor() as cur:
            cur.execute("UPDATE instance SET project = 'r', claimed_at = now() WHERE uuid = 'c'")
    finally:
        other.commit()
    assert s.done_within(10) and s.result is None
    assert s.error is not None and s.error.status == 404 and "no such instance: c" in s.error.message
    assert owner("c") == "r" and store.Container.select().count() == 0


def test_many_projects_claiming_at_once_never_share_an_instance(settings):
    for i in range(6):
        add_instance(f"i{i}", i)
    decisions = [Decision(settings, f"p{n}") for n in range(12)]
    assert all(d.done_within(20) for d in decisions)
    placed = {d.result: f"p{n}" for n, d in enumerate(decisions) if d.result is not None}
    assert len(placed) == 6, [d.error for d in decisions]  # six instances, six distinct claims
    assert all(owner(uuid) == project for uuid, project in placed.items())
    refused = [d.error for d in decisions if d.error is not None]
    assert len(refused) == 6 and all(e.status == 503 and "no free instance" in e.message for e in refused)
    C = store.Container
    for uuid, project in placed.items():
        assert [row.project for row in C.select().where(C.instance == uuid)] == [project]


def test_shared_tenancy_keeps_one_lock_for_every_project(settings, other):
    settings.placement.tenancy = "shared"
    add_instance("a", 0)
    hold(other, store.PLACEMENT_LOCK)
    try:
        q = Decision(settings, "q")
        assert not q.done_within(WAIT), "a shared-tenancy decision did not wait for the one lock"
    finally:
        other.rollback()
    assert q.done_within(10) and q.result == "a" and owner("a") is None
