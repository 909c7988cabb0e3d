"""Dedicated tenancy: an instance holds one project's objects, from the placement that claims
it until the reaper frees (wipes) or deletes it; agents are believed about their own instance
and project only."""

from __future__ import annotations

import datetime as dt
import stat
import threading
import time

import pytest
from cryptography.fernet import Fernet

from gateway import config, instances, store
from gateway.errors import DockerError
from gateway.placement import PlacementRequest, place, pool, reaper, wipe
from gateway.placement.local import LocalProvider
from gateway.placement.nova import NovaProvider
from tests.unit.test_pool import FakeNova, secret_of


@pytest.fixture
def settings(db_url):
    s = config.Settings(gateway=config.GatewaySettings(database=db_url))
    assert s.placement.tenancy == "dedicated"  # the default
    store.init(s.gateway.database)
    yield s
    store.close()


def add_instance(uuid, position, capacity=0, project=None):
    return store.Instance.create(
        uuid=uuid,
        agent_url=f"tcp://127.0.0.1:{2000 + position}",
        agent_secret="s-" + uuid,
        capacity=capacity,
        position=position,
        project=project,
    )


def req(project, **kw):
    return PlacementRequest(project=project, name="", labels={}, **kw)


def owner(uuid):
    return store.Instance.get_by_id(uuid).project


def test_two_projects_never_share_an_instance(settings):
    for i, uuid in enumerate("abc"):
        add_instance(uuid, i, capacity=2)
    assert place(req("p"), settings).instance.uuid == "a"
    # a has room, but it is p's: q claims the next free instance
    assert place(req("q"), settings).instance.uuid == "b"
    assert place(req("p"), settings).instance.uuid == "a"
    # p's instance is full: p claims c rather than share b
    assert place(req("p"), settings).instance.uuid == "c"
    assert (owner("a"), owner("b"), owner("c")) == ("p", "q", "p")
    # nothing is free any more: a third project is told so, and q still fills its own
    with pytest.raises(DockerError) as exc:
        place(req("r"), settings)
    assert exc.value.status == 503 and "no free instance" in exc.value.message
    assert place(req("q"), settings).instance.uuid == "b"


def test_shared_tenancy_fills_in_order_whoever_asks(settings):
    settings.placement.tenancy = "shared"
    add_instance("a", 0, capacity=2)
    add_instance("b", 1, capacity=2)
    assert [place(req(p), settings).instance.uuid for p in "pqr"] == ["a", "a", "b"]
    assert owner("a") is None


def test_pinning_another_projects_instance_is_404_and_a_free_one_is_claimed(settings):
    add_instance("a", 0, project="p")
    add_instance("b", 1)
    with pytest.raises(DockerError) as exc:
        place(req("q", pinned="a"), settings)
    assert exc.value.status == 404 and "no such instance: a" in exc.value.message
    assert place(req("q", pinned="b"), settings).instance.uuid == "b"
    assert owner("b") == "q"
    assert place(req("p", pinned="a"), settings).instance.uuid == "a"


def test_a_free_instance_that_holds_containers_is_not_claimed(settings):
    """A host with containers but no owner (left from shared tenancy) is nobody's to claim."""
    add_instance("a", 0)
    store.Container.create(id="c1", project="old", name="x", instance="a")
    add_instance("b", 1)
    assert place(req("p"), settings).instance.uuid == "b"
    with pytest.raises(DockerError) as exc:
        place(req("q", pinned="a"), settings)
    assert exc.value.status == 404


def test_a_probe_claims_too(settings):
    """A network or volume made before any container makes the instance the project's."""
    add_instance("a", 0)
    add_instance("b", 1)
    assert place(req("p", probe=True), settings).instance.uuid == "a"
    assert owner("a") == "p"
    assert place(req("q", probe=True), settings).instance.uuid == "b"


def test_the_pool_boots_an_instance_per_project(settings, monkeypatch, tmp_path):
    settings.placement.provider = "nova"
    settings.placement.capacity = 4
    settings.identity = config.IdentitySettings(backend="keystone", auth_url="http://198.18.1.5:5000/v3")
    nova = FakeNova()
    key = tmp_path / "trust.key"
    key.write_bytes(Fernet.generate_key())
    prov = NovaProvider(
        config.NovaSettings(
            flavor="m1.moorage", gateway_url="http://198.18.1.1:2375", boot_timeout=5, trust_key_file=str(key)
        ),
        settings,
        client_factory=nova.open,
    )
    assert prov.trusts is not None
    for project in ("p", "q"):  # each project's server is created through its own trust
        prov.trusts.put(project, f"trust-of-{project}", f"user-of-{project}", "moorage-user", ["member"])
    monkeypatch.setitem(pool._providers, ("nova", id(settings)), prov)
    monkeypatch.setattr(pool, "POLL_INTERVAL", 0.02)

    def on_create(server):
        def later():
            for _ in range(200):
                try:
                    pool.bootstrap(secret_of(server), {"agent_url": "tcp://198.18.1.11:2376"})
                    return
                except DockerError as exc:
                    if exc.status != 409:
                        raise
                    time.sleep(0.01)

        threading.Thread(target=later, daemon=True).start()

    nova.on_create = on_create
    first_p = place(req("p"), settings).instance
    first_q = place(req("q"), settings).instance
    assert first_p.uuid != first_q.uuid  # q's create did not join p's instance, room or not
    assert (owner(first_p.uuid), owner(first_q.uuid)) == ("p", "q")
    assert place(req("p"), settings).instance.uuid == first_p.uuid
    assert len(nova.servers.creates) == 2
    members = {m.server_id: m.project for m in store.PoolMember.select()}
    assert members == {first_p.uuid: "p", first_q.uuid: "q"}
    assert nova.servers.by_id[first_p.uuid].scope == "trust-of-p"
    assert nova.servers.by_id[first_q.uuid].scope == "trust-of-q"


def test_an_agent_is_believed_about_its_own_project_only(settings):
    instance = add_instance("a", 0, project="p")
    reported = [
        {"id": "c-own", "name": "web", "project": "p"},
        {"id": "c-forged", "name": "db", "project": "q"},
    ]
    assert instances.reconcile(instance, reported, dedicated=True) == {"dropped": 0, "adopted": 1}
    assert {c.id: c.project for c in store.Container.select()} == {"c-own": "p"}
    # a row the daemon still holds is never dropped, adoptable or not
    store.Container.create(
        id="c-old", project="q", name="x", instance="a", created_at=store.utcnow() - dt.timedelta(hours=1)
    )
    instances.reconcile(instance, [*reported, {"id": "c-old", "name": "x", "project": "q"}], dedicated=True)
    assert store.Container.get_or_none(store.Container.id == "c-old") is not None


def test_a_live_instance_cannot_be_registered_again_without_its_agents_secret(settings):
    settings.gateway.registration_secret = "operator"
    data = {"uuid": "u1", "agent_url": "tcp://198.18.1.11:2376"}
    created, first = instances.register("operator", data, settings)
    assert created
    forged = {"uuid": "u1", "agent_url": "tcp://198.18.1.66:2376"}
    with pytest.raises(DockerError) as exc:
        instances.register("operator", forged, settings)
    assert exc.value.status == 409 and "needs that agent's secret" in exc.value.message
    assert store.Instance.get_by_id("u1").agent_url == "tcp://198.18.1.11:2376"
    # the same agent, restarted, presents the secret it was given
    created, second = instances.register("operator", data, settings, previous=first)
    assert not created and second != first
    # once its heartbeats have lapsed, the instance may be registered afresh (it was rebuilt)
    store.Instance.update(last_heartbeat=store.utcnow() - dt.timedelta(hours=1)).execute()
    instances.register("operator", forged, settings)
    assert store.Instance.get_by_id("u1").agent_url == "tcp://198.18.1.66:2376"


def test_an_empty_static_host_is_wiped_then_freed(settings):
    settings.placement.release_grace = 30
    add_instance("a", 0, project="p")
    add_instance("b", 1, project="q")
    store.Container.create(id="c1", project="q", name="x", instance="b")
    wiped = []
    t0 = store.utcnow()
    assert reaper.release_empty(settings, now=t0, wipe_host=lambda i: wiped.append(i.uuid)) == 0
    assert reaper.release_empty(settings, now=t0 + dt.timedelta(seconds=10), wipe_host=wiped.append) == 0
    assert not wiped and owner("a") == "p"  # within the grace
    freed = reaper.release_empty(
        settings, now=t0 + dt.timedelta(seconds=31), wipe_host=lambda i: wiped.append(i.uuid)
    )
    assert freed == 1 and wiped == ["a"]  # b holds a container: kept
    assert owner("a") is None and store.Instance.get_by_id("a").state == "up"
    assert owner("b") == "q"
    assert place(req("r"), settings).instance.uuid == "a"


def test_the_empty_host_pass_asks_the_store_a_few_questions_not_one_per_instance(settings, monkeypatch):
    settings.placement.release_grace = 30
    for i in range(60):
        add_instance(f"h{i}", i, project=f"p{i}")
        store.Container.create(id=f"c{i}", project=f"p{i}", name="x", instance=f"h{i}")
    add_instance("empty", 60, project="q")
    db = store.database.obj
    statements = []
    run = db.execute_sql

    def counted(sql, params=None, *args, **kwargs):
        statements.append(sql)
        return run(sql, params, *args, **kwargs)

    monkeypatch.setattr(db, "execute_sql", counted)
    t0 = store.utcnow()
    wiped = []
    assert reaper.release_empty(settings, now=t0, wipe_host=lambda i: wiped.append(i.uuid)) == 0
    assert len(statements) < 10, statements  # not one (or three) per claimed instance
    # A host emptied later is freed after its grace; one that fills again starts over.
    store.Container.delete().where(store.Container.id == "c7").execute()
    assert reaper.release_empty(settings, now=t0 + dt.timedelta(seconds=1), wipe_host=wiped.append) == 0
    store.Container.create(id="c7b", project="p7", name="y", instance="h7")
    assert reaper.release_empty(settings, now=t0 + dt.timedelta(seconds=2), wipe_host=wiped.append) == 0
    store.Container.delete().where(store.Container.id == "c7b").execute()
    assert reaper.release_empty(settings, now=t0 + dt.timedelta(seconds=20), wipe_host=wiped.append) == 0
    freed = reaper.release_empty(
        settings, now=t0 + dt.timedelta(seconds=31), wipe_host=lambda i: wiped.append(i.uuid)
    )
    assert freed == 1 and wiped == ["empty"]  # h7's grace began again at 20 s
    freed = reaper.release_empty(
        settings, now=t0 + dt.timedelta(seconds=51), wipe_host=lambda i: wiped.append(i.uuid)
    )
    assert freed == 1 and wiped == ["empty", "h7"] and owner("h7") is None


def test_a_host_whose_wipe_fails_stays_its_projects(settings):
    settings.placement.release_grace = 0
    add_instance("a", 0, project="p")

    def fails(instance):
        raise wipe.WipeFailed("the daemon still holds container 0123456789ab")

    t0 = store.utcnow()
    reaper.release_empty(settings, now=t0, wipe_host=fails)
    assert reaper.release_empty(settings, now=t0 + dt.timedelta(seconds=1), wipe_host=fails) == 0
    row = store.Instance.get_by_id("a")
    assert (row.project, row.state) == ("p", "up")
    with pytest.raises(DockerError):
        place(req("q"), settings)  # not free: another project never gets it unwiped


def test_the_pools_own_instances_are_deleted_not_handed_on(settings):
    settings.placement.release_grace = 0
    add_instance("a", 0, project="p")
    store.PoolMember.create(id="m1", provider="local", pool="moorage", server_id="a", state="active")
    t0 = store.utcnow()
    reaper.release_empty(settings, now=t0, wipe_host=lambda i: pytest.fail("wiped a pool instance"))
    reaper.release_empty(settings, now=t0 + dt.timedelta(seconds=5), wipe_host=lambda i: pytest.fail("wiped"))
    assert owner("a") == "p"


def _script(path, body):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_local_provider_boots_deletes_and_lists_with_its_commands(tmp_path):
    log = tmp_path / "log"
    conf = config.LocalSettings(
        boot_command=[
            _script(
                tmp_path / "boot",
                f'read secret; echo "boot $MOORAGE_POOL_MEMBER $MOORAGE_PROJECT $secret" >> {log}\n'
                'echo "making a host..."\necho host-1\n',
            )
        ],
        delete_command=[_script(tmp_path / "delete", f'echo "delete $1" >> {log}\n')],
        list_command=[
            _script(
                tmp_path / "list",
                'echo \'[{"id": "host-1", "member": "m1", "created": "2026-12-06T16:00:00Z"}]\'\n',
            )
        ],
    )
    prov = LocalProvider(conf, config.Settings())
    assert prov.can_grow and prov.max_instances == 8
    assert prov.boot("m1", "s3cret", "p") == "host-1"
    assert prov.delete("host-1") is True
    assert prov.owned_servers() == [
        {"id": "host-1", "member": "m1", "created": dt.datetime(2026, 12, 6, 16, 0)}
    ]
    assert log.read_text().splitlines() == ["boot m1 p s3cret", "delete host-1"]
    assert not LocalProvider(config.LocalSettings(), config.Settings()).can_grow


def test_local_provider_failure_names_the_command(tmp_path):
    conf = config.LocalSettings(
        boot_command=[_script(tmp_path / "boot", 'echo "no room for a host" >&2; exit 3\n')]
    )
    with pytest.raises(RuntimeError, match="boot exited 3: no room for a host"):
        LocalProvider(conf, config.Settings()).boot("m1", "s", "p")


def test_wipe_keeps_public_images_and_verifies(settings, monkeypatch):
    """The wipe against a daemon double that records what it is asked (the real daemon's
    wipe is in tests/integration/test_dedicated.py)."""
    store.ImageRef.create(
        project="", reference="busybox:latest", daemon_ref="busybox:latest", image_id="sha256:bb"
    )
    state = {
        "containers": [{"Id": "c1"}],
        "volumes": [{"Name": "v1"}],
        "networks": [{"Id": "n0", "Name": "bridge"}, {"Id": "n1", "Name": "bridge.mx"}],
        "images": [
            {"Id": "sha256:bb", "RepoTags": ["busybox:latest", "moorage/p-x/mine:1"]},
            {"Id": "sha256:aa", "RepoTags": ["moorage/p-x/app:1"]},
        ],
    }
    calls = []

    class Agent:
        def __init__(self, instance):
            pass

        def get_json(self, target, **kw):
            path = target.split("?")[0]
            if path == "/containers/json":
                return 200, state["containers"]
            if path == "/volumes":
                return 200, {"Volumes": state["volumes"]}
            if path == "/networks":
                return 200, state["networks"]
            if path == "/images/json":
                return 200, state["images"]
            if path == "/system/df":
                return 200, {"BuildCache": []}
            raise AssertionError(target)

        def call_json(self, method, target, **kw):
            calls.append(f"{method} {target}")
            path = target.split("?")[0]
            if path.startswith("/containers/"):
                state["containers"] = []
            elif path.startswith("/volumes/"):
                state["volumes"] = []
            elif path.startswith("/networks/"):
                state["networks"] = [n for n in state["networks"] if n["Id"] != path.rsplit("/", 1)[1]]
            elif path.startswith("/images/moorage"):
                state["images"][0]["RepoTags"] = ["busybox:latest"]
            elif path.startswith("/images/sha256:aa"):
                state["images"] = state["images"][:1]
            return 200, None

    monkeypatch.setattr(wipe, "AgentClient", Agent)
    wipe.wipe(add_instance("a", 0, project="p"))
    assert calls == [
        "DELETE /containers/c1?force=1&v=1",
        "DELETE /networks/n1",
        "DELETE /volumes/v1?force=1",
        "DELETE /images/moorage%2Fp-x%2Fmine%3A1?noprune=1",
        "DELETE /images/sha256:aa?force=1",
        "POST /build/prune?all=1",
    ]
    # something the daemon keeps is found by the second look
    state["volumes"] = [{"Name": "stubborn"}]
    monkeypatch.setattr(Agent, "call_json", lambda self, m, t, **kw: (200, None))
    with pytest.raises(wipe.WipeFailed, match="volume stubborn"):
        wipe.wipe(store.Instance.get_by_id("a"))
