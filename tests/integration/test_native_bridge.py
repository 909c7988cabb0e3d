"""Dedicated tenancy's default bridge, on a stack of its own (`scripts/devstack up DIR --hosts 2`):
a project's containers that ask for no network, "default" or "bridge" join each instance's own
default bridge, as on a plain dockerd (tenancy.scope.default_bridge): the mode as the client
gave it, legacy links with their environment and /etc/hosts line, no name resolution;
`network inspect bridge` shows the project's containers across its instances and no other
project sees them there, nor their connect events; no network of Moorage's is made on the
daemons. A container left on its project's own bridge (made by Moorage before) keeps working."""

from __future__ import annotations

import time

import pytest

from gateway.tenancy import scope
from gateway.wire import DEFAULT_BRIDGE_LABEL
from tests.integration.conftest import own_stack

PIN = "org.openstack.nova.instance"


@pytest.fixture(scope="module")
def nstack():
    with own_stack("moorage-nativebridge-it-", "--hosts", "2") as stack:
        yield stack


def ok(result) -> str:
    assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")
    return result.stdout.decode().strip()


def direct(endpoint: str, path: str, method: str = "GET", body: dict | None = None):
    """The daemon's answer, asked straight (not through Moorage)."""
    import requests_unixsocket

    sock = endpoint[len("unix://") :].replace("/", "%2F")
    with requests_unixsocket.Session() as session:
        answer = session.request(method, f"http+unix://{sock}{path}", json=body, timeout=30)
        assert answer.status_code < 300, answer.text
        return answer.json() if answer.content else None


def start(stack, name: str, instance: str, *flags: str) -> str:
    return ok(
        stack.docker(
            "run", "-d", "--name", name, "--label", f"{PIN}={instance}", *flags, "busybox", "sleep", "300"
        )
    )


def test_a_projects_containers_use_each_instances_own_bridge(nstack):
    stack = nstack
    fixed = stack.env["MOORAGE_INSTANCES"].split()
    daemons = stack.env["MOORAGE_DIRECT_HOSTS"].split()[:2]
    since = str(int(time.time()) - 1)
    ids = {
        "a1": start(stack, "a1", fixed[0]),
        "a2": start(stack, "a2", fixed[1], "--network", "bridge"),  # alpha claims the second instance
        "a3": start(stack, "a3", fixed[0], "--network", "default", "--link", "a1:db"),
    }
    try:
        # the mode as the client gave it, dockerd's bridge, its address at the top level too
        shown = ok(
            stack.docker(
                "inspect",
                "-f",
                "{{.HostConfig.NetworkMode}} {{.NetworkSettings.IPAddress}} "
                "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}}{{end}}",
                "a1",
                "a2",
                "a3",
            )
        ).splitlines()
        modes = []
        for line in shown:
            mode, address, networks = line.split()
            assert address and networks == f"bridge={address}", shown
            modes.append(mode)
        assert modes == ["default", "bridge", "default"]
        ps = ok(stack.docker("ps", "--format", "{{.Names}} {{.Networks}}")).splitlines()
        assert sorted(ps) == ["a1 bridge", "a2 bridge", "a3 bridge"]

        # a legacy link, as dockerd makes it on its default bridge: environment, /etc/hosts
        env = ok(stack.docker("exec", "a3", "env"))
        assert "DB_NAME=" in env
        assert ok(stack.docker("exec", "a3", "grep", "-w", "db", "/etc/hosts"))
        ok(stack.docker("exec", "a3", "ping", "-c1", "-W2", "db"))
        # and no names otherwise: the default bridge has no embedded DNS
        unnamed = stack.docker("exec", "a3", "ping", "-c1", "-W2", "a1")
        assert unnamed.returncode != 0 and b"bad address" in unnamed.stdout + unnamed.stderr

        # network inspect bridge: the project's containers on both instances; one `bridge` row
        members = stack.http("GET", "/networks/bridge").json()["Containers"]
        assert {m["Name"] for m in members.values()} == {"a1", "a2", "a3"}
        assert set(members) == set(ids.values())
        listed = ok(stack.docker("network", "ls", "--format", "{{.Name}}")).split()
        assert sorted(listed) == ["bridge", "host", "none"]
        # beta holds no instance: its views come from alpha's, and show nothing of alpha's
        theirs = stack.http("GET", "/networks/bridge", tenant="beta").json()["Containers"]
        assert theirs == {}

        # connect and disconnect: the daemon's bridge
        ok(stack.docker("network", "disconnect", "bridge", "a2"))
        assert ok(stack.docker("inspect", "-f", "{{len .NetworkSettings.Networks}}", "a2")) == "0"
        ok(stack.docker("network", "connect", "bridge", "a2"))
        after = ok(
            stack.docker("inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}", "a2")
        )
        assert after == "bridge"

        # no network of Moorage's on either daemon
        for daemon in daemons:
            assert sorted(n["Name"] for n in direct(daemon, "/networks")) == ["bridge", "host", "none"]

        # events: the connects and disconnects dockerd shows, alpha's only
        until = str(int(time.time()) + 1)
        fmt = "{{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.container}}"
        query = ("events", "--since", since, "--until", until, "--filter", "type=network", "--format", fmt)
        events = ok(stack.docker(*query)).splitlines()
        for name, cid in ids.items():
            assert f"connect bridge {cid}" in events, (name, events)
        assert f"disconnect bridge {ids['a2']}" in events, events
        assert {line.split()[1] for line in events} == {"bridge"}, events
        assert ok(stack.docker(*query, tenant="beta")) == ""
    finally:
        stack.docker("rm", "-f", *ids)


def test_a_container_left_on_its_projects_bridge_keeps_working(nstack):
    """An instance alpha held before its containers used the daemon's bridge keeps alpha's own
    bridge (made here on the daemon as Moorage made it) with a container on it: the container
    is shown as on the default bridge, `network inspect bridge` lists it, and `disconnect
    bridge` takes it off the bridge it is on."""
    stack = nstack
    instance = stack.env["MOORAGE_INSTANCES"].split()[0]
    daemon = stack.env["MOORAGE_DIRECT_HOSTS"].split()[0]
    project = stack.env["MOORAGE_PROJECT_alpha"]
    bridge = scope.project_bridge(project)
    body = {
        "Name": bridge,
        "Driver": "bridge",
        "CheckDuplicate": True,
        "Labels": {DEFAULT_BRIDGE_LABEL: project},
    }
    network = direct(daemon, "/networks/create", "POST", body)["Id"]
    cid = start(stack, "old", instance)
    try:
        direct(daemon, "/networks/bridge/disconnect", "POST", {"Container": cid})
        direct(daemon, f"/networks/{network}/connect", "POST", {"Container": cid})
        shown = ok(
            stack.docker(
                "inspect",
                "-f",
                "{{.NetworkSettings.IPAddress}} "
                "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}}{{end}}",
                "old",
            )
        )
        address, networks = shown.split()
        assert address and networks == f"bridge={address}", shown
        assert ok(stack.docker("ps", "--filter", "name=old", "--format", "{{.Networks}}")) == "bridge"
        members = stack.http("GET", "/networks/bridge").json()["Containers"]
        assert cid in members and members[cid]["Name"] == "old"
        ok(stack.docker("network", "disconnect", "bridge", "old"))
        assert ok(stack.docker("inspect", "-f", "{{len .NetworkSettings.Networks}}", "old")) == "0"
        # connected again, it joins the daemon's bridge, as a new container would
        ok(stack.docker("network", "connect", "bridge", "old"))
        joined = direct(daemon, f"/containers/{cid}/json")["NetworkSettings"]["Networks"]
        assert list(joined) == ["bridge"]
    finally:
        stack.docker("rm", "-f", "old")
        direct(daemon, f"/networks/{network}", "DELETE")
