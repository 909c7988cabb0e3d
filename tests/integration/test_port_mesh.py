"""The routing mesh (gateway/mesh.py, relay/mesh.py, `moorage mesh`): published ports at the
gateway's address (127.0.0.1 on devstack), on ports Moorage chooses, forwarded to whichever
instance holds the container; and, with the mesh off, the instances' own addresses.

A stack of the module's own: two instances of capacity 1 (two containers of one project land
on two instances), shared tenancy (two projects at once without booting hosts)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
import requests

from tests.integration.conftest import Stack, own_stack

MESH_HOST = "127.0.0.1"
FLAGS = ("--hosts", "2", "--capacity", "1", "--tenancy", "shared", "--max-hosts", "2")


@pytest.fixture(scope="module")
def mesh_stack():
    with own_stack("moorage-mesh-it-", *FLAGS) as stack:
        yield stack


@pytest.fixture
def names(mesh_stack):
    """Unique container names, removed after the test (as each tenant)."""
    made: list[tuple[str, str]] = []

    def name(tenant: str = "alpha") -> str:
        made.append((tenant, f"mesh-{uuid.uuid4().hex[:8]}"))
        return made[-1][1]

    yield name
    for tenant, made_name in made:
        mesh_stack.docker("rm", "-f", made_name, tenant=tenant)


def ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode().strip()


def web(stack: Stack, name: str, *publish: str, tenant: str = "alpha") -> None:
    """busybox httpd answering its own name on port 80."""
    script = f"mkdir -p /www && echo {name} > /www/index.html && exec httpd -f -p 80 -h /www"
    ok(stack.docker("run", "-d", "--name", name, *publish, "busybox", "sh", "-c", script, tenant=tenant))


def port_of(
    stack: Stack, name: str, port: str = "80/tcp", tenant: str = "alpha", *, one: bool = True
) -> tuple[str, int]:
    """`docker port NAME PORT`: the one address it shows (the mesh's), else (``one`` False:
    the instance's, with dockerd's IPv6 twin after it) the first."""
    lines = ok(stack.docker("port", name, port, tenant=tenant)).splitlines()
    assert len(lines) == 1 or not one, lines
    host, _, number = lines[0].rpartition(":")
    return host, int(number)


def get(host: str, port: int, timeout: float = 10.0) -> str:
    """The body at http://host:port/, once the listener is there (the mesh polls the store)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = requests.get(f"http://{host}:{port}/", timeout=3)
            return answer.text.strip()
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def refused(host: str, port: int, timeout: float = 15.0) -> bool:
    """Whether connections to host:port come to be refused (the listener closed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2):
                pass
        except ConnectionRefusedError:
            return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def instance_of(stack: Stack, name: str) -> str:
    rows = json.loads(stack.admin("containers", "list", "--format", "json").stdout)
    return next(r["instance"] for r in rows if r["name"] == name)


def test_mesh_off_keeps_instance_addresses():
    """`devstack up --no-mesh`: each instance's address, as before the mesh; and placement's
    port filter puts a second container asking for a taken port on the other instance. First in
    the module: its stack is up and down before the module's."""
    with own_stack("moorage-nomesh-it-", "--hosts", "2", "--no-mesh") as stack:
        port = 18000 + uuid.uuid4().int % 1000
        web(stack, "first", "-p", f"{port}:80")
        web(stack, "second", "-p", f"{port}:80")
        assert instance_of(stack, "first") != instance_of(stack, "second")
        hosts = {port_of(stack, n, one=False)[0] for n in ("first", "second")}
        assert len(hosts) == 2 and all(h.startswith("198.18.") for h in hosts), hosts
        for name in ("first", "second"):
            host, number = port_of(stack, name, one=False)
            assert number == port and get(host, number) == name


def test_two_instances_reachable_at_the_gateway(mesh_stack, names):
    first, second = names(), names()
    web(mesh_stack, first, "--expose", "80", "-P")
    web(mesh_stack, second, "-p", "80")
    assert instance_of(mesh_stack, first) != instance_of(mesh_stack, second)
    (host1, port1), (host2, port2) = port_of(mesh_stack, first), port_of(mesh_stack, second)
    assert host1 == host2 == MESH_HOST and port1 != port2
    assert get(MESH_HOST, port1) == first
    assert get(MESH_HOST, port2) == second
    # ps and inspect say the same; PortBindings stays what the tenant asked
    ps = ok(mesh_stack.docker("ps", "--filter", f"name={second}", "--format", "{{.Ports}}"))
    assert ps == f"{MESH_HOST}:{port2}->80/tcp"
    info = json.loads(ok(mesh_stack.docker("inspect", second)))[0]
    assert info["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": MESH_HOST, "HostPort": str(port2)}]}
    assert info["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": ""}]}


UDP_ECHO = r"""
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in me = {0};
    me.sin_family = AF_INET;
    me.sin_port = htons(atoi(argv[1]));
    if (bind(s, (struct sockaddr *)&me, sizeof me) != 0) return 1;
    static char buf[65536];
    for (;;) {
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
        if (n >= 0) sendto(s, buf, n, 0, (struct sockaddr *)&from, len);
    }
}
"""


@pytest.fixture(scope="module")
def udp_echo_image(mesh_stack):
    """An image with a UDP echo server (busybox's nc has no -u here): built from C with the
    machine's compiler, then with the classic builder through the gateway."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the UDP echo server (scripts/install-deps installs it)")
    context = tempfile.mkdtemp(prefix="mesh-udp-")
    with open(os.path.join(context, "udpecho.c"), "w") as fh:
        fh.write(UDP_ECHO)
    compiled = subprocess.run(
        ["gcc", "-static", "-O2", "-o", os.path.join(context, "udpecho"), os.path.join(context, "udpecho.c")],
        capture_output=True,
        text=True,
    )
    assert compiled.returncode == 0, compiled.stderr
    os.unlink(os.path.join(context, "udpecho.c"))
    with open(os.path.join(context, "Dockerfile"), "w") as fh:
        fh.write('FROM busybox\nCOPY udpecho /udpecho\nENTRYPOINT ["/udpecho"]\n')
    tag = f"mesh-udpecho:{uuid.uuid4().hex[:6]}"
    ok(mesh_stack.docker("build", "-q", "-t", tag, context, env={"DOCKER_BUILDKIT": "0"}, timeout=180))
    yield tag
    mesh_stack.docker("rmi", "-f", tag)


def echo(host: str, port: int, payload: bytes, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        while True:
            sock.sendto(payload, (host, port))
            try:
                return sock.recvfrom(65535)[0]
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise


def test_udp(mesh_stack, names, udp_echo_image):
    name = names()
    ok(mesh_stack.docker("run", "-d", "--name", name, "-p", "5353/udp", udp_echo_image, "5353"))
    host, port = port_of(mesh_stack, name, "5353/udp")
    assert host == MESH_HOST
    assert echo(host, port, b"one") == b"one"
    # two clients at once: each gets its own answers back
    assert echo(host, port, b"two" * 1000) == b"two" * 1000
    assert echo(host, port, b"three") == b"three"


def test_explicit_port_conflict_answers_as_dockerd(mesh_stack, names):
    port = 18000 + uuid.uuid4().int % 1000
    first, second = names(), names()
    web(mesh_stack, first, "-p", f"{port}:80")
    assert port_of(mesh_stack, first) == (MESH_HOST, port)
    assert get(MESH_HOST, port) == first
    # dockerd's answer to a host port in use (checked against the direct daemon)
    direct = [names(), names()]
    ok(
        mesh_stack.docker(
            "run", "-d", "--name", direct[0], "-p", f"{port + 1000}:80", "busybox", "sleep", "60", direct=True
        )
    )
    theirs = mesh_stack.docker(
        "run", "-d", "--name", direct[1], "-p", f"{port + 1000}:80", "busybox", "sleep", "60", direct=True
    )
    for d in direct:
        mesh_stack.docker("rm", "-f", d, direct=True)
    ours = mesh_stack.docker("run", "-d", "--name", second, "-p", f"{port}:80", "busybox", "sleep", "60")
    assert theirs.returncode == ours.returncode == 125
    words = (
        r"driver failed programming external connectivity on endpoint {} \([0-9a-f]{{64}}\): "
        r"Bind for 0\.0\.0\.0:{} failed: port is already allocated"
    )
    assert re.search(words.format(direct[1], port + 1000), theirs.stderr.decode()), theirs.stderr
    assert re.search(words.format(second, port), ours.stderr.decode()), ours.stderr
    # as dockerd leaves it: created, not started; the API's status is dockerd's 500
    assert ok(mesh_stack.docker("inspect", "-f", "{{.State.Status}}", second)) == "created"
    answer = mesh_stack.http("POST", f"/containers/{second}/start")
    assert answer.status_code == 500 and "port is already allocated" in answer.json()["message"]
    assert get(MESH_HOST, port) == first  # the holder still answers


def test_listener_closed_after_stop_die_and_rm(mesh_stack, names):
    name = names()
    web(mesh_stack, name, "-p", "80")
    _, port = port_of(mesh_stack, name)
    assert get(MESH_HOST, port) == name
    ok(mesh_stack.docker("stop", "-t", "1", name))
    assert refused(MESH_HOST, port)
    assert mesh_stack.docker("port", name).stdout.strip() == b""
    ok(mesh_stack.docker("start", name))
    _, port = port_of(mesh_stack, name)
    assert get(MESH_HOST, port) == name
    ok(mesh_stack.docker("rm", "-f", name))
    assert refused(MESH_HOST, port)
    # a container whose process ends by itself: the mesh notices (it asks the instances)
    short = names()
    ok(
        mesh_stack.docker(
            "run", "-d", "--name", short, "-p", "80", "busybox", "sh", "-c", "httpd -p 80; sleep 3"
        )
    )
    _, port = port_of(mesh_stack, short)
    ok(mesh_stack.docker("wait", short, timeout=30))
    assert refused(MESH_HOST, port, timeout=20)


def test_a_container_its_daemon_restarts_gets_ports_again(mesh_stack, names):
    """--restart always: the daemon restarts it without the gateway; the mesh adopts it."""
    name = names()
    script = f"mkdir -p /www && echo {name} > /www/index.html && httpd -p 80 -h /www && sleep 4"
    ok(
        mesh_stack.docker(
            "run", "-d", "--name", name, "--restart", "always", "-p", "80", "busybox", "sh", "-c", script
        )
    )
    _, port = port_of(mesh_stack, name)
    assert get(MESH_HOST, port) == name
    restarts = lambda: int(ok(mesh_stack.docker("inspect", "-f", "{{.RestartCount}}", name)))  # noqa: E731
    deadline = time.monotonic() + 30
    while restarts() < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert restarts() >= 1
    # The mesh adopts it within a few seconds on a quiet machine (it may be between two runs:
    # retry); the bound is generous because CI's machine is not quiet.
    deadline = time.monotonic() + 45
    while True:
        shown = mesh_stack.docker("port", name, "80/tcp").stdout.decode().split()
        if shown:
            try:
                assert get(MESH_HOST, int(shown[0].rpartition(":")[2]), timeout=3) == name
                break
            except requests.RequestException:
                pass
        assert time.monotonic() < deadline, "no port after the daemon's restart"
        time.sleep(0.5)


def test_two_projects_never_share_a_port(mesh_stack, names):
    mine, theirs = names("alpha"), names("beta")
    web(mesh_stack, mine, "-p", "80", tenant="alpha")
    web(mesh_stack, theirs, "-p", "80", tenant="beta")
    (_, port_a), (_, port_b) = port_of(mesh_stack, mine), port_of(mesh_stack, theirs, tenant="beta")
    assert port_a != port_b
    assert get(MESH_HOST, port_a) == mine and get(MESH_HOST, port_b) == theirs
    # alpha's explicit port is taken for beta too: the port is the gateway address's
    ok(mesh_stack.docker("rm", "-f", theirs, tenant="beta"))
    taken = mesh_stack.docker("run", "-d", "--name", theirs, "-p", f"{port_a}:80", "busybox", tenant="beta")
    assert taken.returncode == 125 and b"port is already allocated" in taken.stderr


TESTCONTAINERS_SESSION = """
import sys
import urllib.request

from testcontainers.core.container import DockerContainer

script = "mkdir -p /www && echo $NAME > /www/index.html && exec httpd -f -p 80 -h /www"
containers = [
    DockerContainer("busybox").with_env("NAME", f"tc{i}").with_command(["sh", "-c", script])
    .with_exposed_ports(80)
    for i in range(2)
]
for c in containers:
    c.start()
try:
    for i, c in enumerate(containers):
        host, port = c.get_container_host_ip(), c.get_exposed_port(80)
        body = urllib.request.urlopen(f"http://{host}:{port}/", timeout=10).read().decode().strip()
        print(c.get_wrapped_container().id, host, port, body, flush=True)
    sys.stdin.readline()  # the test looks where they run meanwhile
finally:
    for c in containers:
        c.stop()
"""


@pytest.fixture(scope="module")
def testcontainers_path():
    """testcontainers-python from PyPI, in a directory of its own."""
    target = tempfile.mkdtemp(prefix="testcontainers-")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", target, "testcontainers==4.15.0"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return target


def test_testcontainers_session_on_two_instances(mesh_stack, testcontainers_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "TESTCONTAINERS_", "TC_"))}
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        env.pop(name, None)
    env.update(
        PYTHONPATH=testcontainers_path,
        DOCKER_HOST=mesh_stack.env["DOCKER_HOST"],
        DOCKER_CONFIG=mesh_stack.env["MOORAGE_CONFIG_alpha"],  # docker-py sends its HttpHeaders
        TESTCONTAINERS_RYUK_DISABLED="true",
        # /.dockerenv here makes testcontainers guess a container network's gateway as the host
        # when DOCKER_HOST is a loopback address: say where the ports are.
        TESTCONTAINERS_CONNECTION_MODE="docker_host",
    )
    session = subprocess.Popen(
        [sys.executable, "-c", TESTCONTAINERS_SESSION],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert session.stdout is not None and session.stdin is not None
        lines = [session.stdout.readline().split() for _ in range(2)]
        listed = json.loads(mesh_stack.admin("containers", "list", "--format", "json").stdout)
        where = {r["id"]: r["instance"] for r in listed}
        with contextlib.suppress(BrokenPipeError):  # (it failed: its stderr says why, below)
            session.stdin.write("\n")
            session.stdin.flush()
        _, stderr = session.communicate(timeout=120)
    finally:
        session.kill()
    assert session.returncode == 0, stderr[-3000:]
    assert [(host, body) for _, host, _, body in lines] == [(MESH_HOST, "tc0"), (MESH_HOST, "tc1")], stderr[
        -3000:
    ]
    assert lines[0][2] != lines[1][2]
    assert where[lines[0][0]] != where[lines[1][0]]  # two instances, one address
