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
