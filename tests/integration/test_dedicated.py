"""Dedicated tenancy end to end, on a stack of its own (`scripts/devstack up DIR --hosts 2
--max-hosts 3 --release-grace 3`): two projects never share an instance; a third gets a host
booted for it, a fourth is refused once the stack is at its size; a host of the --hosts 2 is
wiped (checked on its daemon) before another project claims it; a booted host is deleted
once empty; an agent cannot take over another instance or report another project's
containers."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import requests

from tests.integration.conftest import Stack, own_stack

PIN = "org.openstack.nova.instance"
EXTRA = ("gamma", "delta")  # projects beyond devstack's two, given embedded tokens here


@pytest.fixture(scope="module")
def dstack():
    with own_stack(
        "moorage-dedicated-it-", "--hosts", "2", "--max-hosts", "3", "--release-grace", "3"
    ) as stack:
        add_tenants(stack)
        yield stack


def add_tenants(stack: Stack) -> None:
    """Embedded tokens for gamma and delta (the gateway re-reads the file when it changes)."""
    path = os.path.join(stack.dir, "identity.json")
    with open(path) as fh:
        doc = json.load(fh)
    for name in EXTRA:
        token, project = f"{name}-token-{os.urandom(8).hex()}", f"{name}{os.urandom(8).hex()}"
        doc["tokens"][token] = {"project_id": project, "project_name": name, "roles": ["member"]}
        config = os.path.join(stack.dir, "tenants", name)
        os.makedirs(config, exist_ok=True)
        with open(os.path.join(config, "config.json"), "w") as fh:
            json.dump({"HttpHeaders": {"X-Auth-Token": token, "X-Auth-Project-Id": project}}, fh)
        stack.env[f"MOORAGE_CONFIG_{name}"] = config
        stack.env[f"MOORAGE_PROJECT_{name}"] = project
    with open(path + ".tmp", "w") as fh:
        json.dump(doc, fh)
    os.replace(path + ".tmp", path)


def ok(result) -> str:
    assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")
    return result.stdout.decode().strip()


def instances(stack: Stack) -> dict[str, dict]:
    rows = json.loads(stack.admin("instances", "list", "--format", "json").stdout)
    return {row["uuid"]: row for row in rows}


def placed(stack: Stack) -> dict[str, str]:
    rows = json.loads(stack.admin("containers", "list", "--format", "json").stdout)
    return {row["name"]: row["instance"] for row in rows}


def wait_for(what: str, check, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        time.sleep(0.5)


def direct(endpoint: str, path: str):
    import requests_unixsocket

    sock = endpoint[len("unix://") :].replace("/", "%2F")
    with requests_unixsocket.Session() as session:
        return session.get(f"http+unix://{sock}{path}", timeout=30).json()


def test_projects_never_share_and_the_stack_grows_to_its_size(dstack):
    stack = dstack
    fixed = stack.env["MOORAGE_INSTANCES"].split()
    assert len(fixed) == 2
    ok(stack.docker("run", "-d", "--name", "a1", "busybox", "sleep", "300"))
    ok(stack.docker("run", "-d", "--name", "b1", "busybox", "sleep", "300", tenant="beta"))
    ok(stack.docker("run", "-d", "--name", "a2", "busybox", "sleep", "300"))
    where = placed(stack)
    assert where["a1"] == where["a2"] == fixed[0] and where["b1"] == fixed[1]
    rows = instances(stack)
    assert rows[fixed[0]]["project"] == stack.env["MOORAGE_PROJECT_alpha"]
    assert rows[fixed[1]]["project"] == stack.env["MOORAGE_PROJECT_beta"]

    # no other project is on alpha's instance: its loopback is alpha's to publish on
    ok(stack.docker("run", "--rm", "-p", "127.0.0.1:18080:80", "busybox", "true"))

    # beta's instance is as unknown to alpha as beta's containers are
    pinned = stack.docker("create", "--label", f"{PIN}={fixed[1]}", "busybox", "true")
    assert pinned.returncode != 0 and f"no such instance: {fixed[1]}".encode() in pinned.stderr

    # gamma finds no free host: one is booted for it (a namespace with its own dockerd and agent)
    ok(stack.docker("run", "-d", "--name", "g1", "busybox", "sleep", "300", tenant="gamma"))
    booted = placed(stack)["g1"]
    assert booted not in fixed
    assert instances(stack)[booted]["project"] == stack.env["MOORAGE_PROJECT_gamma"]
    assert instances(stack)[booted]["provider"] == "local"
    # the stack is at --max-hosts 3: delta is told, and nothing of it is recorded
    refused = stack.docker("run", "-d", "--name", "d1", "busybox", "true", tenant="delta")
    assert refused.returncode == 125 and b"none is free to claim" in refused.stderr, refused.stderr
    assert "d1" not in placed(stack)

    # each project's list is its own, from its own instance
    assert ok(stack.docker("ps", "--format", "{{.Names}}")).split() == ["a2", "a1"]
    assert ok(stack.docker("ps", "--format", "{{.Names}}", tenant="gamma")).split() == ["g1"]

    # gamma leaves: its booted host is deleted once empty (namespace and all)
    ok(stack.docker("rm", "-f", "g1", tenant="gamma"))
    wait_for(f"booted host {booted} deleted", lambda: booted not in instances(stack), timeout=90)
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert booted not in stack.devstack("list-hosts").stdout
    assert f"-h{101}" not in netns  # (the first booted host's namespace)
    # and delta, refused before, now gets a host of its own
    ok(stack.docker("run", "-d", "--name", "d1", "busybox", "sleep", "300", tenant="delta"))
    assert placed(stack)["d1"] not in fixed
    ok(stack.docker("rm", "-f", "d1", tenant="delta"))
    ok(stack.docker("rm", "-f", "a1", "a2"))
    ok(stack.docker("rm", "-f", "b1", tenant="beta"))


def test_a_host_is_wiped_before_another_project_claims_it(dstack):
    stack = dstack
    fixed = stack.env["MOORAGE_INSTANCES"].split()
    endpoint = dict(zip(fixed, stack.env["MOORAGE_DIRECT_HOSTS"].split()[:2], strict=True))
    first = lambda: instances(stack)[fixed[0]]["project"]  # noqa: E731
    wait_for("host 1 free", lambda: first() == "-", timeout=90)
    # alpha leaves a little of everything on host 1
    ok(
        stack.docker(
            "run",
            "-d",
            "--name",
            "keep",
            "-v",
            "data:/data",
            "busybox",
            "sh",
            "-c",
            "echo secret > /data/s; echo secret > /s; sleep 300",
        )
    )
    assert placed(stack)["keep"] == fixed[0]
    ok(stack.docker("commit", "keep", "alpha-app:1"))
    ok(stack.docker("network", "create", "alpha-net"))
    ok(stack.docker("tag", "busybox", "alpha-box:1"))
    before = direct(endpoint[fixed[0]], "/images/json")
    assert any("alpha-app" in t for i in before for t in i.get("RepoTags") or [])
    # ... and takes it all away; the host stays alpha's until it is wiped
    ok(stack.docker("rm", "-f", "keep"))
    ok(stack.docker("rmi", "alpha-app:1", "alpha-box:1"))
    ok(stack.docker("network", "rm", "alpha-net"))
    ok(stack.docker("volume", "rm", "data"))
    wait_for("host 1 wiped and free", lambda: first() == "-", timeout=90)
    daemon = endpoint[fixed[0]]
    assert direct(daemon, "/containers/json?all=1") == []
    assert (direct(daemon, "/volumes").get("Volumes") or []) == []
    assert sorted(n["Name"] for n in direct(daemon, "/networks")) == ["bridge", "host", "none"]
    images = direct(daemon, "/images/json?all=1")
    assert [i["RepoTags"] for i in images] == [["busybox:latest"]]  # the public image only
    # gamma claims it and sees nothing of alpha's
    ok(stack.docker("run", "--rm", "--label", f"{PIN}={fixed[0]}", "busybox", "true", tenant="gamma"))
    assert ok(stack.docker("volume", "ls", "-q", tenant="gamma")) == ""
    assert "alpha" not in ok(stack.docker("images", tenant="gamma"))


def test_an_agent_cannot_take_over_an_instance_or_speak_for_another_project(dstack):
    stack = dstack
    fixed = stack.env["MOORAGE_INSTANCES"].split()
    with open(os.path.join(stack.dir, "state.json")) as fh:
        state = json.load(fh)
    gateway = stack.gateway
    agent_url = instances(stack)[fixed[0]]["agent"]
    forged = requests.post(
        f"{gateway}/moorage/v1/agents",
        headers={"X-Moorage-Registration-Secret": state["secret"]},
        json={"uuid": fixed[0], "agent_url": "tcp://198.18.0.66:2376", "capacity": 0},
        timeout=30,
    )
    assert forged.status_code == 409 and "needs that agent's secret" in forged.json()["message"]
    assert instances(stack)[fixed[0]]["agent"] == agent_url
    with open(os.path.join(stack.dir, "gateway-1.log")) as fh:
        assert "refused a registration for live instance" in fh.read()

    # beta's instance's agent (its secret read from its state directory, as a compromised
    # instance could) reports a container labelled for alpha: not adopted
    ok(stack.docker("run", "-d", "--name", "b-own", "busybox", "sleep", "300", tenant="beta"))
    beta_host = placed(stack)["b-own"]
    index = fixed.index(beta_host) + 1
    with open(os.path.join(stack.dir, "hosts", str(index), "agent", "registered")) as fh:
        secret = json.load(fh)["agent_secret"]
    beat = requests.put(
        f"{gateway}/moorage/v1/agents/{beta_host}/heartbeat",
        headers={"X-Moorage-Agent-Secret": secret},
        json={
            "daemon": "up",
            "containers": [
                {
                    "id": "f" * 64,
                    "name": "planted",
                    "project": stack.env["MOORAGE_PROJECT_alpha"],
                    "labels": {},
                }
            ],
        },
        timeout=30,
    )
    assert beat.status_code == 204
    assert "planted" not in placed(stack)
    assert "planted" not in ok(stack.docker("ps", "-a", "--format", "{{.Names}}"))
    ok(stack.docker("rm", "-f", "b-own", tenant="beta"))
