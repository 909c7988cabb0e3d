"""The instance pool's logic with an in-process Nova double (unit level only: tests/nova has the real one)."""

import datetime as dt
import re
import threading
import time
import uuid

import pytest
from cryptography.fernet import Fernet
from keystoneauth1 import exceptions as ksa_exc
from keystoneauth1.identity import v3
from novaclient import exceptions as nova_exc

from gateway import config, quotas, store
from gateway.errors import DockerError
from gateway.placement import PlacementRequest, place, pool, reaper, scheduler
from gateway.placement.nova import NovaProvider
from gateway.store import schema
from gateway.tenancy.trusts import Delegation


class FakeServer:
    def __init__(self, nova, name, meta, userdata):
        self.nova = nova
        self.id = str(uuid.uuid4())
        self.name = name
        self.metadata = dict(meta)
        self.userdata = userdata
        self.created = store.utcnow().isoformat() + "Z"
        self.scope = None  # the trust it was created through (its project); None: the service's

    def delete(self):
        self.nova.deleted.append(self.id)
        self.nova.servers.by_id.pop(self.id, None)


class FakeServers:
    def __init__(self, nova):
        self.nova = nova
        self.by_id = {}
        self.creates = []

    def create(self, name, image, flavor, scope=None, **kw):
        if self.nova.fail:
            raise self.nova.fail if isinstance(self.nova.fail, Exception) else RuntimeError(self.nova.fail)
        self.creates.append((name, image, flavor, kw))
        server = FakeServer(self.nova, name, kw.get("meta") or {}, kw.get("userdata") or "")
        server.scope = scope
        self.by_id[server.id] = server
        if self.nova.on_create:
            self.nova.on_create(server)
        return server

    def get(self, server_id):
        if server_id not in self.by_id:
            raise nova_exc.NotFound(404)
        return self.by_id[server_id]

    def list(self, detailed=True):
        return list(self.by_id.values())


class ScopedServers:
    """One project's view, as a client scoped to it sees Nova: its own servers only."""

    def __init__(self, servers, scope):
        self.all, self.scope = servers, scope

    def create(self, name, image, flavor, **kw):
        return self.all.create(name, image, flavor, scope=self.scope, **kw)

    def get(self, server_id):
        server = self.all.get(server_id)
        if server.scope != self.scope:
            raise nova_exc.NotFound(404)
        return server

    def list(self, detailed=True):
        return [s for s in self.all.list() if s.scope == self.scope]


class FakeFlavor:
    id = "f1"
    name = "m1.moorage"


class FakeNova:
    def __init__(self):
        self.servers = FakeServers(self)
        self.flavors = type("Flavors", (), {"list": lambda self, is_public=None: [FakeFlavor()]})()
        self.deleted = []
        self.fail = ""
        self.on_create = None
        self.opened = []  # the trust ID of each client the provider opened (None: the service's)
        self.client = self  # novaclient's keystoneauth adapter: the provider asks it for a token
        self.refuse_token = None  # a keystoneauth exception its token request raises

    def get_token(self):
        if self.refuse_token is not None:
            raise self.refuse_token
        return "a-trust-scoped-token"

    def open(self, trust_id):
        """The client the provider asks for: scoped to the trust's project, or the service's."""
        self.opened.append(trust_id)
        view = type("ScopedNova", (), {})()
        view.servers = ScopedServers(self.servers, trust_id)
        view.flavors, view.client = self.flavors, self
        return view


def secret_of(server) -> str:
    return re.search(r"^BOOTSTRAP_SECRET='?([^'\n]+)'?$", server.userdata, re.M).group(1)


@pytest.fixture
def settings(db_url):
    """Every pool test on SQLite and on PostgreSQL (claims and drains share the placement lock)."""
    s = config.Settings(gateway=config.GatewaySettings(database=db_url))
    s.placement = config.PlacementSettings(provider="nova", capacity=2, pool_id="test-pool")
    s.identity = config.IdentitySettings(backend="keystone", auth_url="http://198.18.1.5:5000/v3")
    store.init(s.gateway.database)
    yield s
    store.close()


@pytest.fixture
def nova():
    return FakeNova()


@pytest.fixture
def provider(settings, nova, monkeypatch, tmp_path):
    """Dedicated tenancy (the default): projects p and q each hold a trust already."""
    key = tmp_path / "trust.key"
    key.write_bytes(Fernet.generate_key() + b"\n")
    prov = NovaProvider(
        config.NovaSettings(
            flavor="m1.moorage",
            gateway_url="http://198.18.1.1:2375",
            boot_timeout=5,
            empty_grace_seconds=10,
            trust_key_file=str(key),
        ),
        settings,
        client_factory=nova.open,
    )
    assert prov.trusts is not None
    for project in ("p", "q"):
        prov.trusts.put(project, f"trust-of-{project}", f"user-of-{project}", "moorage-user", ["member"])
    monkeypatch.setitem(pool._providers, ("nova", id(settings)), prov)
    monkeypatch.setattr(pool, "POLL_INTERVAL", 0.02)
    return prov


def register_after(nova, delay=0.05):
    """Play the instance: its agent registers with the secret from user-data."""

    def on_create(server):
        def later():
            time.sleep(delay)
            for _ in range(100):
                try:
                    pool.bootstrap(secret_of(server), {"agent_url": "tcp://198.18.1.11:2376", "capacity": 2})
                    return
                except DockerError as exc:
                    if exc.status != 409:  # not yet recorded by the booter: retry
                        raise
                    time.sleep(0.01)

        threading.Thread(target=later, daemon=True).start()

    nova.on_create = on_create


def req(name="", project="p", delegation=None):
    return PlacementRequest(project=project, name=name, labels={}, delegation=delegation)


def used(instance_uuid):
    return store.Container.select().where(store.Container.instance == instance_uuid).count()


def test_first_create_boots_and_waits_for_the_agent(settings, provider, nova):
    register_after(nova)
    placement = place(req(), settings)
    assert len(nova.servers.creates) == 1
    _name, image, flavor, kw = nova.servers.creates[0]
    assert image is None and flavor == "f1" and kw["nics"] == "none"
    assert kw["block_device_mapping_v2"][0]["source_type"] == "blank"
    assert kw["meta"]["moorage:pool"] == "test-pool"
    instance = placement.instance
    assert instance.uuid in nova.servers.by_id and instance.provider == "nova" and instance.state == "up"
    assert "--bootstrap-secret-file" in kw["userdata"] and "--provider nova" in kw["userdata"]


def test_grows_only_when_every_instance_is_full(settings, provider, nova):
    register_after(nova)
    first = place(req(), settings).instance.uuid
    second = place(req(), settings).instance.uuid
    assert first == second and len(nova.servers.creates) == 1  # room left: no boot
    third = place(req(), settings).instance.uuid
    assert third != first and len(nova.servers.creates) == 2
    assert used(first) == 2 and used(third) == 1


def test_concurrent_creates_boot_one_instance_per_capacity(settings, provider, nova):
    register_after(nova, delay=0.3)
    results, errors = [], []

    def create():
        try:
            results.append(place(req(), settings).instance.uuid)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            store.release_connection()

    threads = [threading.Thread(target=create) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    assert len(results) == 5
    assert len(nova.servers.creates) == 3  # ceil(5 / 2)
    assert all(used(u) <= 2 for u in set(results))


def test_boot_failure_answers_503_and_records_it(settings, provider, nova):
    nova.fail = "Quota exceeded for instances"
    with pytest.raises(DockerError) as exc:
        place(req(), settings)
    assert exc.value.status == 503
    assert exc.value.message == "no instance could be added: Quota exceeded for instances"
    assert store.PoolMember.get().state == store.FAILED


def test_agent_that_never_registers_times_out(settings, provider, nova):
    provider.boot_timeout = 0.3
    with pytest.raises(DockerError) as exc:
        place(req(), settings)
    assert exc.value.status == 503 and "did not register its agent within 0.3 s" in exc.value.message
    server_id = next(iter(nova.servers.by_id))
    reaper.reap_once(settings, provider)
    assert nova.deleted == [server_id]  # the reaper deletes what failed
    assert store.Instance.get_or_none(store.Instance.uuid == server_id) is None


def test_bootstrap_secret_is_one_time(settings, provider, nova):
    register_after(nova)
    place(req(), settings)
    server = next(iter(nova.servers.by_id.values()))
    with pytest.raises(DockerError) as exc:
        pool.bootstrap(secret_of(server), {"agent_url": "tcp://198.18.1.66:2376"})
    assert exc.value.status == 401
    assert store.Instance.get_by_id(server.id).agent_url == "tcp://198.18.1.11:2376"


def test_reaper_deletes_after_the_grace_only(settings, provider, nova):
    register_after(nova)
    placement = place(req(), settings)
    server_id = placement.instance.uuid
    store.Container.delete().execute()  # the container is gone
    t0 = store.utcnow()
    idle = lambda inst: ""  # noqa: E731
    reaper.reap_once(settings, provider, now=t0, check_daemon=idle)  # notes when it became empty
    reaper.reap_once(settings, provider, now=t0 + dt.timedelta(seconds=9), check_daemon=idle)
    assert not nova.deleted
    # a container during the grace restarts it
    store.Container.create(id="c1", project="p", name="x", instance=server_id)
    reaper.reap_once(settings, provider, now=t0 + dt.timedelta(seconds=9.5), check_daemon=idle)
    store.Container.delete().execute()
    reaper.reap_once(settings, provider, now=t0 + dt.timedelta(seconds=11), check_daemon=idle)
    reaper.reap_once(settings, provider, now=t0 + dt.timedelta(seconds=20), check_daemon=idle)
    assert not nova.deleted
    reaper.reap_once(settings, provider, now=t0 + dt.timedelta(seconds=22), check_daemon=idle)
    assert nova.deleted == [server_id]
    assert store.Instance.get_or_none(store.Instance.uuid == server_id) is None
    assert store.PoolMember.select().count() == 0


def test_reaper_keeps_an_instance_whose_daemon_holds_something(settings, provider, nova):
    register_after(nova)
    server_id = place(req(), settings).instance.uuid
    store.Container.delete().execute()
    t0 = store.utcnow()
    busy = lambda inst: "1 named volume(s)"  # noqa: E731
    reaper.reap_once(settings, provider, now=t0, check_daemon=busy)
    reaper.reap_once(settings, provider, now=t0 + dt.timedelta(seconds=30), check_daemon=busy)
    assert not nova.deleted
    assert store.Instance.get_by_id(server_id).state == "up"
    assert store.PoolMember.get().state == store.ACTIVE


def test_never_deletes_what_it_did_not_create(settings, provider, nova):
    # a static instance, empty, and a server of another pool (or none) in the same project
    store.Instance.create(uuid="static-1", agent_url="tcp://127.0.0.1:1", agent_secret="s", position=1)
    foreign = FakeServer(nova, "theirs", {"moorage:pool": "another-gateway"}, "")
    unmarked = FakeServer(nova, "plain", {}, "")
    nova.servers.by_id.update({foreign.id: foreign, unmarked.id: unmarked})
    t0 = store.utcnow()
    for step in range(0, 100, 10):
        reaper.reap_once(settings, provider, now=t0 + dt.timedelta(seconds=step), check_daemon=lambda i: "")
    assert reaper.sweep_orphans(settings, provider, now=t0 + dt.timedelta(hours=1)) == 0
    assert not nova.deleted
    assert provider.delete(foreign.id) is False and provider.delete(unmarked.id) is False
    assert store.Instance.get_or_none(store.Instance.uuid == "static-1") is not None
    # a marked server no member knows (its booter died) is this pool's: swept after boot_timeout
    orphan = FakeServer(nova, "ours", {"moorage:pool": "test-pool", "moorage:member": "gone"}, "")
    nova.servers.by_id[orphan.id] = orphan
    assert reaper.sweep_orphans(settings, provider, now=store.utcnow()) == 0
    assert reaper.sweep_orphans(settings, provider, now=store.utcnow() + dt.timedelta(seconds=6)) == 1
    assert nova.deleted == [orphan.id]


@pytest.mark.parametrize("kind", ["local", "static"])
def test_providers_that_cannot_grow_keep_todays_refusal(tmp_path, kind):
    s = config.Settings(gateway=config.GatewaySettings(database=f"sqlite:///{tmp_path}/m.db"))
    s.placement.provider = kind
    store.init(s.gateway.database)
    with pytest.raises(DockerError) as exc:
        place(req(), s)
    assert exc.value.status == 503 and exc.value.message.startswith("no instance is available")


def test_reaper_lease_has_one_holder(settings):
    now = store.utcnow()
    assert reaper.take_lease("reaper", "a", 10, now)
    assert not reaper.take_lease("reaper", "b", 10, now)
    assert reaper.take_lease("reaper", "a", 10, now + dt.timedelta(seconds=5))
    assert reaper.take_lease("reaper", "b", 10, now + dt.timedelta(seconds=16))


def test_migration_adds_the_pool_tables_to_a_database_at_m4(tmp_path):
    """A database made by the gateway before the pool (schema version 5: m0..m4) upgrades."""
    url = f"sqlite:///{tmp_path}/old.db"
    store.init(url, migrate=False)
    db = store.database.obj
    before_pool = store.MIGRATIONS.index(schema._m5_pool)
    assert before_pool == 5, "the pool's migration comes after m4 (images), never before"
    with db.atomic():
        db.create_tables([store.SchemaVersion], safe=True)
        for step in store.MIGRATIONS[:before_pool]:
            step(db)
        store.SchemaVersion.create(version=before_pool)
    store.Instance.create(uuid="i1", agent_url="tcp://127.0.0.1:1", agent_secret="s")
    store.Container.create(id="c" * 64, project="p", name="web", instance="i1", memory=1 << 20)
    assert not db.table_exists("pool_member")
    assert store.upgrade() == (before_pool, store.SCHEMA_VERSION)
    assert db.table_exists("pool_member") and db.table_exists("pool_lease")
    assert store.Container.get_by_id("c" * 64).memory == 1 << 20
    assert store.upgrade() == (store.SCHEMA_VERSION, store.SCHEMA_VERSION)
    store.close()


# -- with the placement transaction: names, quotas, networks and volumes --------------------------


def test_a_create_refused_for_its_name_or_quota_boots_nothing(settings, provider, nova):
    register_after(nova)
    placement = place(req("web"), settings)
    scheduler.confirm(placement, "c" * 64, "web", "p", {})
    place(req(), settings)  # the instance (capacity 2) is full now
    with pytest.raises(DockerError) as exc:
        place(req("web"), settings)
    assert exc.value.status == 409
    quotas.set_limits("q", {"containers": 0})
    with pytest.raises(DockerError) as exc:
        place(req(project="q"), settings)
    assert exc.value.status == 403
    assert len(nova.servers.creates) == 1, "a refused create must not boot an instance"
    assert store.PoolMember.select().where(store.PoolMember.state == store.BUILDING).count() == 0


def test_a_new_instance_with_room_is_used_before_booting_another(settings, provider, nova):
    """The claim is made in the placement transaction: once the first boot's agent is up,
    a create finds its free slot and boots nothing."""
    register_after(nova)
    first = place(req(), settings).instance.uuid
    assert place(req(), settings).instance.uuid == first
    assert len(nova.servers.creates) == 1
    store.Container.delete().where(store.Container.instance == first).execute()
    assert place(req(), settings).instance.uuid == first
    assert len(nova.servers.creates) == 1


@pytest.mark.parametrize("what", ["network", "volume", "image"])
def test_reaper_keeps_an_instance_holding_a_network_or_volume(settings, provider, nova, what):
    register_after(nova)
    server_id = place(req(), settings).instance.uuid
    store.Container.delete().execute()
    if what == "network":
        store.Network.create(id="n" * 64, project="p", name="app", daemon_name="app_p", instance=server_id)
    elif what == "volume":
        store.Volume.create(daemon_name="data_p", project="p", name="data", instance=server_id)
    else:  # the only copy of a project's image (a public one, on every instance, holds nothing)
        store.ImageRef.create(
            project="p", reference="app:1", daemon_ref="moorage/p-p/app:1", image_id="sha256:a"
        )
        store.ImagePresence.create(image_id="sha256:a", instance=server_id)
        store.ImageRef.create(
            project="", reference="busybox:latest", daemon_ref="busybox:latest", image_id="sha256:b"
        )
        store.ImagePresence.create(image_id="sha256:b", instance=server_id)
    t0 = store.utcnow()
    idle = lambda inst: ""  # noqa: E731
    for step in (0, 30, 60):
        reaper.reap_once(settings, provider, now=t0 + dt.timedelta(seconds=step), check_daemon=idle)
    assert not nova.deleted
    assert store.Instance.get_by_id(server_id).state == "up"
    store.Network.delete().execute()
    store.Volume.delete().execute()
    store.ImageRef.delete().where(store.ImageRef.project == "p").execute()  # docker rmi app:1
    for step in (90, 120):
        reaper.reap_once(settings, provider, now=t0 + dt.timedelta(seconds=step), check_daemon=idle)
    assert nova.deleted == [server_id]
    assert store.Instance.get_or_none(store.Instance.uuid == server_id) is None


def test_publish_by_id_before_any_instance_runs(tmp_path, capsys):
    """`moorage images publish REF --id ID`: a nova pool has no instance to ask yet."""
    from gateway import cli, imagemap

    url = f"sqlite:///{tmp_path}/m.db"
    image_id = "sha256:" + "ab" * 32
    assert cli.main(["--db", url, "images", "publish", "busybox:latest", "--id", "abc"]) == 2
    assert "not a full image ID" in capsys.readouterr().err
    assert cli.main(["--db", url, "images", "publish", "busybox:latest", "--id", image_id]) == 0
    found = imagemap.resolve("any-project", "busybox")
    assert found is not None and found.public and found.image_id == image_id
    assert store.ImagePresence.select().count() == 0
    store.close()


def test_a_server_deleted_behind_moorages_back_is_forgotten_once_its_agent_is_silent(
    settings, provider, nova
):
    register_after(nova)
    placement = place(req("web"), settings)
    server_id = placement.instance.uuid
    scheduler.confirm(placement, "c" * 64, "web", "p", {})
    store.Volume.create(daemon_name="data_p", project="p", name="data", instance=server_id)
    nova.servers.by_id.pop(server_id)  # `openstack server delete` by someone else
    reaper.sweep_orphans(settings, provider)
    assert store.Instance.get_or_none(store.Instance.uuid == server_id) is not None  # its agent still answers
    store.Instance.update(last_heartbeat=store.utcnow() - dt.timedelta(hours=1)).execute()
    reaper.sweep_orphans(settings, provider)
    assert store.Instance.get_or_none(store.Instance.uuid == server_id) is None
    assert store.Container.select().count() == 0 and store.Volume.select().count() == 0
    assert store.PoolMember.select().count() == 0
    assert not nova.deleted  # nothing left to delete


# -- the provider acts in each project through its own trust --------------------------------------


def test_each_projects_server_is_created_and_deleted_through_its_own_trust(settings, provider, nova):
    register_after(nova)
    on_p = place(req(project="p"), settings).instance.uuid
    on_q = place(req(project="q"), settings).instance.uuid
    servers = nova.servers.by_id
    assert servers[on_p].scope == "trust-of-p" and servers[on_q].scope == "trust-of-q"
    # each project lists its own; a server of the service project is listed once, as the service's
    listed = {s["id"] for s in provider.owned_servers()}
    assert listed == {on_p, on_q}
    # the reaper deletes q's empty instance through q's trust (p's cannot even see it)
    store.Container.delete().execute()
    t0 = store.utcnow()
    idle = lambda inst: ""  # noqa: E731 (the daemon holds nothing)
    reaper.reap_once(settings, provider, now=t0, check_daemon=idle)
    reaper.reap_once(settings, provider, now=t0 + dt.timedelta(seconds=11), check_daemon=idle)
    assert sorted(nova.deleted) == sorted([on_p, on_q])
    assert store.PoolMember.select().count() == 0


def test_a_boot_for_a_project_without_a_trust_and_without_a_token_is_refused(settings, provider, nova):
    with pytest.raises(DockerError) as exc:
        place(req(project="r"), settings)
    assert exc.value.status == 503
    assert "through a Keystone trust, none is stored" in exc.value.message
    assert "`moorage login`" in exc.value.message
    assert nova.servers.creates == []
    assert store.PoolMember.get().state == store.FAILED


def test_a_token_of_another_project_makes_no_trust(settings, provider, nova):
    other = Delegation(token="t", user_id="u", project_id="q")
    with pytest.raises(DockerError) as exc:
        place(req(project="r", delegation=other), settings)
    assert exc.value.status == 503 and nova.servers.creates == []


def test_a_trust_keystone_no_longer_honours_is_replaced_from_the_callers_token(settings, provider, nova):
    """Revoked: Keystone refuses its token. The caller's own token makes the new one (here
    Keystone is unreachable, through keystoneauth's real session: a 503 naming Keystone)."""
    provider.conf.auth_url = "http://127.0.0.1:9/v3"  # nothing listens on the discard port
    provider._session = None
    provider._trustee = "moorage-user-id"
    nova.refuse_token = ksa_exc.NotFound("Could not find trust")
    caller = Delegation(token="tok", user_id="alice", project_id="p", project_name="alpha")
    with pytest.raises(DockerError) as exc:
        place(req(project="p", delegation=caller), settings)
    assert exc.value.status == 503
    assert "cannot reach Keystone to delegate project alpha (p) to Moorage" in exc.value.message
    assert nova.servers.creates == []
    assert provider.trusts.get("p").trust_id == "trust-of-p"  # type: ignore[union-attr]  # kept until replaced


def test_a_nova_quota_refusal_is_a_403_naming_the_project(settings, provider, nova):
    nova.fail = nova_exc.Forbidden(
        403, "Quota exceeded for instances: Requested 1, but already used 1 of 1 instances"
    )
    with pytest.raises(DockerError) as exc:
        place(req(project="p"), settings)
    assert exc.value.status == 403
    assert exc.value.message.startswith(
        "no instance could be added: Nova quota exceeded for project p: Quota exceeded for instances"
    )
    assert "raise the project's quota" in exc.value.message
    nova.fail = nova_exc.BadRequest(400, "Flavor's disk is too small for requested image.")
    with pytest.raises(DockerError) as exc:
        place(req(project="p"), settings)
    assert (
        exc.value.status == 503 and "Nova refused the flavor 'm1.moorage' in project p" in exc.value.message
    )


def test_dedicated_nova_needs_keystone_and_a_trust_key(settings, tmp_path):
    conf = config.NovaSettings(flavor="m1.moorage", gateway_url="http://198.18.1.1:2375")
    with pytest.raises(ValueError, match="trust_key_file is not set"):
        NovaProvider(conf, settings, client_factory=lambda trust_id: None)
    settings.identity = config.IdentitySettings(backend="embedded", token_file="x")
    with pytest.raises(ValueError, match='needs \\[identity\\] backend = "keystone"'):
        NovaProvider(conf, settings, client_factory=lambda trust_id: None)
    # shared tenancy: every server in the service project, no trust, no key
    settings.placement.tenancy = "shared"
    assert NovaProvider(conf, settings, client_factory=lambda trust_id: None).trusts is None


def test_shared_tenancy_boots_in_the_service_project(settings, nova, monkeypatch):
    settings.placement.tenancy = "shared"
    prov = NovaProvider(
        config.NovaSettings(flavor="m1.moorage", gateway_url="http://198.18.1.1:2375", boot_timeout=5),
        settings,
        client_factory=nova.open,
    )
    monkeypatch.setitem(pool._providers, ("nova", id(settings)), prov)
    monkeypatch.setattr(pool, "POLL_INTERVAL", 0.02)
    register_after(nova)
    server = place(req(project="p"), settings).instance.uuid
    assert nova.servers.by_id[server].scope is None and nova.opened == [None]


def test_the_trust_scoped_auth_is_keystoneauths_own_trust_scope(settings, provider):
    auth = provider._auth("a-trust-id")
    assert isinstance(auth, v3.Password)
    assert auth.trust_id == "a-trust-id" and auth.project_name is None and auth.project_id is None
    service = provider._auth()
    assert service.trust_id is None
