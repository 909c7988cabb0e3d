"""Quotas: parsing, limits and usage, refusals in Docker's shape, exact under concurrency
(threads on SQLite and PostgreSQL; greenlets under gevent with psycogreen on PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from gateway import cli, config, quotas, store
from gateway.errors import DockerError
from gateway.placement import PlacementRequest, place, release
from gateway.placement.scheduler import confirm

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def settings(db_url):
    # shared tenancy: these tests put several projects on one instance
    s = config.Settings(
        gateway=config.GatewaySettings(database=db_url), placement=config.PlacementSettings(tenancy="shared")
    )
    store.init(db_url)
    store.Instance.create(uuid="a", agent_url="tcp://127.0.0.1:2001", agent_secret="s", position=1)
    yield s
    store.close()


def req(project="p", memory=0, nano_cpus=0):
    return PlacementRequest(project=project, name="", labels={}, memory=memory, nano_cpus=nano_cpus)


# -- values ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "resource,text,value",
    [
        ("containers", "5", 5),
        ("containers", 0, 0),
        ("containers", "-1", -1),
        ("volumes", "unlimited", -1),
        ("memory", "512m", 512 << 20),
        ("memory", "8g", 8 << 30),
        ("memory", "1.5GiB", 3 << 29),
        ("memory", 1024, 1024),
        ("memory", "2k", 2048),
        ("cpus", "2", 2 * quotas.NANO),
        ("cpus", 0.5, quotas.NANO // 2),
        ("cpus", "-1", -1),
        ("images", "100", 100),
    ],
)
def test_parse_value(resource, text, value):
    assert quotas.parse_value(resource, text) == value


@pytest.mark.parametrize(
    "resource,text",
    [
        ("containers", "five"),
        ("containers", "1.5"),
        ("containers", "-2"),
        ("memory", "lots"),
        ("cpus", "x"),
        ("cpus", "-3"),
        ("containers", True),
        ("disks", "1"),
    ],
)
def test_parse_value_refuses(resource, text):
    with pytest.raises(quotas.QuotaValueError) as exc:
        quotas.parse_value(resource, text)
    assert resource in str(exc.value)


def test_parse_assignment_and_format():
    assert quotas.parse_assignment("containers=5") == ("containers", 5)
    assert quotas.parse_assignment("Memory=1g") == ("memory", 1 << 30)
    with pytest.raises(quotas.QuotaValueError):
        quotas.parse_assignment("containers")
    assert quotas.format_value("memory", 512 << 20) == "512MiB"
    assert quotas.format_value("memory", 3 << 29) == "1.5GiB"
    assert quotas.format_value("cpus", 1_500_000_000) == "1.5"
    assert quotas.format_value("containers", None) == "unlimited"


def test_container_request_reads_host_config():
    assert quotas.container_request({"Memory": 256 << 20, "NanoCpus": 500_000_000}) == (
        256 << 20,
        500_000_000,
    )
    assert quotas.container_request({"CpuQuota": 50000, "CpuPeriod": 100000}) == (0, 500_000_000)
    assert quotas.container_request({"CpuQuota": 200000}) == (0, 2 * quotas.NANO)
    assert quotas.container_request({"Memory": "x", "NanoCpus": -1}) == (0, 0)
    assert quotas.container_request(None) == (0, 0)


def test_defaults_from_settings_file(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('[quotas]\ncontainers = 5\nmemory = "1g"\ncpus = 2.5\n')
    s = config.load(str(path))
    assert quotas.defaults(s) == {"containers": 5, "memory": 1 << 30, "cpus": 2_500_000_000}
    path.write_text('[quotas]\ncontainers = "many"\n')
    with pytest.raises(quotas.QuotaValueError):
        quotas.defaults(config.load(str(path)))


# -- containers (in the placement transaction) ----------------------------------------------------
def test_container_quota_refuses_with_docker_shaped_403(settings):
    quotas.set_limits("p", {"containers": 2})
    first = place(req(), settings)
    place(req(), settings)
    with pytest.raises(DockerError) as exc:
        place(req(), settings)
    assert exc.value.status == 403
    assert exc.value.message == (
        "quota exceeded for containers in project p: limit 2, in use 2; remove "
        "containers you no longer need (docker rm) or ask your operator to raise it "
        "(moorage quota set)"
    )
    assert json.loads(exc.value.body()) == {"message": exc.value.message}
    place(req(project="other"), settings)  # another project is not affected
    release(first)  # a failed create gives its slot back
    place(req(), settings)


def test_defaults_apply_and_project_values_override(settings):
    settings.quotas = config.QuotaSettings(containers=1)
    place(req(), settings)
    with pytest.raises(DockerError):
        place(req(), settings)
    quotas.set_limits("p", {"containers": quotas.UNLIMITED})
    place(req(), settings)
    quotas.unset_limits("p", ["containers"])
    with pytest.raises(DockerError):
        place(req(), settings)


def test_memory_and_cpus_quotas(settings):
    quotas.set_limits("p", {"memory": 1 << 30, "cpus": quotas.NANO})
    with pytest.raises(DockerError) as exc:
        place(req(), settings)
    assert exc.value.status == 403 and "--memory" in exc.value.message
    p = place(req(memory=768 << 20, nano_cpus=quotas.NANO // 2), settings)
    confirm(p, "c" * 64, "web", "p", {})
    assert store.Container.get_by_id("c" * 64).memory == 768 << 20
    with pytest.raises(DockerError) as exc:
        place(req(memory=512 << 20, nano_cpus=quotas.NANO // 4), settings)
    assert exc.value.message.startswith(
        "quota exceeded for memory in project p: limit 1GiB, in use 768MiB, this container asks 512MiB;"
    )
    with pytest.raises(DockerError) as exc:
        place(req(memory=128 << 20, nano_cpus=quotas.NANO), settings)
    assert "quota exceeded for cpus in project p: limit 1, in use 0.5" in exc.value.message
    place(req(memory=256 << 20, nano_cpus=quotas.NANO // 2), settings)


def test_concurrent_creates_never_exceed_the_quota(settings):
    quotas.set_limits("p", {"containers": 5})
    results, errors = [], []

    def worker():
        try:
            results.append(place(req(), settings))
        except DockerError as exc:
            errors.append((exc.status, exc.message))
        finally:
            store.release_connection()

    threads = [threading.Thread(target=worker) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 5
    assert len(errors) == 25 and {e[0] for e in errors} == {403}
    assert all("limit 5, in use 5" in e[1] for e in errors)
    assert store.Container.select().where(store.Container.project == "p").count() == 5


# -- volumes, networks, images (reserve / release / confirm) -------------------------------------
def test_reserve_counts_rows_and_reservations(settings):
    quotas.set_limits("p", {"volumes": 2})
    store.Volume.create(daemon_name="p_v1", project="p", name="v1", instance="a")
    r = quotas.reserve("p", "volumes", settings)
    with pytest.raises(DockerError) as exc:
        quotas.reserve("p", "volumes", settings)
    assert exc.value.status == 403 and exc.value.message.startswith(
        "quota exceeded for volumes in project p: limit 2, in use 2; remove volumes you no longer need "
        "(docker volume rm)"
    )
    quotas.release(r)
    r = quotas.reserve("p", "volumes", settings)
    quotas.confirm(r, lambda: store.Volume.create(daemon_name="p_v2", project="p", name="v2", instance="a"))
    assert quotas.usage("p")["volumes"] == 2
    assert store.QuotaReservation.select().count() == 0
    with pytest.raises(DockerError), quotas.reserving("p", "volumes", settings):
        pass
    quotas.set_limits("p", {"volumes": 3})
    with pytest.raises(RuntimeError), quotas.reserving("p", "volumes", settings):
        raise RuntimeError("the daemon said no")
    assert store.QuotaReservation.select().count() == 0  # released on failure


def test_networks_quota(settings):
    quotas.set_limits("p", {"networks": 1})
    store.Network.create(id="n" * 64, project="p", name="app", daemon_name="p_app", instance="a")
    with pytest.raises(DockerError) as exc:
        quotas.reserve("p", "networks", settings)
    assert "docker network rm" in exc.value.message


def test_stale_reservations_stop_counting(settings):
    quotas.set_limits("p", {"networks": 1})
    quotas.reserve("p", "networks", settings)
    store.QuotaReservation.update(created_at=store.utcnow() - quotas.RESERVATION_TTL * 2).execute()
    quotas.reserve("p", "networks", settings)  # the stale one is dropped
    assert store.QuotaReservation.select().count() == 1


def test_images_count_distinct_image_ids(settings):
    ImageRef = store.ImageRef
    assert quotas.usage("p")["images"] == 0
    for ref, image in (("busybox:latest", "sha256:1"), ("busybox:1", "sha256:1"), ("app:1", "sha256:2")):
        ImageRef.create(project="p", reference=ref, daemon_ref="moorage/p-p/" + ref, image_id=image)
    ImageRef.create(project="q", reference="x", daemon_ref="moorage/p-q/x", image_id="sha256:3")
    assert quotas.usage("p")["images"] == 2
    quotas.set_limits("p", {"images": 2})
    with pytest.raises(DockerError) as exc:
        quotas.reserve("p", "images", settings)
    assert "limit 2, in use 2; remove images you no longer need (docker rmi)" in exc.value.message


def image_row(project: str, image_id: str, reference: str = "") -> None:
    store.ImageRef.create(
        project=project,
        reference=reference,
        daemon_ref="moorage/p-x/" + reference if reference else "",
        image_id=image_id,
    )


def test_settle_images_records_within_the_quota_and_drops_the_reservation(settings):
    quotas.set_limits("p", {"images": 2})
    image_row("p", "sha256:1", "a:1")
    r = quotas.reserve("p", "images", settings)
    assert quotas.usage("p")["images"] == 2  # the reservation counts while the pull runs
    with pytest.raises(DockerError):
        quotas.reserve("p", "images", settings)
    quotas.settle_images(r, "p", ["sha256:2"], lambda: image_row("p", "sha256:2", "b:1"), settings)
    assert quotas.usage("p")["images"] == 2 and store.QuotaReservation.select().count() == 0
    # the project at its quota: a new name for an image it holds adds none, so it is recorded
    quotas.settle_images(None, "p", ["2"], lambda: image_row("p", "sha256:2", "c:1"), settings)
    assert store.ImageRef.select().where(store.ImageRef.project == "p").count() == 3


def test_settle_images_refuses_what_does_not_fit_and_records_nothing(settings):
    quotas.set_limits("p", {"images": 3})
    image_row("p", "sha256:1")
    r = quotas.reserve("p", "images", settings)
    recorded = []
    with pytest.raises(DockerError) as exc:  # a load that made three images, one of them held
        quotas.settle_images(
            r, "p", ["sha256:1", "sha256:2", "sha256:3", "sha256:4"], lambda: recorded.append(1), settings
        )
    assert exc.value.status == 403 and recorded == []
    assert exc.value.message.startswith(
        "quota exceeded for images in project p: limit 3, in use 1, this request "
        "adds 3; remove images you no longer need (docker rmi)"
    )
    assert store.QuotaReservation.select().count() == 0  # released when refused too
    quotas.settle_images(
        quotas.reserve("p", "images", settings),
        "p",
        ["sha256:2", "sha256:3"],
        lambda: [image_row("p", "sha256:2"), image_row("p", "sha256:3")],
        settings,
    )
    assert quotas.usage("p")["images"] == 3


def test_settle_images_is_exact_even_when_a_reservation_expired(settings):
    """A build longer than the reservation's TTL: its reservation stopped counting and another
    took the last image; settling checks again instead of trusting the reservation."""
    quotas.set_limits("p", {"images": 1})
    slow = quotas.reserve("p", "images", settings)
    store.QuotaReservation.update(created_at=store.utcnow() - quotas.RESERVATION_TTL * 2).execute()
    fast = quotas.reserve("p", "images", settings)
    quotas.settle_images(fast, "p", ["sha256:f"], lambda: image_row("p", "sha256:f"), settings)
    with pytest.raises(DockerError):
        quotas.settle_images(slow, "p", ["sha256:s"], lambda: image_row("p", "sha256:s"), settings)
    assert quotas.usage("p")["images"] == 1


def test_no_quota_settles_anything(settings):
    quotas.settle_images(None, "p", ["sha256:1", "sha256:2"], lambda: image_row("p", "sha256:1"), settings)
    assert quotas.usage("p")["images"] == 1


@pytest.mark.parametrize("reserve_first", [True, False], ids=["reserved", "settled-only"])
def test_concurrent_image_creates_never_exceed_the_quota(settings, reserve_first):
    """Threads as concurrent pulls/builds of distinct images: exactly the quota is recorded,
    whether they reserve first (the routes) or only settle (the check at settle alone is exact)."""
    quotas.set_limits("p", {"images": 4})
    image_row("p", "sha256:0")
    made, refused = [], []

    def worker(i):
        try:
            r = quotas.reserve("p", "images", settings) if reserve_first else None
            quotas.settle_images(r, "p", [f"sha256:{i}"], lambda: image_row("p", f"sha256:{i}"), settings)
            made.append(i)
        except DockerError as exc:
            refused.append((exc.status, exc.message))
        finally:
            store.release_connection()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(1, 25)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 3 and len(refused) == 21 and {s for s, _ in refused} == {403}
    assert all("quota exceeded for images in project p: limit 4, in use 4" in m for _, m in refused)
    assert quotas.usage("p")["images"] == 4 and store.QuotaReservation.select().count() == 0


def test_a_network_or_volume_placement_is_no_container(settings):
    """Where a new network or volume goes is asked of the scheduler (a probe): the project's
    container quotas do not refuse it, and it holds no slot that a container create would see."""
    quotas.set_limits("p", {"containers": 1, "memory": 1 << 30})
    probe = PlacementRequest(project="p", name="", labels={}, probe=True)
    assert place(probe, settings).instance.uuid == "a"  # memory quota: no --memory, yet not refused
    assert store.Container.select().count() == 0
    confirm(place(req(memory=256 << 20), settings), "c" * 64, "web", "p", {})
    assert place(probe, settings).instance.uuid == "a"  # containers quota full: still not refused
    assert quotas.usage("p")["containers"] == 1


# -- shown to the project and the operator --------------------------------------------------------
def test_info_labels_and_report(settings):
    settings.quotas = config.QuotaSettings(volumes=10)
    quotas.set_limits("p", {"containers": 5, "memory": 1 << 30})
    confirm(place(req(memory=256 << 20), settings), "d" * 64, "web", "p", {})
    assert quotas.info_labels("p", settings) == [
        "moorage.quota.containers=1/5",
        "moorage.quota.memory=256MiB/1GiB",
        "moorage.quota.cpus=0/unlimited",
        "moorage.quota.volumes=0/10",
        "moorage.quota.networks=0/unlimited",
        "moorage.quota.images=0/unlimited",
    ]
    report = quotas.report("p", settings)
    assert report["containers"] == {"limit": 5, "in_use": 1, "source": "project"}
    assert report["volumes"]["source"] == "default" and report["cpus"]["source"] == "none"


def test_cli_quota_set_show_unset(settings, capsys):
    url = settings.gateway.database
    assert cli.main(["--db", url, "quota", "set", "proj1", "containers=5", "memory=2g", "cpus=1.5"]) == 0
    out = capsys.readouterr().out
    assert "containers" in out and "2GiB" in out and "project" in out
    assert cli.main(["--db", url, "quota", "show", "proj1", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["project"] == "proj1"
    assert doc["quotas"]["containers"] == {"limit": 5, "in_use": 0, "source": "project"}
    assert doc["quotas"]["memory"]["limit"] == 2 << 30 and doc["quotas"]["cpus"]["limit"] == 1.5
    assert cli.main(["--db", url, "quota", "set", "proj1", "containers=unlimited"]) == 0
    capsys.readouterr()
    assert cli.main(["--db", url, "quota", "unset", "proj1", "memory"]) == 0
    capsys.readouterr()
    cli.main(["--db", url, "quota", "show", "proj1", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)["quotas"]
    assert doc["containers"] == {"limit": None, "in_use": 0, "source": "project"}
    assert doc["memory"]["source"] == "none"
    assert cli.main(["--db", url, "quota", "set", "proj1", "containers=lots"]) == 2
    assert "containers" in capsys.readouterr().err
    assert cli.main(["--db", url, "quota", "set", "proj1"]) == 2


# -- under gevent, on PostgreSQL ------------------------------------------------------------------
# As in gunicorn: its master imports the app (and so peewee) before a gevent worker patches.
GEVENT_SCRIPT = r"""
import sys
from gateway import config, store
from gevent import monkey
monkey.patch_all()
import gevent
from gateway.errors import DockerError
from gateway.placement import PlacementRequest, place
from gateway import quotas

assert store.cooperative()
url = sys.argv[1]
store.init(url)
db = store.database.obj
store.Instance.create(uuid="a", agent_url="tcp://127.0.0.1:1", agent_secret="s", position=1, capacity=12)
quotas.set_limits("p", {"containers": 5})
settings = config.Settings(
    gateway=config.GatewaySettings(database=url), placement=config.PlacementSettings(tenancy="shared")
)
store.release_connection()
conns, ok, refused = set(), [], []

def create(project):
    try:
        db.execute_sql("SELECT pg_sleep(0.05)")  # yields: every greenlet holds a connection at once
        conns.add(id(db.connection()))
        place(PlacementRequest(project, "", {}), settings)
        ok.append(project)
    except DockerError as exc:
        refused.append((project, exc.status))
    finally:
        store.release_connection()

gevent.joinall([gevent.spawn(create, "p" if i % 2 else "q") for i in range(30)], timeout=60)
print(len(conns), ok.count("p"), ok.count("q"), sorted(set(refused)))
"""


def test_gevent_greenlets_each_get_their_own_connection_and_quotas_hold(postgres_url):
    proc = subprocess.run(
        [sys.executable, "-c", GEVENT_SCRIPT, postgres_url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    conns, p_ok, q_ok, refused = proc.stdout.strip().split(maxsplit=3)
    assert int(conns) > 1  # not one shared connection: peewee's state is greenlet-local
    assert (int(p_ok), int(q_ok)) == (5, 7)  # quota 5 for p; capacity 12 in all
    assert refused == "[('p', 403), ('q', 503)]"


def test_concurrent_reservations_never_exceed_the_quota(settings):
    quotas.set_limits("p", {"volumes": 3})
    store.Volume.create(daemon_name="p_v0", project="p", name="v0", instance="a")
    got, refused = [], []

    def worker():
        try:
            got.append(quotas.reserve("p", "volumes", settings))
        except DockerError as exc:
            refused.append(exc.status)
        finally:
            store.release_connection()

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(got), refused) == (2, [403] * 18)
    assert quotas.usage("p")["volumes"] == 3


@pytest.mark.parametrize("resource", ["networks", "volumes"])
def test_concurrent_creates_that_confirm_never_exceed_the_quota(settings, resource):
    """Reserve, a daemon call (a sleep), confirm: a confirm that commits between a check's two
    counts (rows, then reservations) must not make both miss its object (PostgreSQL's
    per-statement snapshots), so confirms take the project's lock too."""
    import random
    import time
    import uuid

    quotas.set_limits("p", {resource: 5})
    made, refused = [], []

    def record(i):
        if resource == "networks":
            return store.Network.create(
                id=uuid.uuid4().hex, project="p", name=f"n{i}", daemon_name=f"n{i}", instance="a"
            )
        return store.Volume.create(daemon_name=f"v{i}", project="p", name=f"v{i}", instance="a")

    def worker(i):
        try:
            with quotas.reserving("p", resource, settings) as reservation:
                time.sleep(random.random() * 0.2)
                quotas.confirm(reservation, lambda: record(i))
            made.append(i)
        except DockerError as exc:
            refused.append(exc.status)
        finally:
            store.release_connection()

    for _ in range(2):
        threads = [
            threading.Thread(target=worker, args=(i,))
            for i in range(len(made) + len(refused), len(made) + len(refused) + 30)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(made) == 5 and set(refused) == {403}
    assert quotas.usage("p")[resource] == 5 and store.QuotaReservation.select().count() == 0
