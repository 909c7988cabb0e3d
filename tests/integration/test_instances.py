"""Agents, the store, and what a tenant can see of other tenants' containers."""

import json
import os
import time
import tomllib

import pytest
import requests


def admin_json(stack, *args):
    result = stack.admin(*args, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_agent_registered_and_listed(stack):
    rows = admin_json(stack, "instances", "list")
    assert [row["uuid"] for row in rows] == stack.env["MOORAGE_INSTANCES"].split()
    assert all(row["state"] == "up" for row in rows)


def test_agent_refuses_anyone_but_the_gateway(stack):
    agent = admin_json(stack, "instances", "list")[0]["agent"].replace("tcp://", "http://")
    for headers in ({}, {"X-Moorage-Agent-Secret": "guess"}):
        resp = requests.get(agent + "/v1.41/containers/json", headers=headers, timeout=10)
        assert resp.status_code == 401 and "gateway" in resp.json()["message"]


def test_registration_needs_the_secret(stack):
    resp = requests.post(
        stack.gateway + "/moorage/v1/agents",
        json={"uuid": "x", "agent_url": "tcp://1.2.3.4:1"},
        headers={"X-Moorage-Registration-Secret": "wrong"},
        timeout=10,
    )
    assert resp.status_code == 401
    assert "x" not in [row["uuid"] for row in admin_json(stack, "instances", "list")]


def test_containers_are_mapped_to_their_instance_and_unmapped_on_removal(stack, unique):
    created = stack.docker("create", "--name", unique, "busybox", "true")
    assert created.returncode == 0
    container_id = created.stdout.decode().strip()
    rows = admin_json(stack, "containers", "list", "--project", stack.env["MOORAGE_PROJECT_alpha"])
    row = next(r for r in rows if r["id"] == container_id)
    assert row["name"] == unique and row["instance"] == stack.env["MOORAGE_INSTANCES"].split()[0]
    assert stack.docker("rm", unique).returncode == 0
    rows = admin_json(stack, "containers", "list")
    assert container_id not in [r["id"] for r in rows]


def test_run_rm_leaves_no_record(stack, unique):
    assert stack.docker("run", "--rm", "--name", unique, "busybox", "true").returncode == 0
    assert unique not in [r["name"] for r in admin_json(stack, "containers", "list")]


def test_another_projects_container_does_not_exist_for_beta(stack, unique):
    created = stack.docker("run", "-d", "--name", unique, "busybox", "sleep", "120")
    assert created.returncode == 0
    full = created.stdout.decode().strip()
    try:
        for ref in (unique, full, full[:12], full[:4]):
            result = stack.docker("inspect", "--type", "container", ref, tenant="beta")
            assert result.returncode == 1
            assert f"No such container: {ref}" in result.stderr.decode()
            for op in (("logs", ref), ("stop", ref), ("rm", "-f", ref), ("exec", ref, "true")):
                # (`rm -f` exits 0 on a missing container, against dockerd too: check the answer)
                assert f"No such container: {ref}" in stack.docker(*op, tenant="beta").stderr.decode(), op
        listed = stack.docker("ps", "-a", "--format", "{{.Names}}", tenant="beta").stdout.decode().split()
        assert unique not in listed
        assert unique in stack.docker("ps", "--format", "{{.Names}}").stdout.decode().split()
        state = stack.docker("inspect", "-f", "{{.State.Running}}", unique)
        assert state.stdout.strip() == b"true"
    finally:
        stack.docker("rm", "-f", unique)


def test_a_dead_agent_is_a_quick_503_naming_the_instance_and_loses_nothing(stack, unique):
    instance = stack.env["MOORAGE_INSTANCES"].split()[0]
    assert stack.docker("create", "--name", unique, "busybox", "true").returncode == 0
    stopped = stack.devstack("stop-host", "1")
    assert stopped.returncode == 0, stopped.stderr
    try:
        start = time.monotonic()
        result = stack.docker("inspect", unique, timeout=30)
        elapsed = time.monotonic() - start
        assert result.returncode == 1
        assert instance in result.stderr.decode()
        assert elapsed < 15  # "quickly, never a hang" (bounded, not a benchmark)
    finally:
        started = stack.devstack("start-host", "1")
        assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        result = stack.docker("inspect", "-f", "{{.Name}}", unique)
        if result.returncode == 0:
            break
        time.sleep(1)
    assert result.stdout.strip() == f"/{unique}".encode()
    stack.docker("rm", "-f", unique)


def test_labelled_containers_the_map_lacks_are_adopted_at_the_next_heartbeat(stack, unique):
    """Created behind the gateway's back (or while it was down): the daemon is the truth."""
    project = stack.env["MOORAGE_PROJECT_alpha"]
    created = stack.docker(
        "create",
        "--name",
        unique,
        "--label",
        f"org.openstack.moorage.project={project}",
        "busybox",
        "true",
        direct=True,
    )
    assert created.returncode == 0
    try:
        deadline = time.monotonic() + 40  # two heartbeats at the default 10 s, with room
        while time.monotonic() < deadline:
            seen = stack.docker("inspect", "-f", "{{.Name}}", unique)
            if seen.returncode == 0:
                break
            time.sleep(1)
        assert seen.stdout.strip() == f"/{unique}".encode()
        assert stack.docker("inspect", unique, tenant="beta").returncode == 1
    finally:
        stack.docker("rm", "-f", unique, direct=True)


@pytest.mark.shared  # its premise: a project uses an instance another project already has
def test_published_ports_show_the_instance_address_they_are_reached_on(stack, policy, unique):
    """As Swarm classic did: `docker port`, `ps` and inspect give the instance's address for
    ports published on every address, and that address really serves the port."""
    policy(
        f'"container:create:host_ip": "project_id:{stack.env["MOORAGE_PROJECT_alpha"]}"\n'
    )  # 127.0.0.1::81
    instance = admin_json(stack, "instances", "list")[-1]
    address = instance["agent"].split("://", 1)[1].rsplit(":", 1)[0]
    with open(os.path.join(stack.dir, "moorage.toml"), "rb") as fh:
        mesh = tomllib.load(fh).get("mesh", {})
    if mesh.get("enabled"):
        address = mesh["address"]  # the routing mesh's (test_port_mesh.py tests it further)
    ran = stack.docker(
        "run",
        "-d",
        "--name",
        unique,
        "--label",
        f"org.openstack.nova.instance={instance['uuid']}",
        "-p",
        "8080",
        "-p",
        "127.0.0.1::81",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/etc",
    )
    assert ran.returncode == 0, ran.stderr
    try:
        port = stack.docker("port", unique, "8080").stdout.decode().splitlines()
        assert port[0].startswith(address + ":"), port
        ps = stack.docker("ps", "--filter", f"name={unique}", "--format", "{{.Ports}}").stdout.decode()
        assert f"{port[0]}->8080/tcp" in ps and "127.0.0.1:" in ps  # a loopback binding stays as it is
        for _ in range(50):
            try:
                if requests.get(f"http://{port[0]}/hostname", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError(f"nothing answers on {port[0]}")
    finally:
        stack.docker("rm", "-f", unique)


@pytest.mark.shared  # its premise: a project uses an instance another project already has
def test_a_draining_instance_takes_nothing_new_and_its_containers_stay_listed(stack, unique):
    first, second = stack.env["MOORAGE_INSTANCES"].split()[:2]
    assert (
        stack.docker(
            "run",
            "-d",
            "--name",
            unique,
            "--label",
            f"org.openstack.nova.instance={first}",
            "busybox",
            "sleep",
            "60",
        ).returncode
        == 0
    )
    assert stack.admin("instances", "drain", first).returncode == 0
    try:
        time.sleep(1.1)  # the list's one-second cache of live instances
        assert unique in stack.docker("ps", "--format", "{{.Names}}").stdout.decode().split()
        assert stack.docker("exec", unique, "true").returncode == 0
        assert stack.docker("create", "--name", unique + "-new", "busybox", "true").returncode == 0
        placed = {row["name"]: row["instance"] for row in admin_json(stack, "containers", "list")}
        assert placed[unique + "-new"] == second and placed[unique] == first
    finally:
        assert stack.admin("instances", "undrain", first).returncode == 0
        stack.docker("rm", "-f", unique, unique + "-new")
