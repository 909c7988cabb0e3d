"""The default bridge a project's containers join (tenancy.scope.default_bridge: the daemon's
own with dedicated tenancy, the project's own with shared), the create rewrite and the view in
each tenancy, and where published ports are shown (instances.publish_bindings): without a
daemon; references are resolved in a scratch store."""

import copy
from types import SimpleNamespace

import pytest

from gateway import config, instances, store
from gateway.errors import DockerError
from gateway.tenancy import scope

ALPHA = "518441b49028471aba11254fc0deab83"
BRIDGE = scope.project_bridge(ALPHA)
DEDICATED = config.Settings()
SHARED = config.Settings(placement=config.PlacementSettings(tenancy="shared"))


@pytest.fixture
def db(tmp_path):
    """A scratch store holding alpha's container ``db`` on instance i1."""
    store.init(f"sqlite:///{tmp_path}/m.db")
    instance = store.Instance.create(
        uuid="i1", agent_url="tcp://127.0.0.1:2001", agent_secret="s", position=0
    )
    store.Container.create(id="c" * 64, project=ALPHA, name="db", instance=instance)
    yield
    store.close()


def _create(body, settings=SHARED):
    return scope.container_create(ALPHA, body, "web", settings), body


def test_the_tenancy_decides_the_default_bridge():
    assert DEDICATED.placement.tenancy == "dedicated"  # the default
    assert scope.default_bridge(ALPHA, DEDICATED) == "bridge"  # the instance is the project's
    assert scope.default_bridge(ALPHA, SHARED) == BRIDGE == "bridge." + BRIDGE.split(".")[1]
    assert BRIDGE.split(".")[1].startswith("m")


BODIES = [
    {"Image": "busybox", "HostConfig": {}},
    {"Image": "busybox", "HostConfig": {"NetworkMode": ""}},
    {"Image": "busybox", "HostConfig": {"NetworkMode": "default"}},
    {"Image": "busybox", "HostConfig": {"NetworkMode": "bridge"}},
    {"Image": "busybox", "memory": 1 << 26},
    {"Image": "busybox", "Cmd": ["true"]},
    {"Image": "busybox", "HostConfig": None},
    {"Image": "busybox", "NetworkingConfig": {"EndpointsConfig": None}},
    {
        "HostConfig": {"NetworkMode": "bridge"},
        "NetworkingConfig": {"EndpointsConfig": {"bridge": {"IPAMConfig": None}}},
    },
    {"NetworkingConfig": {"EndpointsConfig": {"default": {}}}},
]


@pytest.mark.parametrize("body", BODIES)
def test_dedicated_the_daemons_bridge_goes_down_as_sent(body):
    """No rewrite: dockerd connects its own bridge, and its inspect shows the mode as sent."""
    needs, sent = _create(copy.deepcopy(body), DEDICATED)
    assert sent == body and not needs.default_bridge and needs.bridge == "bridge"


@pytest.mark.parametrize("mode", [None, "", "default", "bridge"])
def test_shared_no_network_or_the_default_one_is_the_projects_bridge(mode):
    hc = {} if mode is None else {"NetworkMode": mode}
    needs, body = _create({"Image": "busybox", "HostConfig": hc})
    assert body["HostConfig"]["NetworkMode"] == BRIDGE and needs.default_bridge
    # no alias of the tenant's name: dockerd's default bridge resolves no names
    assert "Aliases" not in str(body.get("NetworkingConfig"))


def test_shared_the_top_level_shape_gets_it_where_dockerd_reads_it():
    needs, body = _create({"Image": "busybox", "memory": 1 << 26})
    assert body["NetworkMode"] == BRIDGE and "HostConfig" not in body and needs.default_bridge


@pytest.mark.parametrize("extra", [{}, {"HostConfig": None}, {"NetworkingConfig": {"EndpointsConfig": None}}])
def test_shared_a_body_without_host_settings_keeps_none(extra):
    """dockerd's defaults differ when there are no host settings at all (IpcMode on old API
    versions, Runtime): the bridge goes in as the default mode's endpoint instead."""
    needs, body = _create({"Image": "busybox", "Cmd": ["true"], **extra})
    assert "NetworkMode" not in body and not body.get("HostConfig") and needs.default_bridge
    assert body["NetworkingConfig"]["EndpointsConfig"] == {BRIDGE: {}}


@pytest.mark.parametrize("settings", [DEDICATED, SHARED], ids=["dedicated", "shared"])
@pytest.mark.parametrize("mode", ["host", "none"])
def test_other_modes_are_left_alone(mode, settings):
    needs, body = _create({"HostConfig": {"NetworkMode": mode}}, settings)
    assert body["HostConfig"]["NetworkMode"] == mode and not needs.default_bridge


def test_shared_endpoint_config_for_bridge_names_the_projects_bridge():
    _, body = _create(
        {
            "HostConfig": {"NetworkMode": "bridge"},
            "NetworkingConfig": {"EndpointsConfig": {"bridge": {"IPAMConfig": None}}},
        }
    )
    assert list(body["NetworkingConfig"]["EndpointsConfig"]) == [BRIDGE]


@pytest.mark.parametrize(
    ("settings", "mode"),
    [(SHARED, None), (DEDICATED, None), (DEDICATED, "default"), (DEDICATED, "bridge")],
    ids=["shared", "dedicated-none", "dedicated-default", "dedicated-bridge"],
)
def test_a_link_to_nothing_is_refused_as_on_dockerds_default_bridge(db, settings, mode):
    hc = {"Links": ["nothing:x"], **({} if mode is None else {"NetworkMode": mode})}
    with pytest.raises(DockerError) as refused:
        _create({"HostConfig": hc}, settings)
    assert refused.value.status == 400
    assert refused.value.message == "could not get container for nothing: No such container: nothing"


@pytest.mark.parametrize("settings", [DEDICATED, SHARED], ids=["dedicated", "shared"])
def test_a_link_to_nothing_on_another_network_is_dockerds_to_judge(db, settings):
    """(On another network dockerd accepts a link to nothing, which resolves nothing.)"""
    needs, body = _create({"HostConfig": {"NetworkMode": "host", "Links": ["nothing:x"]}}, settings)
    assert needs.missing_links == ["nothing"]
    assert body["HostConfig"]["Links"] == [f"nothing.{BRIDGE.split('.')[1]}:x"]


def test_shared_links_move_to_the_endpoint_where_dockerd_reads_them(db):
    needs, body = _create({"HostConfig": {"Links": ["db:x"]}})
    daemon_db = f"db.{BRIDGE.split('.')[1]}"
    assert body["NetworkingConfig"]["EndpointsConfig"][BRIDGE]["Links"] == [f"{daemon_db}:x"]
    assert needs.instance == "i1"


def test_dedicated_links_stay_where_dockerds_default_bridge_reads_them(db):
    """dockerd links natively on its own bridge (environment, /etc/hosts): HostConfig.Links,
    the target named as the daemon knows it, the alias as the tenant gave it (or its name)."""
    needs, body = _create({"HostConfig": {"Links": ["db:x", "/db"]}}, DEDICATED)
    daemon_db = f"db.{BRIDGE.split('.')[1]}"
    assert body == {"HostConfig": {"Links": [f"{daemon_db}:x", f"{daemon_db}:db"]}}
    assert needs.instance == "i1" and not needs.default_bridge


@pytest.mark.parametrize("settings", [DEDICATED, SHARED], ids=["dedicated", "shared"])
def test_a_user_defined_network_still_gets_the_tenants_name(settings):
    # A network the project lacks goes down with the project's suffix, and names nothing.
    _, body = _create({"HostConfig": {"NetworkMode": "app"}}, settings)
    network = body["HostConfig"]["NetworkMode"]
    assert network.startswith("app.") and body["NetworkingConfig"]["EndpointsConfig"][network] == {
        "Aliases": ["web"]
    }


def _on(network, mode):
    return {
        "Name": "/" + BRIDGE.replace("bridge", "cl"),
        "HostConfig": {"NetworkMode": mode, "Links": []},
        "NetworkSettings": {
            "IPAddress": "",
            "Gateway": "",
            "Networks": {
                network: {
                    "IPAddress": "198.19.1.2",
                    "Gateway": "198.19.1.1",
                    "Aliases": ["abc"],
                    "Links": ["db.mx:x"],
                }
            },
        },
    }


def test_a_container_on_its_projects_bridge_is_shown_as_on_dockerds_default():
    """Shared tenancy's default; with dedicated tenancy, a container created on its project's
    bridge before the daemon's was used, which stays on it and shows the same: the view is
    keyed on the bridge the container is on, not on the tenancy."""
    container = _on(BRIDGE, BRIDGE)
    scope.show_default_bridge(ALPHA, container)
    out = scope.strip_names(ALPHA, container)
    assert out["HostConfig"]["NetworkMode"] == "default"
    assert out["HostConfig"]["Links"] == ["/db.mx:/cl/x"]
    assert (
        out["NetworkSettings"]["IPAddress"] == "198.19.1.2"
        and out["NetworkSettings"]["Gateway"] == "198.19.1.1"
    )
    assert out["NetworkSettings"]["Networks"]["bridge"]["Aliases"] is None


@pytest.mark.parametrize("mode", ["default", "bridge"])
def test_a_container_on_the_daemons_bridge_is_shown_as_dockerd_shows_it(mode):
    container = _on("bridge", mode)
    shown = copy.deepcopy(container)
    scope.show_default_bridge(ALPHA, shown)
    assert shown == container


def test_published_ports_show_the_instance_address():
    inspect = [{"HostIp": "0.0.0.0", "HostPort": "32770"}, {"HostIp": "::", "HostPort": "32770"}]
    assert instances.publish_bindings(inspect, "198.18.0.11", "HostIp") == [
        {"HostIp": "198.18.0.11", "HostPort": "32770"},
        {"HostIp": "::", "HostPort": "32770"},
    ]
    assert instances.publish_bindings(inspect, "2001:db8::5", "HostIp") == [
        {"HostIp": "0.0.0.0", "HostPort": "32770"},
        {"HostIp": "2001:db8::5", "HostPort": "32770"},
    ]
    ps = [
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 32770, "Type": "tcp"},
        {"IP": "127.0.0.1", "PrivatePort": 81, "PublicPort": 32768, "Type": "tcp"},
        {"PrivatePort": 82, "Type": "tcp"},
    ]
    assert instances.publish_bindings(ps, "198.18.0.11", "IP") == [
        {"IP": "198.18.0.11", "PrivatePort": 80, "PublicPort": 32770, "Type": "tcp"},
        {"IP": "127.0.0.1", "PrivatePort": 81, "PublicPort": 32768, "Type": "tcp"},
        {"PrivatePort": 82, "Type": "tcp"},
    ]  # exposed, not published: no address to show


def test_published_address_prefers_what_the_agent_reported():
    instance = SimpleNamespace(facts={"PublicAddress": "203.0.113.5"}, agent_url="tcp://198.18.0.11:2376")
    assert instances.published_address(instance) == "203.0.113.5"
    instance.facts = None
    assert instances.published_address(instance) == "198.18.0.11"
