"""The store's kept reads (gateway/store/kept.py): a project's live instances and a container
by ID or name, kept a moment per worker while the SQLite store is unchanged. Every write, in
this process or another that opened the same store file, is seen by the next read."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest

from gateway import config, generations, store
from gateway.store import kept

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture
def settings(tmp_path):
    s = config.Settings(gateway=config.GatewaySettings(database=f"sqlite:///{tmp_path}/m.db"))
    store.init(s.gateway.database)
    assert generations.configure(s)  # as the gateway's app does
    yield s
    store.close()
    generations.close()


def add_instance(uuid: str, position: int, project: str | None = "p1") -> None:
    store.Instance.create(
        uuid=uuid,
        agent_url=f"tcp://127.0.0.1:{2000 + position}",
        agent_secret="s-" + uuid,
        capacity=5,
        position=position,
        project=project,
    )


def add_container(cid: str, name: str, instance: str, project: str = "p1") -> None:
    store.Container.create(id=cid, project=project, name=name, instance=instance)


def horizon(seconds: float = 30) -> dt.datetime:
    return store.utcnow() - dt.timedelta(seconds=seconds)


def in_another_process(settings, code: str) -> None:
    """Another process on the same store file (the admin CLI, another worker)."""
    script = (
        "from gateway import store\n"
        f"store.init({settings.gateway.database!r}, migrate=False)\n"
        f"{code}\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": REPO},
        check=False,
    )
    assert out.stdout.decode().strip().endswith("ok"), out.stderr.decode()


def test_unchanged_store_answers_from_the_kept_rows(settings):
    add_instance("i1", 1)
    first = store.project_live_instances("p1", horizon())
    again = store.project_live_instances("p1", horizon())
    assert [i.uuid for i in first] == ["i1"]
    assert again[0] is first[0]  # the same row objects: no query, no model made


def test_a_write_here_is_seen_by_the_next_read(settings):
    add_instance("i1", 1)
    assert [i.uuid for i in store.project_live_instances("p1", horizon())] == ["i1"]
    add_instance("i2", 2)
    assert [i.uuid for i in store.project_live_instances("p1", horizon())] == ["i1", "i2"]
    store.Instance.update(daemon_down=True).where(store.Instance.uuid == "i1").execute()
    assert [i.uuid for i in store.project_live_instances("p1", horizon())] == ["i2"]


def test_a_write_in_a_transaction_is_seen_after_its_commit_and_gone_after_its_rollback(settings):
    add_instance("i1", 1)
    assert len(store.project_live_instances("p1", horizon())) == 1
    with store.write_transaction():
        add_instance("i2", 2)
    assert len(store.project_live_instances("p1", horizon())) == 2
    db = store.database.obj
    with db.atomic() as txn:
        add_instance("i3", 3)
        assert len(store.project_live_instances("p1", horizon())) == 3  # this connection's own write
        txn.rollback()
    assert len(store.project_live_instances("p1", horizon())) == 2  # not a row that never was


def test_a_write_in_another_process_is_seen_by_the_next_read(settings):
    add_instance("i1", 1)
    add_container("c" * 64, "web", "i1")
    assert len(store.project_live_instances("p1", horizon())) == 1
    assert store.placed_container("p1", "web") is not None
    in_another_process(
        settings,
        "store.Instance.create(uuid='i2', agent_url='tcp://127.0.0.1:2002', agent_secret='s',"
        " capacity=5, position=2, project='p1')\n"
        "store.Container.delete().where(store.Container.name == 'web').execute()",
    )
    assert [i.uuid for i in store.project_live_instances("p1", horizon())] == ["i1", "i2"]
    assert store.placed_container("p1", "web") is None


def test_an_instance_that_falls_silent_leaves_the_kept_list(settings):
    add_instance("i1", 1)
    store.Instance.update(last_heartbeat=store.utcnow() - dt.timedelta(seconds=20)).execute()
    assert len(store.project_live_instances("p1", horizon(30))) == 1
    # no write: the same kept rows, read with a later horizon that the instance is behind
    assert store.project_live_instances("p1", horizon(10)) == []


def test_a_kept_read_is_not_used_past_its_age(settings, monkeypatch):
    add_instance("i1", 1)
    first = store.project_live_instances("p1", horizon())
    monkeypatch.setattr(kept, "MAX_AGE", 0.0)
    assert store.project_live_instances("p1", horizon())[0] is not first[0]


def test_a_renamed_container_is_found_by_its_new_name_only(settings):
    add_instance("i1", 1)
    cid = "d" * 64
    add_container(cid, "old", "i1")
    found = store.placed_container("p1", "old")
    assert found is not None and found.instance.uuid == "i1"
    assert store.placed_container("p1", cid) is not None
    store.rename_container(cid, "new")
    assert store.placed_container("p1", "old") is None
    renamed = store.placed_container("p1", "new")
    assert renamed is not None and renamed.id == cid
    assert found.name == "old"  # the row another request held is not changed under it


def test_other_projects_and_missing_names_are_their_own_keys(settings):
    add_instance("i1", 1)
    add_container("e" * 64, "web", "i1")
    assert store.placed_container("p2", "web") is None
    assert store.placed_container("p1", "web") is not None
    assert store.placed_container("p1", "nope") is None
    add_container("f" * 64, "nope", "i1")
    assert store.placed_container("p1", "nope") is not None  # a kept miss is not kept past a write


def test_nothing_is_kept_with_the_read_cache_off(tmp_path):
    s = config.Settings(
        gateway=config.GatewaySettings(database=f"sqlite:///{tmp_path}/m.db", read_cache=False)
    )
    store.init(s.gateway.database)
    try:
        assert not generations.configure(s)
        add_instance("i1", 1)
        first = store.project_live_instances("p1", horizon())
        assert store.project_live_instances("p1", horizon())[0] is not first[0]
    finally:
        store.close()
        generations.close()
