"""Prepared selects (gateway/store/prepared.py): the SQL compiled once answers as the query built
each time would, on SQLite and PostgreSQL, and a query whose SQL depends on its values is
never trusted to a compiled copy."""

from __future__ import annotations

import datetime as dt

import peewee
import pytest

from gateway import config, store
from gateway.store.prepared import Prepared, PreparedUpdate
from gateway.tenancy import resolve


@pytest.fixture
def settings(db_url):
    s = config.Settings(gateway=config.GatewaySettings(database=db_url))
    store.init(s.gateway.database)
    yield s
    store.close()


def add_instance(uuid, position, project=None, state=store.INSTANCE_UP, age=0, daemon_down=False):
    return store.Instance.create(
        uuid=uuid,
        agent_url=f"tcp://198.18.0.{position}:2376",
        agent_secret="s-" + uuid,
        position=position,
        project=project,
        state=state,
        daemon_down=daemon_down,
        last_heartbeat=store.utcnow() - dt.timedelta(seconds=age),
    )


def test_a_project_s_live_instances_as_the_built_query_finds_them(settings):
    add_instance("b", 2, project="p")
    add_instance("a", 1, project="p")
    add_instance("c", 3, project="q")
    add_instance("d", 4, project="p", daemon_down=True)
    add_instance("e", 5, project="p", age=3600)
    horizon = store.utcnow() - dt.timedelta(seconds=60)
    for _ in range(3):  # the first call compiles, the later ones reuse
        assert [i.uuid for i in store.project_live_instances("p", horizon)] == ["a", "b"]
        assert [i.uuid for i in store.project_live_instances("q", horizon)] == ["c"]
        assert store.project_live_instances("nobody", horizon) == []
    # An older horizon takes the silent one in too: the datetime argument reaches the SQL.
    old = store.utcnow() - dt.timedelta(hours=2)
    assert [i.uuid for i in store.project_live_instances("p", old)] == ["a", "b", "e"]


def test_resolve_finds_by_id_then_name_with_the_instance_joined(settings):
    add_instance("a", 1, project="p")
    store.Container.create(id="f00d" + "0" * 60, project="p", name="web", instance="a")
    store.Container.create(id="beef" + "0" * 60, project="q", name="web", instance="a")
    for _ in range(2):
        found = resolve.container("p", "web")
        assert found.id.startswith("f00d") and found.instance.uuid == "a"
        assert resolve.container("q", "/web").id.startswith("beef")
        assert resolve.container("p", "f00d" + "0" * 60).name == "web"
        assert resolve.container("p", "f00d").name == "web"  # an ID prefix
    with pytest.raises(Exception, match="No such container"):
        resolve.container("p", "beef")  # another project's ID prefix


def test_a_query_whose_sql_depends_on_its_values_is_built_each_time(settings):
    add_instance("a", 1)
    add_instance("b", 2)
    # An IN list of a fixed number of arguments keeps its shape: prepared, and right.
    by_uuids = Prepared(
        lambda *uuids: (
            store.Instance.select().where(store.Instance.uuid.in_(list(uuids))).order_by(store.Instance.uuid)
        )
    )
    assert [i.uuid for i in by_uuids("a", "b")] == ["a", "b"]
    assert [i.uuid for i in by_uuids("b", "zz")] == ["b"]
    assert by_uuids._compiled[type(store.database.obj)] is not None
    # A LIKE pattern made from the argument is a parameter no probe fills: built each time.
    starts = Prepared(lambda prefix: store.Instance.select().where(store.Instance.uuid.startswith(prefix)))
    assert [i.uuid for i in starts("a")] == ["a"]
    assert [i.uuid for i in starts("b")] == ["b"]
    assert starts._compiled[type(store.database.obj)] is None


def test_prepared_compiles_once(settings):
    add_instance("a", 1)
    builds = []

    def build(uuid):
        builds.append(uuid)
        return store.Instance.select().where(store.Instance.uuid == uuid)

    one = Prepared(build)
    for _ in range(5):
        assert [i.uuid for i in one("a")] == ["a"]
    assert len(builds) == 2  # the probes' and the first real arguments' (the check)


def test_a_project_s_spanning_networks_and_a_container_s_addresses(settings):
    """ps and inspect read these on every call (gateway/services/spans.py): compiled once,
    answering as the built queries do."""
    from gateway.store import spans

    for i, (project, name) in enumerate((("p", "b"), ("p", "a"), ("q", "a"))):
        store.Network.create(
            id=f"n{i}",
            project=project,
            name=name,
            daemon_name=f"{name}.{project}",
            subnet=f"198.19.{i}.0/24",
            created_at=store.utcnow() + dt.timedelta(seconds=i),
        )
    store.Network.create(id="old", project="p", name="pinned", daemon_name="pinned.p")  # no subnet
    store.NetworkAddress.create(network="n0", address="198.19.0.2", container="c1", instance="i1")
    store.NetworkAddress.create(network="n1", address="198.19.1.2", container="c1", instance="i1")
    store.NetworkAddress.create(network="n2", address="198.19.2.2", container="c2", instance="i2")
    for _ in range(2):  # the first call compiles, the second runs the kept SQL
        assert [n.id for n in spans.networks_of("p")] == ["n0", "n1"]
        assert [n.id for n in spans.networks_of(None)] == ["n0", "n1", "n2"]
        held = spans.held_by("c1")
        assert sorted((a.address, n.name) for a, n in held) == [("198.19.0.2", "b"), ("198.19.1.2", "a")]
        assert spans.held_by("nobody") == []
    kind = type(store.database.obj)
    assert spans._project_networks._compiled[kind] is not None
    assert spans._held_by._compiled[kind] is not None


def test_a_prepared_update_writes_what_peewee_s_would(settings):
    """The heartbeat's update (gateway/instances.py): its SQL compiled once per field set, its
    parameters the fields' database values, in peewee's order whatever the dict's."""
    add_instance("a", 1)
    add_instance("b", 2)
    Inst = store.Instance
    update = PreparedUpdate(Inst, Inst.uuid)
    at = store.utcnow()
    fields = {Inst.facts: {"NCPU": 4}, Inst.daemon_down: True, Inst.last_heartbeat: at, Inst.capacity: 7}
    for _ in range(2):  # compiled on the first call, from the cache on the second
        bound = update(fields, "a")
        assert bound.sql() == Inst.update(fields).where(Inst.uuid == "a").sql()
        store.database.obj.execute_sql(*bound.sql())
    a, b = Inst.get_by_id("a"), Inst.get_by_id("b")
    assert (a.facts, a.daemon_down, a.last_heartbeat, a.capacity) == ({"NCPU": 4}, True, at, 7)
    assert (b.facts, b.daemon_down, b.capacity) == (None, False, 0)
    # another field set is another statement; a field given in another order, the same one
    store.with_commit(update({Inst.daemon_down: False, Inst.last_heartbeat: at}, "b"))
    store.with_commit(update({Inst.last_heartbeat: at, Inst.daemon_down: True}, "b"))
    assert Inst.get_by_id("b").daemon_down is True
    assert len(update._compiled) == 2


def test_an_update_whose_parameters_differ_from_the_values_is_built_each_time(settings):
    add_instance("a", 1)
    Inst = store.Instance
    update = PreparedUpdate(Inst, Inst.uuid)
    # an expression, not a value: peewee's parameters are not the field's database value
    query = update({Inst.capacity: Inst.capacity + 1}, "a")
    assert isinstance(query, peewee.Query)
    query.execute()
    assert Inst.get_by_id("a").capacity == 1
    assert list(update._compiled.values()) == [None]
