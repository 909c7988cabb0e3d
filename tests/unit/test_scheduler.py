"""Placement strategies and filters, against a real SQLite store."""

import datetime as dt
import threading

import pytest

from gateway import config, store
from gateway.errors import DockerError
from gateway.placement import PlacementRequest, place, release
from gateway.placement.scheduler import confirm


@pytest.fixture
def settings(tmp_path):
    s = config.Settings(database=f"sqlite:///{tmp_path}/m.db")
    store.init(s.database)
    return s


def add_instance(uuid, position, capacity=0, state="up", age=0):
    return store.Instance.create(uuid=uuid, agent_url=f"tcp://127.0.0.1:{2000 + position}", agent_secret="s",
                                 capacity=capacity, state=state, position=position,
                                 last_heartbeat=store.utcnow() - dt.timedelta(seconds=age))


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
    settings.placement["strategy"] = "spread"
    for i in range(3):
        add_instance(f"i{i}", i)
    placed = [place(req(), settings).instance.uuid for _ in range(6)]
    assert sorted(placed) == ["i0", "i0", "i1", "i1", "i2", "i2"]
    assert placed[:3] == ["i0", "i1", "i2"]


def test_default_capacity_applies_when_instance_reports_none(settings):
    settings.placement["capacity"] = 1
    add_instance("a", 1)
    add_instance("b", 2)
    assert [place(req(), settings).instance.uuid for _ in range(2)] == ["a", "b"]


def test_silent_down_and_draining_instances_get_nothing(settings):
    add_instance("silent", 1, age=3600)
    add_instance("down", 2, state="down")
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

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["a", "a", "a", "b", "b"]
    assert errors == [503] * 15
