"""What `docker info` adds up (instances.capacity, store.live_capacity): a project's own live
instances, or every live one, as one aggregate in the store (SQLite and PostgreSQL), and the
per-worker values kept a while (instances.Kept)."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway import config, instances, store

GIB = 2**30


@pytest.fixture
def settings(db_url):
    s = config.Settings(gateway=config.GatewaySettings(database=db_url))
    store.init(s.gateway.database)
    yield s
    store.close()


def add(uuid, position, facts, project=None, state="up", age=0, daemon_down=False):
    store.Instance.create(
        uuid=uuid,
        agent_url=f"tcp://127.0.0.1:{2000 + position}",
        agent_secret="s",
        position=position,
        project=project,
        state=state,
        daemon_down=daemon_down,
        facts=facts,
        last_heartbeat=store.utcnow() - dt.timedelta(seconds=age),
    )


def test_a_projects_own_live_instances_and_every_live_one(settings):
    add("a", 0, {"NCPU": 2, "MemTotal": 4 * GIB}, project="p")
    add("b", 1, {"NCPU": 4, "MemTotal": 8 * GIB}, project="p", state="draining")  # its containers run
    add("c", 2, {"NCPU": 8, "MemTotal": 16 * GIB}, project="q")
    add("d", 3, {"NCPU": 16, "MemTotal": 32 * GIB})  # free
    add("e", 4, {"NCPU": 32, "MemTotal": 64 * GIB}, project="p", age=3600)  # silent
    add("f", 5, {"NCPU": 64, "MemTotal": 128 * GIB}, project="p", daemon_down=True)
    add("g", 6, {"NCPU": "many", "MemTotal": None, "OSType": "linux"}, project="p")  # not numbers: 0
    add("h", 7, None, project="p")  # no facts reported yet
    assert instances.capacity(settings, "p") == (6, 12 * GIB)
    assert instances.capacity(settings, "q") == (8, 16 * GIB)
    assert instances.capacity(settings, "nobody") == (0, 0)
    assert instances.capacity(settings) == (30, 60 * GIB)


def test_every_live_instance_is_kept_a_second_a_projects_own_is_read_each_time(settings):
    instances._capacity_kept.clear()
    add("a", 0, {"NCPU": 2, "MemTotal": GIB}, project="p")
    assert instances.capacity(settings) == (2, GIB)
    add("b", 1, {"NCPU": 4, "MemTotal": GIB}, project="p")
    assert instances.capacity(settings, "p") == (6, 2 * GIB)  # a claim shows at once
    assert instances.capacity(settings) == (2, GIB)  # the fleet's: as read a moment ago
    instances._capacity_kept.clear()
    assert instances.capacity(settings) == (6, 2 * GIB)


def test_kept_values_expire_follow_the_store_and_skip_what_is_not_kept(settings, tmp_path):
    kept: instances.Kept[int] = instances.Kept(60)
    calls = []

    def compute():
        calls.append(1)
        return len(calls)

    assert kept.get(compute) == 1 and kept.get(compute) == 1
    assert kept.get(compute, fresh=True) == 2 and kept.get(compute) == 2
    assert kept.get(compute, seconds=0) == 3  # (the census: its own interval per call)
    store.close()
    store.init(f"sqlite:///{tmp_path}/other.db")  # another store: nothing kept from the first
    try:
        assert kept.get(compute) == 4
    finally:
        store.close()
        store.init(settings.gateway.database)
    empty: instances.Kept[list] = instances.Kept(60)
    assert empty.get(list, keep=bool) == [] and empty._held is None  # an empty answer is not kept


def test_the_light_reads_of_the_live_instances(settings):
    """What a create's body translation and the events recorder ask instead of every live row."""
    instances._api_versions.clear()
    add("a", 0, None, project="p")
    add("b", 1, None, state="draining")
    add("c", 2, None, age=3600)  # silent
    add("d", 3, None, daemon_down=True)
    for uuid, version in (("a", "1.41"), ("b", "1.43"), ("c", "1.24"), ("d", "1.24")):
        store.Instance.update(api_version=version).where(store.Instance.uuid == uuid).execute()
    assert sorted(instances.live_uuids(settings)) == ["a", "b"]
    assert [i.uuid for i in instances.live_instances(settings, fresh=True)] == ["a", "b"]
    assert instances.live_api_versions(settings) == ("1.41", "1.43")
    assert sorted(instances.by_uuid(["a", "c", "zz"])) == ["a", "c"] and instances.by_uuid([]) == {}
