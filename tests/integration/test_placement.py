"""The placement issue's "Done when", on a stack of its own (`scripts/devstack up DIR --hosts 3
--capacity 2`): the docker CLI fills instance 1, then 2, then 3; a pinned container lands on
the named instance; exec, logs, attach, cp, stop and rm reach the right instance; `docker ps`
is one merged list; a seventh container is refused clearly; `build` then `run` works on every
instance."""

from __future__ import annotations

import json
import os
import tempfile
import time

import pytest

from tests.integration.conftest import Stack, own_stack

pytestmark = pytest.mark.shared

HOSTS, CAPACITY = 3, 2
PIN = "org.openstack.nova.instance"


@pytest.fixture(scope="module")
def full_stack():
    with own_stack(
        "moorage-place-it-",
        "--hosts",
        str(HOSTS),
        "--capacity",
        str(CAPACITY),
        "--tenancy",
        # fill order over every instance, whoever asks (dedicated: test_dedicated.py)
        "shared",
        "--max-hosts",
        str(HOSTS),  # no host booted on demand: the seventh container is refused
    ) as stack:
        yield stack


def ok(result) -> str:
    assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")
    return result.stdout.decode().strip()


def where(stack: Stack) -> dict[str, str]:
    """container name -> instance UUID, from the operator's map."""
    rows = json.loads(stack.admin("containers", "list", "--format", "json").stdout)
    return {row["name"]: row["instance"] for row in rows}


@pytest.fixture
def clean(full_stack):
    yield full_stack
    names = full_stack.docker("ps", "-aq").stdout.decode().split()
    if names:
        full_stack.docker("rm", "-f", *names, timeout=120)


def test_fill_pin_route_merge_refuse(clean):
    stack = clean
    instances = stack.env["MOORAGE_INSTANCES"].split()
    direct = dict(zip(instances, stack.env["MOORAGE_DIRECT_HOSTS"].split(), strict=True))
    assert len(instances) == HOSTS
    # pinned first: the last instance, which fill order would reach last
    ok(
        stack.docker(
            "run",
            "-d",
            "--name",
            "pinned",
            "--label",
            f"{PIN}={instances[2]}",
            "busybox",
            "sh",
            "-c",
            "echo hello-pinned; sleep 300",
        )
    )
    names = [f"c{i}" for i in range(1, 6)]
    for name in names:
        ok(stack.docker("run", "-d", "--name", name, "busybox", "sh", "-c", f"echo hello-{name}; sleep 300"))
    placed = where(stack)
    assert placed["pinned"] == instances[2]
    assert [placed[n] for n in names] == [
        instances[0],
        instances[0],
        instances[1],
        instances[1],
        instances[2],
    ]
    # each container really is on its instance's daemon
    for name, uuid in placed.items():
        shown = ok(
            stack.docker("ps", "-a", "--format", "{{.Names}}", direct=True, env={"DOCKER_HOST": direct[uuid]})
        )
        assert any(line.startswith(name + ".m") for line in shown.splitlines()), (name, shown)

    # one merged list, newest first
    ps = ok(stack.docker("ps", "--format", "{{.Names}}")).split()
    assert ps == ["c5", "c4", "c3", "c2", "c1", "pinned"]

    # the seventh is refused clearly, and nothing is created
    seventh = stack.docker("run", "-d", "--name", "c6", "busybox", "true")
    assert seventh.returncode == 125
    assert b"full" in seventh.stderr, seventh.stderr
    assert "c6" not in where(stack)
    pinned_full = stack.docker("create", "--label", f"{PIN}={instances[0]}", "busybox", "true")
    assert (
        pinned_full.returncode != 0
        and b"is full" in pinned_full.stderr
        and instances[0].encode() in pinned_full.stderr
    )
    unknown = stack.docker(
        "create", "--label", f"{PIN}=00000000-0000-0000-0000-000000000000", "busybox", "true"
    )
    assert unknown.returncode != 0 and b"no such instance" in unknown.stderr

    # every route reaches the container's own instance
    for name in ("c1", "c3", "pinned"):
        assert f"hello-{name}" in ok(stack.docker("logs", name))
        assert ok(stack.docker("exec", name, "hostname")) == ok(
            stack.docker("inspect", "-f", "{{.Config.Hostname}}", name)
        )
        attached = stack.http("POST", f"/containers/{name}/attach?logs=1&stdout=1&stream=0")
        assert attached.status_code == 200 and f"hello-{name}".encode() in attached.content
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "in.txt")
            with open(src, "w") as fh:
                fh.write(f"to-{name}\n")
            ok(stack.docker("cp", src, f"{name}:/tmp/in.txt"))
            assert ok(stack.docker("exec", name, "cat", "/tmp/in.txt")) == f"to-{name}"
            ok(stack.docker("cp", f"{name}:/tmp/in.txt", os.path.join(tmp, "out.txt")))
            with open(os.path.join(tmp, "out.txt")) as fh:
                assert fh.read() == f"to-{name}\n"
        ok(stack.docker("stop", "-t", "0", name))
        assert ok(stack.docker("inspect", "-f", "{{.State.Running}}", name)) == "false"
        ok(stack.docker("rm", name))
        assert name not in where(stack)
    ok(stack.docker("rm", "-f", *[n for n in names if n not in ("c1", "c3")]))
    assert where(stack) == {}


def test_build_then_run_on_every_instance(clean):
    stack = clean
    instances = stack.env["MOORAGE_INSTANCES"].split()
    with tempfile.TemporaryDirectory() as context:
        with open(os.path.join(context, "Dockerfile"), "w") as fh:
            fh.write("FROM busybox\nRUN echo built-here > /built\nCMD cat /built\n")
        ok(
            stack.docker(
                "build", "-q", "-t", "placed-app:1", context, env={"DOCKER_BUILDKIT": "0"}, timeout=180
            )
        )
    try:
        for uuid in instances:
            start = time.monotonic()
            out = ok(stack.docker("run", "--rm", "--label", f"{PIN}={uuid}", "placed-app:1", timeout=180))
            assert out == "built-here", (uuid, out, time.monotonic() - start)
    finally:
        stack.docker("rmi", "placed-app:1")
