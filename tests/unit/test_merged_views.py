"""every_instance: the merged views' answers from each live instance, in fill order; reads ask
every instance at once, writes one after another."""

from __future__ import annotations

import time
from types import SimpleNamespace

import gevent
import pytest

from gateway import config
from gateway.errors import DockerError
from gateway.services import common


@pytest.fixture
def fleet(monkeypatch):
    """Five fake instances whose daemons answer after a delay; calls are recorded."""
    live = [SimpleNamespace(uuid=f"i{n}") for n in range(5)]
    delays = {"i0": 0.20, "i1": 0.05, "i2": 0.15, "i3": 0.0, "i4": 0.10}
    answers: dict[str, tuple[int, object]] = {}
    calls: list[str] = []

    def fake_call(ctx, instance, method, path, *, query="", **kw):
        calls.append(instance.uuid)
        gevent.sleep(delays[instance.uuid])  # cooperative, as a patched socket is in the gateway
        if instance.uuid in answers and isinstance(answers[instance.uuid], Exception):
            raise answers[instance.uuid]
        return answers.get(instance.uuid, (200, [instance.uuid]))

    monkeypatch.setattr(common.instances, "live_instances", lambda settings: list(live))
    monkeypatch.setattr(common, "call", fake_call)
    yield SimpleNamespace(
        ctx=SimpleNamespace(settings=config.Settings(placement=config.PlacementSettings(tenancy="shared"))),
        answers=answers,
        calls=calls,
    )
    # Leave no hub behind in the main thread: later tests (the relay's) make their own.
    gevent.get_hub().destroy(destroy_loop=True)


def test_reads_ask_every_instance_at_once_and_answer_in_fill_order(fleet):
    t0 = time.monotonic()
    got = [
        (inst.uuid, payload) for inst, payload in common.every_instance(fleet.ctx, "GET", "/containers/json")
    ]
    elapsed = time.monotonic() - t0
    assert got == [(f"i{n}", [f"i{n}"]) for n in range(5)]
    assert elapsed < 0.4  # the slowest (0.2 s), not the sum (0.5 s)


def test_a_read_raises_the_first_error_in_fill_order(fleet):
    fleet.answers["i3"] = (500, {"message": "i3 broke"})  # answers first
    fleet.answers["i2"] = DockerError(503, "instance i2 is not answering")
    with pytest.raises(DockerError) as exc:
        list(common.every_instance(fleet.ctx, "GET", "/containers/json"))
    assert exc.value.status == 503 and "i2" in exc.value.message


def test_writes_go_one_after_another_and_stop_at_the_first_error(fleet):
    fleet.answers["i1"] = (500, {"message": "i1 broke"})
    with pytest.raises(DockerError) as exc:
        list(common.every_instance(fleet.ctx, "POST", "/containers/prune"))
    assert exc.value.status == 500 and exc.value.message == "i1 broke"
    assert fleet.calls == ["i0", "i1"]


def test_the_list_orders_same_second_runs_of_several_instances_by_the_map(tmp_path):
    """gateway/services/containers.py _order_same_second: within a "Created" second, containers of several
    instances are ordered by the map's creation times (newest first); a run of one instance,
    or one with a container the map lacks, keeps the daemons' order."""
    import datetime as dt

    from gateway import store
    from gateway.services.containers import _order_same_second

    store.init(f"sqlite:///{tmp_path}/m.db")
    try:
        for uuid in ("i1", "i2"):
            store.Instance.create(uuid=uuid, agent_url="tcp://127.0.0.1:1", agent_secret="s")
        t0 = dt.datetime(2025, 1, 1, 12, 0, 0)
        rows = {
            "a": ("i1", 1),
            "b": ("i2", 3),
            "c": ("i1", 2),  # second 100: several instances
            "d": ("i1", 5),
            "e": ("i1", 4),  # second 90: one instance
            "f": ("i2", 7),
            "g": ("i1", 6),
        }  # second 80: "h" unknown to the map
        for cid, (inst, ms) in rows.items():
            store.Container.create(
                id=cid, project="p", name=cid, instance=inst, created_at=t0 + dt.timedelta(milliseconds=ms)
            )
        merged = [
            {"Id": "a", "Created": 100},
            {"Id": "b", "Created": 100},
            {"Id": "c", "Created": 100},
            {"Id": "d", "Created": 90},
            {"Id": "e", "Created": 90},
            {"Id": "f", "Created": 80},
            {"Id": "h", "Created": 80},
            {"Id": "g", "Created": 80},
        ]
        origin = {"a": "i1", "b": "i2", "c": "i1", "d": "i1", "e": "i1", "f": "i2", "h": "i2", "g": "i1"}
        _order_same_second(merged, origin)
        assert [c["Id"] for c in merged] == ["b", "c", "a", "d", "e", "f", "h", "g"]
    finally:
        store.close()


def test_creation_times_are_read_once_per_store(tmp_path):
    """gateway/store/queries.py creation_times keeps what it read: a time is written once with
    its row, so a second merged list reads only the IDs it has not seen; another store (a
    test's, a restart on another database) starts afresh."""
    import datetime as dt

    from gateway import store

    t0 = dt.datetime(2025, 1, 1, 12, 0, 0)
    store.init(f"sqlite:///{tmp_path}/one.db")
    try:
        store.Instance.create(uuid="i1", agent_url="tcp://127.0.0.1:1", agent_secret="s")
        for cid, ms in (("a", 1), ("b", 2)):
            store.Container.create(
                id=cid, project="p", name=cid, instance="i1", created_at=t0 + dt.timedelta(milliseconds=ms)
            )
        assert store.creation_times(["a", "b", "zz"]) == {
            "a": t0 + dt.timedelta(milliseconds=1),
            "b": t0 + dt.timedelta(milliseconds=2),
        }
        store.Container.delete().where(store.Container.id == "a").execute()
        store.Container.create(
            id="c", project="p", name="c", instance="i1", created_at=t0 + dt.timedelta(milliseconds=3)
        )
        # "a" is not read again (its time cannot have changed); "c" is new and read
        assert store.creation_times(["a", "c"]) == {
            "a": t0 + dt.timedelta(milliseconds=1),
            "c": t0 + dt.timedelta(milliseconds=3),
        }
    finally:
        store.close()
    store.init(f"sqlite:///{tmp_path}/two.db")
    try:
        assert store.creation_times(["a", "c"]) == {}, "times of another store's rows"
    finally:
        store.close()
