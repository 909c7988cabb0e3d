"""The map follows the daemons: drop what they no longer have, adopt labelled strays."""

import datetime as dt

import pytest

from gateway import config, store
from gateway.instances import RECONCILE_GRACE, reconcile


@pytest.fixture
def instance(db_url):
    """On SQLite and on PostgreSQL (where reconcile's writes go with its COMMIT)."""
    store.init(config.Settings(gateway=config.GatewaySettings(database=db_url)).gateway.database)
    return store.Instance.create(uuid="i1", agent_url="tcp://127.0.0.1:1", agent_secret="s", position=1)


def row(cid, age_seconds, instance="i1", project="p"):
    return store.Container.create(
        id=cid,
        project=project,
        name=cid,
        instance=instance,
        created_at=store.utcnow() - dt.timedelta(seconds=age_seconds),
    )


def test_drops_old_rows_the_daemon_lacks_and_keeps_young_ones(instance):
    old = RECONCILE_GRACE.total_seconds() + 5
    row("gone", old)
    row("inflight", 1)
    row("alive", old)
    result = reconcile(instance, [{"id": "alive", "project": "p", "name": "alive"}])
    assert result == {"dropped": 1, "adopted": 0}
    assert sorted(c.id for c in store.Container.select()) == ["alive", "inflight"]


def test_adopts_labelled_containers_with_their_project(instance):
    result = reconcile(
        instance,
        [
            {"id": "stray", "project": "pb", "name": "web", "labels": {"a": "b"}},
            {"id": "nolabel", "project": "", "name": "x"},
        ],
    )
    assert result == {"dropped": 0, "adopted": 1}
    adopted = store.Container.get_by_id("stray")
    assert (adopted.project, adopted.name, adopted.instance_id, adopted.labels) == (
        "pb",
        "web",
        "i1",
        {"a": "b"},
    )


def test_other_instances_rows_are_untouched(instance):
    store.Instance.create(uuid="i2", agent_url="tcp://127.0.0.1:2", agent_secret="s", position=2)
    row("elsewhere", 3600, instance="i2")
    reconcile(instance, [])
    assert store.Container.get_or_none(store.Container.id == "elsewhere") is not None


def test_a_listing_from_before_a_removal_does_not_adopt_the_container_again(instance):
    """The heartbeat's listing was taken while the container existed; `docker rm` made the map
    forget it before that heartbeat reached reconcile. The name is free, and stays free."""
    row("removed", 3600)
    listed_before = [{"id": "removed", "project": "p", "name": "removed"}]
    store.forget_container("removed")
    assert reconcile(instance, listed_before) == {"dropped": 0, "adopted": 0}
    assert store.container_named("p", "removed") is None
    # Once the removal is older than REMOVED_KEPT, a container the daemon still lists is a
    # stray like any other (the daemon is the truth), and adopted.
    store.RemovedContainer.update(
        removed_at=store.utcnow() - store.REMOVED_KEPT - dt.timedelta(seconds=1)
    ).execute()
    assert reconcile(instance, listed_before) == {"dropped": 0, "adopted": 1}


def test_removals_are_remembered_for_a_while_only(instance):
    """Nothing grows per call: each removal forgets the removals older than REMOVED_KEPT."""
    for cid in ("a", "b"):
        row(cid, 3600)
        store.forget_container(cid)
    store.RemovedContainer.update(
        removed_at=store.utcnow() - store.REMOVED_KEPT - dt.timedelta(seconds=1)
    ).where(store.RemovedContainer.id == "a").execute()
    row("c", 3600)
    store.forget_container("c")
    assert sorted(r.id for r in store.RemovedContainer.select()) == ["b", "c"]
    assert store.removed_lately(["a", "b", "c", "d"]) == {"b", "c"}
