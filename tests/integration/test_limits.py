"""Resource defaults and maxima end to end, builds included: a second gateway process on the
stack's store, whose settings add a [limits] section (the stack's own gateway has none, so that
the parity suite compares containers without limits)."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import time

import pytest

LIMITS = """
[limits]
default_memory = "256m"
max_memory = "512m"
default_cpus = 0.5
max_cpus = 1
"""
# What a build step's cgroup says (v2, else v1).
PROBE = (
    b"FROM busybox:latest\n"
    b'RUN echo "mem=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || '
    b'cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"; '
    b'echo "cpu=$(cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)"\n'
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def limited(stack, tmp_path_factory):
    """DOCKER_HOST of a gateway with [limits], on the stack's store and instances."""
    tmp = tmp_path_factory.mktemp("limited")
    admin = shlex.split(stack.env["MOORAGE_ADMIN"])
    config_at = admin.index("--config") + 1
    with open(admin[config_at]) as fh:
        config = fh.read()
    (tmp / "moorage.toml").write_text(config + LIMITS)
    admin[config_at] = str(tmp / "moorage.toml")
    port = _free_port()
    log = open(tmp / "gateway.log", "wb")  # noqa: SIM115 (the child writes to it after this returns)
    proc = subprocess.Popen(
        [
            *admin,
            "serve",
            "--bind",
            f"tcp://127.0.0.1:{port}",
            "--workers",
            "1",
            "--log-file",
            str(tmp / "gateway.log"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp / "gateway.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the limited gateway does not listen"
                time.sleep(0.2)
        yield {"DOCKER_HOST": f"tcp://127.0.0.1:{port}"}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def build(stack, env, *flags, tag=None):
    args = ["build", *flags, *(["-t", tag] if tag else []), "-"]
    return stack.docker(*args, input=PROBE, env={**env, "DOCKER_BUILDKIT": "0"}, timeout=180)


def test_build_steps_get_the_projects_default_limits(stack, limited, unique):
    result = build(stack, limited, "--no-cache", tag=unique)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert f"mem={256 << 20}" in out and "cpu=50000" in out, out
    stack.docker("rmi", unique)
    within = build(
        stack, limited, "--no-cache", "--memory", "384m", "--memory-swap", "1g", "--cpu-quota", "100000"
    )
    assert within.returncode == 0, within.stderr
    assert f"mem={384 << 20}" in within.stdout.decode() and "cpu=100000" in within.stdout.decode()


@pytest.mark.parametrize(
    "flags,text",
    [
        (["--memory", "1g"], "limits.max_memory"),
        (["--memory", "256m", "--memory-swap", "-1"], "unlimited swap (--memory-swap -1)"),
        (["--memory", "256m", "--memory-swap", "2g"], "twice limits.max_memory"),
        (["--shm-size", "1g"], "--shm-size"),
        (["--cpu-quota", "200000"], "limits.max_cpus"),
        (["--cpu-period", "50000", "--cpu-quota", "100000"], "limits.max_cpus"),
        (["--cpu-shares", "4096"], "--cpu-shares"),
    ],
    ids=["memory", "swap-unlimited", "swap", "shm", "cpu-quota", "cpu-period", "cpu-shares"],
)
def test_build_limits_above_the_maxima_are_refused(stack, limited, unique, flags, text):
    result = build(stack, limited, *flags, tag=unique)
    assert result.returncode != 0 and text.encode() in result.stderr, result.stderr
    assert f"project {stack.env['MOORAGE_PROJECT_alpha']}".encode() in result.stderr
    assert stack.docker("image", "inspect", unique).returncode != 0


def test_swap_with_a_memory_maximum(stack, limited, unique):
    refused = stack.docker(
        "run", "--rm", "-m", "256m", "--memory-swap", "-1", "busybox:latest", "true", env=limited
    )
    assert refused.returncode != 0 and b"unlimited swap (--memory-swap -1)" in refused.stderr, refused.stderr
    assert b"limits.max_memory" in refused.stderr
    created = stack.docker(
        "create", "--name", unique, "-m", "256m", "--memory-swap", "1g", "busybox:latest", "true", env=limited
    )
    assert created.returncode == 0, created.stderr
    try:
        fields = stack.docker("inspect", "--format", "{{json .HostConfig}}", unique).stdout
        host = json.loads(fields)
        assert (host["Memory"], host["MemorySwap"], host["NanoCpus"]) == (256 << 20, 1 << 30, 500_000_000)
        update = stack.docker("update", "--memory-swap", "-1", unique, env=limited)
        assert update.returncode != 0 and b"unlimited swap" in update.stderr
    finally:
        stack.docker("rm", "-f", unique)
    # The stack's own gateway has no maximum: dockerd's way
    assert (
        stack.docker("run", "--rm", "-m", "64m", "--memory-swap", "-1", "busybox:latest", "true").returncode
        == 0
    )


def test_shm_and_cpu_weight_of_containers(stack, limited):
    for flags, text in ((["--shm-size", "1g"], b"--shm-size"), (["--cpu-shares", "2048"], b"--cpu-shares")):
        result = stack.docker("run", "--rm", *flags, "busybox:latest", "true", env=limited)
        assert result.returncode != 0 and text in result.stderr, result.stderr
    ok = stack.docker(
        "run",
        "--rm",
        "--shm-size",
        "128m",
        "--cpu-shares",
        "1024",
        "busybox:latest",
        "df",
        "-m",
        "/dev/shm",
        env=limited,
    )
    assert ok.returncode == 0 and b"128" in ok.stdout, ok.stderr
