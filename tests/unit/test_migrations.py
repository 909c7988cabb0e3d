"""Schema migrations: a newer gateway upgrades an older database in place, losing no row,
on SQLite and on a real PostgreSQL; replicas starting together do not race."""

from __future__ import annotations

import datetime as dt
import multiprocessing

import peewee

from gateway import store


def _old_models(db: peewee.Database):
    """The schema as the first gateway (schema version 1) made it: instance, container, exec."""

    class Base(peewee.Model):
        class Meta:
            database = db

    class Instance(Base):
        uuid = peewee.CharField(primary_key=True, max_length=64)
        provider = peewee.CharField(default="static", max_length=32)
        agent_url = peewee.CharField(max_length=255)
        agent_secret = peewee.CharField(max_length=128)
        capacity = peewee.IntegerField(default=0)
        state = peewee.CharField(default="up", max_length=16)
        daemon_version = peewee.CharField(default="", max_length=64)
        api_version = peewee.CharField(default="", max_length=16)
        min_api_version = peewee.CharField(default="", max_length=16)
        facts = peewee.TextField(null=True)
        registered_at = peewee.DateTimeField()
        last_heartbeat = peewee.DateTimeField()
        position = peewee.IntegerField(default=0, index=True)

        class Meta:
            table_name = "instance"

    class Container(Base):
        id = peewee.CharField(primary_key=True, max_length=64)
        project = peewee.CharField(max_length=64, index=True)
        name = peewee.CharField(max_length=255)
        instance = peewee.ForeignKeyField(Instance, on_delete="RESTRICT")
        labels = peewee.TextField(null=True)
        created_at = peewee.DateTimeField()

        class Meta:
            table_name = "container"

    class Exec(Base):
        id = peewee.CharField(primary_key=True, max_length=64)
        container = peewee.ForeignKeyField(Container, on_delete="CASCADE")
        project = peewee.CharField(max_length=64, index=True)
        created_at = peewee.DateTimeField()

        class Meta:
            table_name = "exec"

    class SchemaVersion(Base):
        version = peewee.IntegerField()

        class Meta:
            table_name = "schemaversion"

    return Instance, Container, Exec, SchemaVersion


def _build_v1(url: str) -> None:
    db = store.open_database(url)
    Instance, Container, Exec, SchemaVersion = _old_models(db)
    now = dt.datetime(2025, 1, 2, 3, 4, 5)
    with db.atomic():
        db.create_tables([Instance, Container, Exec, SchemaVersion])
        SchemaVersion.create(version=1)
        for i in range(3):
            Instance.create(
                uuid=f"i{i}",
                agent_url=f"tcp://198.18.0.{i}:2376",
                agent_secret="s",
                facts='{"NCPU": 2}',
                state="down" if i == 2 else "up",  # its daemon was down (before _m_daemon_health)
                registered_at=now,
                last_heartbeat=now,
                position=i,
            )
        for n in range(10):
            Container.create(
                id=f"{n:064x}",
                project="p1" if n % 2 else "p2",
                name=f"c{n}",
                instance=f"i{n % 3}",
                labels='{"a": "b"}',
                created_at=now,
            )
        Exec.create(id="e" * 64, container=f"{1:064x}", project="p1", created_at=now)
    db.close()


def _check_upgraded(url: str) -> None:
    _build_v1(url)
    store.init(url, migrate=False)
    try:
        assert store.current_version() == 1
        assert store.upgrade() == (1, store.SCHEMA_VERSION)
        assert store.current_version() == store.SCHEMA_VERSION
        assert store.Instance.select().count() == 3
        assert store.Instance.get_by_id("i1").facts == {"NCPU": 2}
        # a down row is an up one whose daemon is down: the intent and the health apart
        assert {(i.uuid, i.state, i.daemon_down) for i in store.Instance.select()} == {
            ("i0", "up", False),
            ("i1", "up", False),
            ("i2", "up", True),
        }
        rows = list(store.Container.select().order_by(store.Container.id))
        assert [r.name for r in rows] == [f"c{n}" for n in range(10)]
        assert {(r.memory, r.nano_cpus) for r in rows} == {(0, 0)}
        assert rows[3].labels == {"a": "b"} and rows[3].instance_id == "i0"
        assert store.Exec.get_by_id("e" * 64).container_id == f"{1:064x}"
        # the placement counts: backfilled from the rows, then kept by the triggers
        assert {i.uuid: i.container_count for i in store.Instance.select()} == {"i0": 4, "i1": 3, "i2": 3}
        store.Container.delete().where(store.Container.instance == "i0").execute()
        store.Container.create(id="n" * 64, project="p1", name="new", instance="i2")
        assert {i.uuid: i.container_count for i in store.Instance.select()} == {"i0": 0, "i1": 3, "i2": 4}
        # the new tables work
        store.Quota.create(project="p1", resource="containers", value=5)
        store.Volume.create(daemon_name="v", project="p1", name="v", instance="i0")
        assert store.upgrade() == (store.SCHEMA_VERSION, store.SCHEMA_VERSION)  # idempotent
        assert store.Container.select().count() == 7
        assert store.Instance.get_by_id("i2").container_count == 4
    finally:
        store.close()


def test_upgrade_keeps_every_row_sqlite(tmp_path):
    _check_upgraded(f"sqlite:///{tmp_path}/old.db")


def test_upgrade_keeps_every_row_postgres(postgres_url):
    _check_upgraded(postgres_url)


def test_fresh_database_gets_every_column(db_url):
    store.init(db_url)
    try:
        columns = {c.name for c in store.database.obj.get_columns("container")}
        assert {"memory", "nano_cpus"} <= columns
        assert store.current_version() == store.SCHEMA_VERSION
    finally:
        store.close()


def _init_in_process(url: str, barrier, out) -> None:
    barrier.wait()
    try:
        store.init(url)
        out.put(("ok", store.current_version()))
    except Exception as exc:  # noqa: BLE001 (reported below)
        out.put(("error", repr(exc)))


def _race(url: str, n: int = 4) -> list:
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_init_in_process, args=(url, barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    return results


def test_replicas_starting_together_do_not_race_the_migration_postgres(postgres_url):
    assert _race(postgres_url) == [("ok", store.SCHEMA_VERSION)] * 4


def test_replicas_starting_together_do_not_race_the_migration_sqlite(tmp_path):
    assert _race(f"sqlite:///{tmp_path}/race.db") == [("ok", store.SCHEMA_VERSION)] * 4
