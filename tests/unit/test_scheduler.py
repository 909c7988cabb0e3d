"""Placement strategies and filters, against a real store: SQLite and PostgreSQL."""

import datetime as dt
import threading

import peewee
import pytest

from gateway import config, store
from gateway.errors import DockerError
from gateway.placement import PlacementRequest, place, release
from gateway.placement.scheduler import confirm


@pytest.fixture
def settings(db_url):
    s = config.Settings(
        gateway=config.GatewaySettings(database=db_url), placement=config.PlacementSettings(tenancy="shared")
    )
    store.init(s.gateway.database)
    yield s
    store.close()


def add_instance(uuid, position, capacity=0, state="up", age=0, daemon_down=False):
    return store.Instance.create(
        uuid=uuid,
        agent_url=f"tcp://127.0.0.1:{2000 + position}",
        agent_secret="s",
        capacity=capacity,
        state=state,
        daemon_down=daemon_down,
        position=position,
        last_heartbeat=store.utcnow() - dt.timedelta(seconds=age),
    )


def req(**kw):
    return PlacementRequest(project="p", name="", labels={}, **kw)


def test_fill_uses_each_instance_before_the_next(settings):
    for i in range(3):
        add_instance(f"i{i}", i, capacity=2)
    placed = [place(req(), settings).instance.uuid for _ in range(6)]
    assert placed == ["i0", "i0", "i1", "i1", "i2", "i2"]
    with pytest.raises(DockerError) as exc:
        place(req(), settings)
    assert exc.value.status == 503 and "full" in exc.value.message
    assert store.Container.select().count() == 6  # nothing recorded for the refusal


def test_spread_balances(settings):
    settings.placement.strategy = "spread"
    for i in range(3):
        add_instance(f"i{i}", i)
    placed = [place(req(), settings).instance.uuid for _ in range(6)]
    assert sorted(placed) == ["i0", "i0", "i1", "i1", "i2", "i2"]
    assert placed[:3] == ["i0", "i1", "i2"]


def test_default_capacity_applies_when_instance_reports_none(settings):
    settings.placement.capacity = 1
    add_instance("a", 1)
    add_instance("b", 2)
    assert [place(req(), settings).instance.uuid for _ in range(2)] == ["a", "b"]


def test_silent_down_and_draining_instances_get_nothing(settings):
    add_instance("silent", 1, age=3600)
    add_instance("down", 2, daemon_down=True)
    add_instance("draining", 3, state="draining")
    add_instance("ok", 4)
    assert place(req(), settings).instance.uuid == "ok"


def test_no_live_instance_is_503_saying_so(settings):
    with pytest.raises(DockerError) as exc:
        place(req(), settings)
    assert exc.value.status == 503 and "no instance" in exc.value.message


def test_pinned(settings):
    add_instance("a", 1, capacity=1)
    add_instance("b", 2, capacity=1)
    assert place(req(pinned="b"), settings).instance.uuid == "b"
    with pytest.raises(DockerError) as exc:
        place(req(pinned="b"), settings)
    assert exc.value.status == 409 and "full" in exc.value.message
    with pytest.raises(DockerError) as exc:
        place(req(pinned="nope"), settings)
    assert exc.value.status == 404


def test_release_and_confirm(settings):
    add_instance("a", 1, capacity=1)
    p = place(req(), settings)
    release(p)
    p = place(req(), settings)
    confirm(p, "c" * 64, "web", "p", {"x": "y"})
    row = store.Container.get_by_id("c" * 64)
    assert (row.name, row.instance_id, row.labels) == ("web", "a", {"x": "y"})
    assert store.Container.select().count() == 1


def test_concurrent_placements_never_overfill(settings):
    add_instance("a", 1, capacity=3)
    add_instance("b", 2, capacity=2)
    results, errors = [], []

    def worker():
        try:
            results.append(place(req(), settings).instance.uuid)
        except DockerError as exc:
            errors.append(exc.status)
        finally:
            store.release_connection()

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["a", "a", "a", "b", "b"]
    assert errors == [503] * 15


def counts():
    """Each instance's container_count as stored, and as counted from the rows."""
    C = store.Container
    stored = {i.uuid: i.container_count for i in store.Instance.select()}
    rows = dict(C.select(C.instance, peewee.fn.COUNT(C.id)).group_by(C.instance).tuples())
    return stored, {uuid: rows.get(uuid, 0) for uuid in stored}


def test_container_count_follows_every_row_change(settings):
    add_instance("a", 1)
    add_instance("b", 2)
    C = store.Container
    for n in range(3):
        C.create(id=f"c{n}", project="p", name=f"n{n}", instance="a")
    C.insert(id="c0", project="p", name="n0", instance="a").on_conflict_ignore().execute()  # no row, no count
    C.delete().where(C.id == "c1").execute()
    C.update(instance="b").where(C.id == "c2").execute()  # moved
    C.update(name="renamed").where(C.id == "c0").execute()  # not moved
    # confirm()'s upsert onto an existing row (a heartbeat adopted it first), on another instance
    row = {C.project: "p", C.name: "n0", C.instance: "b", C.labels: None, C.memory: 0, C.nano_cpus: 0}
    C.insert({C.id: "c0", **row}).on_conflict(conflict_target=[C.id], update=row).execute()
    stored, counted = counts()
    assert stored == counted == {"a": 0, "b": 2}
    with pytest.raises(RuntimeError), store.database.obj.atomic():  # a rolled back insert counts nothing
        C.create(id="c9", project="p", name="n9", instance="a")
        raise RuntimeError
    assert counts()[0] == {"a": 0, "b": 2}


def test_saving_a_loaded_instance_never_writes_back_its_count(settings):
    add_instance("a", 1)
    loaded = store.Instance.get_by_id("a")
    store.Container.create(id="c0", project="p", name="n0", instance="a")
    loaded.state = "draining"  # as `moorage instances drain` does, with a count read earlier
    loaded.save()
    assert store.Instance.get_by_id("a").container_count == 1


def test_reservations_and_releases_keep_the_count(settings):
    add_instance("a", 1, capacity=2)
    add_instance("b", 2, capacity=2)
    first = place(req(), settings)
    place(req(), settings)
    release(first)
    confirm(place(req(), settings), "d" * 64, "web", "p", {})
    stored, counted = counts()
    assert stored == counted == {"a": 2, "b": 0}


def test_default_capacity_and_own_capacity_mixed(settings):
    settings.placement.capacity = 2
    add_instance("own3", 1, capacity=3)
    add_instance("default", 2)  # capacity 0: the [placement] default (2)
    add_instance("own1", 3, capacity=1)
    placed = [place(req(), settings).instance.uuid for _ in range(6)]
    assert placed == ["own3"] * 3 + ["default"] * 2 + ["own1"]
    with pytest.raises(DockerError) as exc:
        place(req(), settings)
    assert exc.value.status == 503 and "full" in exc.value.message


def test_spread_ties_go_to_fill_order_then_uuid(settings):
    settings.placement.strategy = "spread"
    add_instance("z", 1)
    add_instance("y", 2)
    add_instance("x", 2)  # same position as y: uuid decides
    store.Container.create(id="c0", project="q", name="n0", instance="z")
    # least used first; among equals the first in fill order (position, then uuid)
    assert [place(req(), settings).instance.uuid for _ in range(4)] == ["x", "y", "z", "x"]


def test_pinned_to_a_silent_down_or_draining_instance_is_503(settings):
    add_instance("silent", 1, age=3600)
    add_instance("draining", 2, state="draining")
    add_instance("down", 3, daemon_down=True)
    for uuid, why in (
        ("silent", "is not answering"),
        ("draining", "is draining"),
        ("down", "has its daemon down"),
    ):
        with pytest.raises(DockerError) as exc:
            place(req(pinned=uuid), settings)
        assert (
            exc.value.status == 503
            and why in exc.value.message
            and "pin another instance" in exc.value.message
        )


@pytest.mark.parametrize("intent", [store.INSTANCE_DRAINING, store.INSTANCE_UP])
def test_a_heartbeat_changes_the_daemon_s_health_never_the_intent(settings, intent):
    """The operator's drain (or the reaper's, before it deletes an empty instance) outlives
    its daemon going down and coming back: heartbeats report health, not intent."""
    from gateway import instances

    add_instance("i1", 1, state=intent)
    add_instance("spare", 2)
    seen = []
    for daemon in ("down", "up", "down", "up"):
        instances.heartbeat("i1", "s", {"daemon": daemon, "capacity": 0}, settings)
        row = store.Instance.get_by_id("i1")
        seen.append((row.state, row.daemon_down, instances.is_live(row, settings)))
        placed = place(req(), settings)
        assert placed.instance.uuid == ("i1" if daemon == "up" and intent == store.INSTANCE_UP else "spare")
        release(placed)
    up = intent == store.INSTANCE_UP
    assert seen == [(intent, True, False), (intent, False, up), (intent, True, False), (intent, False, up)]
    # merged views leave it out while its daemon is down, and take it back (drained or not) after
    instances.heartbeat("i1", "s", {"daemon": "down"}, settings)
    assert [i.uuid for i in instances.live_instances(settings, fresh=True)] == ["spare"]
    instances.heartbeat("i1", "s", {"daemon": "up"}, settings)
    assert [i.uuid for i in instances.live_instances(settings, fresh=True)] == ["i1", "spare"]


def test_a_heartbeat_writes_the_facts_it_reports_and_keeps_the_rest(settings):
    """A heartbeat reads only its instance's agent (UUID, secret, project) and writes what its
    report gives: a fact it leaves out keeps its last value, and a heartbeat of a daemon that
    is down writes its health and time only."""
    from gateway import instances

    add_instance("i1", 1)
    report = {
        "daemon": "up",
        "daemon_version": "20.10.24",
        "api_version": "1.41",
        "min_api_version": "1.12",
        "facts": {"NCPU": 2},
        "capacity": 5,
    }
    instances.heartbeat("i1", "s", report, settings)
    row = store.Instance.get_by_id("i1")
    facts = (row.daemon_version, row.api_version, row.min_api_version, row.facts, row.capacity)
    assert facts == ("20.10.24", "1.41", "1.12", {"NCPU": 2}, 5)
    before = row.last_heartbeat
    instances.heartbeat("i1", "s", {"daemon": "up", "facts": {"NCPU": 4}}, settings)
    row = store.Instance.get_by_id("i1")
    assert (row.daemon_version, row.api_version, row.facts, row.capacity) == (
        "20.10.24",
        "1.41",
        {"NCPU": 4},
        5,
    )
    instances.heartbeat("i1", "s", {**report, "daemon": "down", "capacity": 9, "facts": {}}, settings)
    row = store.Instance.get_by_id("i1")
    assert (row.daemon_down, row.facts, row.capacity) == (True, {"NCPU": 4}, 5)
    assert row.last_heartbeat >= before
    with pytest.raises(DockerError) as exc:
        instances.heartbeat("i1", "wrong", report, settings)
    assert exc.value.status == 401
