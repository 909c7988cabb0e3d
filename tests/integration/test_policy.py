"""Policy end to end: the real docker CLI against the gateway of a devstack stack, which reads
DIR/policy.yaml (absent: every rule refused) and re-reads it when it changes."""

import os
import time

import pytest

DOCKERFILE = b"FROM busybox:latest\nRUN true\n"


@pytest.fixture
def policy(stack):
    path = os.path.join(stack.dir, "policy.yaml")

    def write(text: str) -> None:
        with open(path, "w") as fh:
            fh.write(text)
        stamp = time.time() + 5 + write.count  # a fresh mtime even within one second
        write.count += 1
        os.utime(path, (stamp, stamp))

    write.count = 0
    if os.path.exists(path):
        os.unlink(path)
    yield write
    if os.path.exists(path):
        os.unlink(path)


def daemon_containers(stack) -> set[str]:
    return set(stack.docker("ps", "-aq", "--no-trunc", direct=True).stdout.split())


def daemon_volumes(stack) -> set[str]:
    return set(stack.docker("volume", "ls", "-q", direct=True).stdout.split())


RUN_REFUSED = [
    (["--privileged"], "container:create:privileged"),
    (["-v", "/:/host"], "container:create:bind_mount"),
    (["-v", "/var/run/docker.sock:/var/run/docker.sock"], "container:create:docker_socket"),
    (["--network", "host"], "container:create:host_network"),
    (["--pid", "host"], "container:create:host_pid"),
    (["--cap-add", "SYS_ADMIN"], "container:create:cap_add"),
    (["--security-opt", "seccomp=unconfined"], "container:create:security_opt"),
    (["--device", "/dev/null"], "container:create:devices"),
    (["--sysctl", "kernel.msgmax=1"], "container:create:sysctls"),
]


@pytest.mark.parametrize("flags,rule", RUN_REFUSED, ids=[r[1].split(":")[-1] for r in RUN_REFUSED])
def test_docker_run_with_an_escaping_setting_fails_and_creates_nothing(stack, policy, unique, flags, rule):
    before = daemon_containers(stack)
    result = stack.docker("run", "--rm", "--name", unique, *flags, "busybox:latest", "true")
    assert result.returncode != 0
    assert f'policy rule "{rule}"'.encode() in result.stderr, result.stderr
    assert b"ask your operator" in result.stderr
    assert unique.encode() not in stack.docker("ps", "-a", "--format", "{{.Names}}").stdout
    assert daemon_containers(stack) == before


def test_privileged_exec_is_refused(stack, policy, unique):
    assert stack.docker("run", "-d", "--name", unique, "busybox:latest", "sleep", "300").returncode == 0
    try:
        result = stack.docker("exec", "--privileged", unique, "true")
        assert result.returncode != 0
        assert b'policy rule "exec:create:privileged"' in result.stderr, result.stderr
        assert stack.docker("exec", unique, "true").returncode == 0
    finally:
        stack.docker("rm", "-f", unique)


def test_build_with_host_networking_is_refused(stack, policy, unique):
    result = stack.docker("build", "--network", "host", "-t", unique, "-", input=DOCKERFILE,
                          env={"DOCKER_BUILDKIT": "0"}, timeout=120)
    assert result.returncode != 0
    assert b'policy rule "image:build:host_network"' in result.stderr, result.stderr
    assert stack.docker("image", "inspect", unique, direct=True).returncode != 0


def test_bind_volume_is_refused(stack, policy, unique):
    before = daemon_volumes(stack)
    result = stack.docker("volume", "create", "-o", "type=none", "-o", "o=bind", "-o", "device=/etc", unique)
    assert result.returncode != 0
    assert b'policy rule "volume:create:host_bind"' in result.stderr, result.stderr
    assert daemon_volumes(stack) == before
    ok = stack.docker("volume", "create", unique)  # a plain volume is fine
    assert ok.returncode == 0, ok.stderr
    stack.docker("volume", "rm", unique)


def test_a_policy_file_allows_a_rule_for_one_project_and_is_reread(stack, policy, unique):
    alpha = stack.env["MOORAGE_PROJECT_alpha"]
    run = ("run", "--rm", "--sysctl", "kernel.msgmax=1", "busybox:latest", "cat", "/proc/sys/kernel/msgmax")
    assert stack.docker(*run).returncode != 0
    policy(f'"container:create:sysctls": "project_id:{alpha}"\n')
    allowed = stack.docker(*run)
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.strip() == b"1"
    refused = stack.docker(*run, tenant="beta")
    assert refused.returncode != 0 and b"container:create:sysctls" in refused.stderr
    policy('"container:create:sysctls": "role:nobody-has-this"\n')
    assert b"container:create:sysctls" in stack.docker(*run).stderr


def test_harmless_settings_still_work(stack, policy, unique):
    result = stack.docker("run", "--rm", "-v", f"{unique}:/data", "--cap-add", "NET_BIND_SERVICE",
                          "--security-opt", "no-new-privileges", "--sysctl", "net.ipv4.ip_unprivileged_port_start=0",
                          "busybox:latest", "true")
    assert result.returncode == 0, result.stderr
    stack.docker("volume", "rm", unique)


def test_oversize_header_and_body_answer_in_dockers_shape(stack):
    big_header = stack.http("GET", "/v1.41/version", headers={"X-Big": "x" * 70_000})
    assert big_header.status_code in (400, 431)  # gunicorn: Request Header Fields Too Large
    assert big_header.headers["Content-Type"] == "application/json" and "message" in big_header.json()
    body = b'{"Image":"' + b"x" * (10 * 1024 * 1024) + b'"}'
    big_body = stack.http("POST", "/v1.41/containers/create", data=body,
                          headers={"Content-Type": "application/json"})
    assert big_body.status_code == 413 and "too large" in big_body.json()["message"]
