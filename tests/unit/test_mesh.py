"""The routing mesh's map and views (gateway/mesh.py, gateway/store/mesh.py), against a real
store (SQLite and PostgreSQL); the listeners are tested with real daemons in
tests/integration/test_port_mesh.py."""

from __future__ import annotations

import threading

import pytest

from gateway import config, mesh, store
from gateway.errors import DockerError
from gateway.placement import PlacementRequest, place
from gateway.store import mesh as table

ADDRESS = "198.18.0.1"


@pytest.fixture
def settings(db_url):
    s = config.Settings(
        gateway=config.GatewaySettings(database=db_url),
        placement=config.PlacementSettings(tenancy="shared"),
        mesh=config.MeshSettings(enabled=True, address=ADDRESS, port_min=20000, port_max=20009),
    )
    store.init(s.gateway.database)
    yield s
    store.close()


def instance(uuid: str, position: int) -> store.Instance:
    return store.Instance.create(
        uuid=uuid,
        agent_url=f"tcp://198.18.0.{10 + position}:2376",
        agent_secret="s",
        state="up",
        position=position,
        last_heartbeat=store.utcnow(),
    )


def started(cid: str, ports: dict, bindings: dict | None = None, name: str = "web") -> dict:
    """A daemon's inspect of a started container, as much of it as the mesh reads."""
    return {
        "Id": cid,
        "Name": f"/{name}",
        "HostConfig": {"PortBindings": bindings or {}},
        "NetworkSettings": {
            "Ports": {
                key: [{"HostIp": "0.0.0.0", "HostPort": str(p)}, {"HostIp": "::", "HostPort": str(p)}]
                for key, p in ports.items()
            }
        },
    }


def test_ephemeral_ports_are_unique_at_the_address_across_instances(settings):
    one, two = instance("i1", 1), instance("i2", 2)
    # both daemons chose 32768: the mesh gives each its own port at the one address
    mesh.publish(settings, one, "p1", started("a" * 64, {"80/tcp": 32768}))
    mesh.publish(settings, two, "p2", started("b" * 64, {"80/tcp": 32768, "53/udp": 32768}))
    rows = mesh.rows_of(["a" * 64, "b" * 64])
    assert [(r.protocol, r.port, r.target_host, r.target_port) for r in rows["a" * 64]] == [
        ("tcp", 20000, "198.18.0.11", 32768)
    ]
    assert sorted((r.protocol, r.port, r.target_host) for r in rows["b" * 64]) == [
        ("tcp", 20001, "198.18.0.12"),
        ("udp", 20000, "198.18.0.12"),  # each protocol has its own ports
    ]
    # a freed port is the lowest free one again
    store.forget_container("a" * 64)
    mesh.publish(settings, one, "p1", started("c" * 64, {"80/tcp": 32769}))
    assert [r.port for r in mesh.rows_of(["c" * 64])["c" * 64]] == [20000]


def test_a_named_port_taken_answers_as_dockerd(settings):
    one, two = instance("i1", 1), instance("i2", 2)
    asked = {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    mesh.publish(settings, one, "p1", started("a" * 64, {"80/tcp": 8080}, asked))
    second = started("b" * 64, {"80/tcp": 8080}, asked, name="other")
    with pytest.raises(DockerError) as exc:
        mesh.check_start(settings, "b" * 64, second)
    assert exc.value.status == 500
    assert exc.value.message == (
        f"driver failed programming external connectivity on endpoint other ({'b' * 64}): "
        "Bind for 0.0.0.0:8080 failed: port is already allocated"
    )
    with pytest.raises(DockerError):  # the race check_start cannot see: the insert refuses
        mesh.publish(settings, two, "p2", second)
    assert mesh.rows_of(["b" * 64]) == {}
    mesh.check_start(settings, "a" * 64, started("a" * 64, {}, asked))  # its own port: fine


def test_the_range_runs_out(settings):
    one = instance("i1", 1)
    mesh.publish(settings, one, "p", started("a" * 64, {f"{80 + i}/tcp": 32768 + i for i in range(10)}))
    with pytest.raises(DockerError) as exc:
        mesh.publish(settings, one, "p", started("b" * 64, {"80/tcp": 32800}))
    assert exc.value.status == 500 and "no free tcp port is left" in exc.value.message


def test_concurrent_starts_never_share_a_port(settings):
    one = instance("i1", 1)
    errors = []

    def start(n: int) -> None:
        try:
            mesh.publish(settings, one, "p", started(f"{n:064x}", {"80/tcp": 32768 + n}))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            store.release_connection()

    threads = [threading.Thread(target=start, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ports = [r.port for r in table.at(ADDRESS)]
    assert sorted(ports) == list(range(20000, 20008))


def test_views_show_the_mesh_once_per_port(settings):
    one = instance("i1", 1)
    info = started("a" * 64, {"80/tcp": 32768})
    info["NetworkSettings"]["Ports"]["9/sctp"] = [{"HostIp": "0.0.0.0", "HostPort": "32770"}]
    mesh.publish(settings, one, "p", info)
    rows = mesh.rows_of(["a" * 64])["a" * 64]
    shown = mesh.inspect_ports(settings, info["NetworkSettings"]["Ports"], rows)
    assert shown == {
        "80/tcp": [{"HostIp": ADDRESS, "HostPort": "20000"}],
        "9/sctp": [{"HostIp": "0.0.0.0", "HostPort": "32770"}],  # not forwarded: as the daemon says
    }
    ps = [
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 32768, "Type": "tcp"},
        {"IP": "::", "PrivatePort": 80, "PublicPort": 32768, "Type": "tcp"},
        {"PrivatePort": 443, "Type": "tcp"},
    ]
    assert mesh.ps_ports(settings, ps, rows) == [
        {"IP": ADDRESS, "PrivatePort": 80, "PublicPort": 20000, "Type": "tcp"},
        {"PrivatePort": 443, "Type": "tcp"},
    ]


def test_mesh_off_records_the_instance_address_and_placement_avoids_a_taken_port(settings):
    settings.mesh.enabled = False
    one, _ = instance("i1", 1), instance("i2", 2)
    asked = {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    mesh.publish(settings, one, "p", started("a" * 64, {"80/tcp": 8080}, asked))
    [row] = mesh.rows_of(["a" * 64])["a" * 64]
    assert (row.address, row.port) == ("198.18.0.11", 8080)
    assert mesh.inspect_ports(settings, {"80/tcp": []}, [row]) is None  # today's view applies
    assert mesh.explicit_ports({"PortBindings": asked}) == [("tcp", 8080)]
    request = PlacementRequest(project="p", name="", labels={}, ports=(("tcp", 8080),))
    assert place(request, settings).instance.uuid == "i2"  # fill order would say i1
    assert place(PlacementRequest(project="p", name="", labels={}), settings).instance.uuid == "i1"


def test_mesh_off_a_port_the_daemon_bound_again_is_the_new_containers(settings):
    """The first holder died without the gateway seeing (no `moorage mesh` runs with the mesh
    off): its daemon gave the port to another container, whose start must not fail."""
    settings.mesh.enabled = False
    one = instance("i1", 1)
    asked = {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    mesh.publish(settings, one, "p", started("a" * 64, {"80/tcp": 8080}, asked))
    mesh.publish(settings, one, "p", started("b" * 64, {"80/tcp": 8080}, asked))
    assert list(mesh.rows_of(["a" * 64, "b" * 64])) == ["b" * 64]


def test_a_start_waits_for_the_listeners(settings):
    settings.mesh.start_wait = 0.2
    one = instance("i1", 1)
    mesh.publish(settings, one, "p", started("a" * 64, {"80/tcp": 32768, "53/udp": 32769}))
    assert mesh.wait_listening(settings, "a" * 64) is False  # no `moorage mesh` marked them
    rows, wanted = mesh.wanted(settings)
    assert set(wanted) == {("tcp", 20000), ("udp", 20000)}
    mesh.listening(rows, {("tcp", 20000)})
    assert mesh.wait_listening(settings, "a" * 64) is False  # the UDP one still waits
    mesh.listening(rows, set(wanted))
    assert mesh.wait_listening(settings, "a" * 64) is True


@pytest.mark.parametrize(
    "body,publishes",
    [
        ({"HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": ""}]}}}, True),  # -p 80
        ({"HostConfig": {"PublishAllPorts": True}, "ExposedPorts": {"80/tcp": {}}}, True),  # -P
        ({"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}, True),  # the pre-1.24 top-level shape
        ({"HostConfig": {"PortBindings": {}}, "ExposedPorts": {"80/tcp": {}}}, False),  # exposed only
        ({"HostConfig": {"NetworkMode": "host"}}, False),
        ({}, False),
    ],
)
def test_a_create_that_publishes_no_port_is_known_as_such(body, publishes):
    """A start of a container whose create published nothing skips the mesh's inspect."""
    from gateway.services.ports import published_by

    assert published_by(body) is publishes
