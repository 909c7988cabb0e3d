"""A project's default bridge (tenancy.scope) and where published ports are shown
(instances.publish_bindings): the rewrites, without a daemon."""

from types import SimpleNamespace

import pytest

from gateway import instances
from gateway.errors import DockerError
from gateway.tenancy import scope

ALPHA = "518441b49028471aba11254fc0deab83"
BRIDGE = scope.default_bridge(ALPHA)


def _create(body):
    return scope.container_create(ALPHA, body, "web"), body


@pytest.mark.parametrize("mode", [None, "", "default", "bridge"])
def test_no_network_or_the_default_one_is_the_projects_bridge(mode):
    hc = {} if mode is None else {"NetworkMode": mode}
    needs, body = _create({"Image": "busybox", "HostConfig": hc})
    assert body["HostConfig"]["NetworkMode"] == BRIDGE and needs.default_bridge
    # no alias of the tenant's name: dockerd's default bridge resolves no names
    assert "Aliases" not in str(body.get("NetworkingConfig"))


def test_the_top_level_shape_gets_it_where_dockerd_reads_it():
    needs, body = _create({"Image": "busybox", "memory": 1 << 26})
    assert body["NetworkMode"] == BRIDGE and "HostConfig" not in body and needs.default_bridge


@pytest.mark.parametrize("extra", [{}, {"HostConfig": None}, {"NetworkingConfig": {"EndpointsConfig": None}}])
def test_a_body_without_host_settings_keeps_none(extra):
    """dockerd's defaults differ when there are no host settings at all (IpcMode on old API
    versions, Runtime): the bridge goes in as the default mode's endpoint instead."""
    needs, body = _create({"Image": "busybox", "Cmd": ["true"], **extra})
    assert "NetworkMode" not in body and not body.get("HostConfig") and needs.default_bridge
    assert body["NetworkingConfig"]["EndpointsConfig"] == {BRIDGE: {}}


@pytest.mark.parametrize("mode", ["host", "none"])
def test_other_modes_are_left_alone(mode):
    needs, body = _create({"HostConfig": {"NetworkMode": mode}})
    assert body["HostConfig"]["NetworkMode"] == mode and not needs.default_bridge


def test_endpoint_config_for_bridge_names_the_projects_bridge():
    _, body = _create(
        {
            "HostConfig": {"NetworkMode": "bridge"},
            "NetworkingConfig": {"EndpointsConfig": {"bridge": {"IPAMConfig": None}}},
        }
    )
    assert list(body["NetworkingConfig"]["EndpointsConfig"]) == [BRIDGE]


def test_a_link_to_nothing_is_refused_as_on_dockerds_default_bridge(monkeypatch):
    monkeypatch.setattr(scope, "_mine", lambda lookup, project, ref: None)
    with pytest.raises(DockerError) as refused:
        _create({"HostConfig": {"Links": ["db:x"]}})
    assert refused.value.status == 400
    assert refused.value.message == "could not get container for db: No such container: db"


def test_links_move_to_the_endpoint_where_dockerd_reads_them(monkeypatch):
    db = SimpleNamespace(instance_id="i1", name="db", project=ALPHA, daemon_name=None)
    monkeypatch.setattr(scope, "_mine", lambda lookup, project, ref: db)
    _, body = _create({"HostConfig": {"Links": ["db:x"]}})
    assert body["NetworkingConfig"]["EndpointsConfig"][BRIDGE]["Links"] == [f"db.{BRIDGE.split('.')[1]}:x"]


def test_the_view_is_dockerds_default_bridge():
    container = {
        "Name": "/" + BRIDGE.replace("bridge", "cl"),
        "HostConfig": {"NetworkMode": BRIDGE, "Links": []},
        "NetworkSettings": {
            "IPAddress": "",
            "Gateway": "",
            "Networks": {
                BRIDGE: {
                    "IPAddress": "198.19.1.2",
                    "Gateway": "198.19.1.1",
                    "Aliases": ["abc"],
                    "Links": ["db.mx:x"],
                }
            },
        },
    }
    scope.show_default_bridge(ALPHA, container)
    out = scope.strip_names(ALPHA, container)
    assert out["HostConfig"]["NetworkMode"] == "default"
    assert out["HostConfig"]["Links"] == ["/db.mx:/cl/x"]
    assert (
        out["NetworkSettings"]["IPAddress"] == "198.19.1.2"
        and out["NetworkSettings"]["Gateway"] == "198.19.1.1"
    )
    assert out["NetworkSettings"]["Networks"]["bridge"]["Aliases"] is None


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
