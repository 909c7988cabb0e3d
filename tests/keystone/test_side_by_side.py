"""The tenancy issue's "Done when": both tenants of a `--keystone` devstack use the plain docker
CLI side by side, on one instance, each with only its own Keystone token (from `HttpHeaders`),
and nothing leaks in either direction: same names, each sees and touches only its own
containers, networks, volumes, images and events, and their containers cannot reach each
other by address."""

from __future__ import annotations

import json
import time

import pytest

from tests.keystone.conftest import docker

pytestmark = pytest.mark.keystone
TENANTS = ("alpha", "beta")


@pytest.fixture(scope="module")
def side_by_side(stack):
    """Each tenant runs the same-named objects: container `web`, network `net`, volume `data`,
    image `app:1`; returns per tenant what it made."""
    made = {}
    since = int(time.time()) - 1
    for tenant in TENANTS:
        env = {"DOCKER_HOST": stack.host, "DOCKER_CONFIG": stack.config_dir[tenant]}
        steps = [
            ("network", "create", "sbs-net"),
            ("volume", "create", "sbs-data"),
            ("run", "-d", "--name", "sbs-web", "-v", "sbs-data:/data", "busybox", "sleep", "300"),
            ("run", "-d", "--name", "sbs-peer", "busybox", "sleep", "300"),
            ("commit", "sbs-web", "sbs-app:1"),
        ]
        out = {}
        for args in steps:
            result = docker(env, *args)
            assert result.returncode == 0, (tenant, args, result.stderr)
            out[args[0] + (args[1] if args[0] in ("network", "volume") else "")] = result.stdout.strip()
        out["env"] = env
        out["web"] = docker(
            env, "inspect", "-f", "{{.Id}} {{.NetworkSettings.IPAddress}}", "sbs-web"
        ).stdout.split()
        made[tenant] = out
    made["since"] = since
    yield made
    for tenant in TENANTS:
        env = made[tenant]["env"]
        docker(env, "rm", "-f", "sbs-web", "sbs-peer")
        docker(env, "network", "rm", "sbs-net")
        docker(env, "volume", "rm", "sbs-data")
        docker(env, "rmi", "sbs-app:1")


@pytest.mark.parametrize("me,other", [("alpha", "beta"), ("beta", "alpha")])
def test_each_sees_only_its_own(stack, side_by_side, me, other):
    env, theirs = side_by_side[me]["env"], side_by_side[other]
    ps = docker(env, "ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}").stdout
    assert side_by_side[me]["web"][0] in ps and theirs["web"][0] not in ps
    assert sorted(line.split()[1] for line in ps.splitlines()) == ["sbs-peer", "sbs-web"]
    nets = docker(env, "network", "ls", "--no-trunc", "--format", "{{.ID}} {{.Name}}").stdout
    assert theirs["networkcreate"] not in nets and nets.count("sbs-net") == 1
    assert docker(env, "volume", "ls", "-q").stdout.split().count("sbs-data") == 1
    images = docker(env, "images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout
    assert images.count("sbs-app:1") == 1 and theirs["commit"] not in images
    for answer in (ps, nets, images):
        assert "org.openstack.moorage" not in answer and ".m" not in answer.replace("busybox", "")


@pytest.mark.parametrize("me,other", [("alpha", "beta"), ("beta", "alpha")])
def test_each_gets_no_such_on_the_others_objects(stack, side_by_side, me, other):
    env, theirs = side_by_side[me]["env"], side_by_side[other]
    for ref in (theirs["web"][0], theirs["web"][0][:12]):
        for args in (
            ("inspect", ref),
            ("logs", ref),
            ("exec", ref, "true"),
            ("stop", "-t", "0", ref),
            ("rm", ref),
        ):
            result = docker(env, *args)
            assert result.returncode != 0, args
            assert "No such container" in result.stderr or "No such object" in result.stderr, (
                args,
                result.stderr,
            )
    for args in (
        ("network", "inspect", theirs["networkcreate"]),
        ("network", "rm", theirs["networkcreate"]),
        ("image", "inspect", theirs["commit"]),
        ("rmi", theirs["commit"]),
    ):
        result = docker(env, *args)
        assert result.returncode != 0, args
        assert "No such" in result.stderr or "not found" in result.stderr, (args, result.stderr)
    # and the other's objects are all still there
    mine = docker(theirs["env"], "inspect", "-f", "{{.State.Running}}", "sbs-web")
    assert mine.stdout.strip() == "true"


@pytest.mark.parametrize("me,other", [("alpha", "beta"), ("beta", "alpha")])
def test_containers_cannot_reach_the_others_by_address(stack, side_by_side, me, other):
    env, address = side_by_side[me]["env"], side_by_side[other]["web"][1]
    own = side_by_side[me]["web"][1]
    assert docker(env, "exec", "sbs-peer", "ping", "-c1", "-W2", own).returncode == 0
    assert docker(env, "exec", "sbs-peer", "ping", "-c1", "-W2", address).returncode != 0


def test_events_are_each_tenants_own(stack, side_by_side):
    until = int(time.time()) + 1
    time.sleep(1.1)
    seen = {}
    for tenant in TENANTS:
        result = docker(
            side_by_side[tenant]["env"],
            "events",
            "--since",
            str(side_by_side["since"]),
            "--until",
            str(until),
            "--format",
            "{{json .}}",
        )
        assert result.returncode == 0, result.stderr
        seen[tenant] = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    for tenant, other in (("alpha", "beta"), ("beta", "alpha")):
        ids = {e.get("id") for e in seen[tenant]}
        assert side_by_side[tenant]["web"][0] in ids and side_by_side[other]["web"][0] not in ids
        assert "org.openstack.moorage" not in json.dumps(seen[tenant])
