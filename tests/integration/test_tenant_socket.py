"""The tenant socket: a container that binds /var/run/docker.sock gets a socket of its own from
its agent, speaking the Docker API as its project (README "The tenant socket").

The real docker CLI runs inside a container (an image built offline from busybox with this
machine's static docker binary) and builds, runs, attaches and execs for its project through the
socket, and sees nothing of another project's. Then testcontainers-python (PyPI) with Ryuk
enabled: Docker Hub is unreachable, so the reaper is built here too (busybox's nc, a shell
script and the docker CLI: Ryuk's protocol, reaching Docker only through the socket it is
given), and the session's containers are gone within a minute of its process being killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tests.integration.conftest import DOCKER

SOCK = "/var/run/docker.sock:/var/run/docker.sock"
CLI_IMAGE = "moorage-test/docker-cli:1"
REAPER_IMAGE = "moorage-test/reaper:1"

REAPER = r"""#!/bin/sh
# Ryuk's protocol (testcontainers' moby-ryuk): clients connect to 8080 and send filter lines
# (label=KEY=VALUE, several joined by &), each answered ACK. Once every connection has been
# closed for RYUK_RECONNECTION_TIMEOUT (or none came within RYUK_CONNECTION_TIMEOUT), what
# matches a filter is removed through the Docker socket this container is given.
state=/tmp/ryuk
mkdir -p "$state"
wait_s=$(echo "${RYUK_RECONNECTION_TIMEOUT:-10s}" | tr -dc 0-9)
first_s=$(echo "${RYUK_CONNECTION_TIMEOUT:-60s}" | tr -dc 0-9)
nc -ll -p 8080 -e /ryuk/connection &
echo "$(date -u +%FT%TZ) reaper: Started!"
waited=0
while :; do
    sleep 1
    waited=$((waited + 1))
    if ls "$state"/open.* >/dev/null 2>&1; then
        waited=0
        continue
    fi
    if [ -f "$state/filters" ]; then
        [ "$waited" -ge "$wait_s" ] && break
    elif [ "$waited" -ge "$first_s" ]; then
        break
    fi
done
sort -u "$state/filters" 2>/dev/null | while IFS= read -r line; do
    args=""
    for part in $(echo "$line" | tr '&' ' '); do
        args="$args --filter $part"
    done
    for id in $(docker ps -aq $args); do docker rm -f -v "$id"; done
    for id in $(docker network ls -q $args); do docker network rm "$id"; done
    for id in $(docker volume ls -q $args); do docker volume rm -f "$id"; done
done
echo "reaper: done"
"""

CONNECTION = r"""#!/bin/sh
# One client's connection (nc -e): each filter line is kept and answered ACK.
state=/tmp/ryuk
mark="$state/open.$$"
touch "$mark"
while IFS= read -r line; do
    line=$(printf '%s' "$line" | tr -d '\r')
    [ -n "$line" ] || continue
    printf '%s\n' "$line" >> "$state/filters"
    echo ACK
done
rm -f "$mark"
"""

SESSION = r"""
import time
from testcontainers.core.container import DockerContainer
from testcontainers.core.labels import SESSION_ID

container = DockerContainer("busybox").with_command("sleep 600")
container.start()
print("STARTED", SESSION_ID, container.get_wrapped_container().id, flush=True)
time.sleep(600)
"""


def build(stack, tenant: str, tag: str, files: dict[str, str | bytes]) -> None:
    context = tempfile.mkdtemp(prefix="tenant-socket-")
    try:
        shutil.copy(DOCKER if os.path.isabs(DOCKER) else shutil.which(DOCKER) or DOCKER, context)
        for name, text in files.items():
            path = os.path.join(context, name)
            with open(path, "wb") as fh:
                fh.write(text.encode() if isinstance(text, str) else text)
            os.chmod(path, 0o755)
        done = stack.docker(
            "build", "-q", "-t", tag, context, tenant=tenant, timeout=300, env={"DOCKER_BUILDKIT": "0"}
        )
        assert done.returncode == 0, done.stderr.decode()
    finally:
        shutil.rmtree(context, ignore_errors=True)


@pytest.fixture(scope="module")
def cli_image(stack):
    """busybox with the docker CLI, for alpha and beta."""
    for tenant in ("alpha", "beta"):
        build(stack, tenant, CLI_IMAGE, {"Dockerfile": "FROM busybox\nCOPY docker /usr/local/bin/docker\n"})
    return CLI_IMAGE


def inside(stack, script: str, *, tenant: str = "alpha", flags: tuple[str, ...] = ("-v", SOCK), timeout=120):
    """Run ``script`` with sh in a throwaway container that has the tenant socket."""
    return stack.docker("run", "--rm", *flags, CLI_IMAGE, "sh", "-c", script, tenant=tenant, timeout=timeout)


def out(done: subprocess.CompletedProcess) -> str:
    return done.stdout.decode() + done.stderr.decode()


def test_a_container_builds_and_runs_for_its_project_through_its_socket(stack, cli_image, unique):
    script = f"""
set -e
docker ps --format '{{{{.Image}}}}'
docker run --rm busybox echo hi-from-inside
mkdir /b && printf 'FROM busybox\\nRUN echo built > /f\\n' > /b/Dockerfile
DOCKER_BUILDKIT=0 docker build -q -t {unique}-inner /b >/dev/null
docker run --rm {unique}-inner cat /f
docker run -d --name {unique}-nested busybox sleep 300 >/dev/null
"""
    try:
        done = inside(stack, script)
        assert done.returncode == 0, out(done)
        text = done.stdout.decode()
        assert CLI_IMAGE in text  # its own container, listed for its project
        assert "hi-from-inside" in text and "built" in text
        # What it made is the project's, seen from outside as any of its containers.
        listed = stack.docker("ps", "-a", "--format", "{{.Names}}").stdout.decode().split()
        assert f"{unique}-nested" in listed
        images = stack.docker("images", "--format", "{{.Repository}}").stdout.decode().split()
        assert f"{unique}-inner" in images
        assert f"{unique}-nested" not in stack.docker("ps", "-a", tenant="beta").stdout.decode()
    finally:
        stack.docker("rm", "-f", f"{unique}-nested")
        stack.docker("rmi", "-f", f"{unique}-inner")


def test_attach_exec_and_logs_follow_go_through_the_socket(stack, cli_image, unique):
    script = f"""
set -e
echo piped-through | docker run -i --rm busybox cat
docker run -d --name {unique}-x busybox sh -c 'echo line-one; sleep 2; echo line-two' >/dev/null
docker exec {unique}-x echo from-exec
docker logs -f {unique}-x
docker rm -f {unique}-x >/dev/null
docker run --rm -t busybox echo with-a-tty
"""
    done = inside(stack, script)
    text = out(done)
    assert done.returncode == 0, text
    for word in ("piped-through", "from-exec", "line-one", "line-two", "with-a-tty"):
        assert word in text, text


def test_inspect_shows_the_path_the_tenant_bound(stack, cli_image, unique):
    name = f"{unique}-sock"
    done = stack.docker(
        "run",
        "-d",
        "--name",
        name,
        "--mount",
        "type=bind,source=/run/docker.sock,target=/var/run/docker.sock",
        CLI_IMAGE,
        "sleep",
        "300",
    )
    assert done.returncode == 0, out(done)
    try:
        info = json.loads(stack.docker("inspect", name).stdout)[0]
        assert [m["Source"] for m in info["Mounts"]] == ["/run/docker.sock"]
        assert info["HostConfig"]["Mounts"][0]["Source"] == "/run/docker.sock"
        # The daemon binds the agent's socket for this container, never its own.
        direct = daemon_inspect(stack, info["Id"])
        source = direct["Mounts"][0]["Source"]
        assert source.endswith("/docker.sock") and source not in ("/run/docker.sock", "/var/run/docker.sock")
        ps = stack.docker("exec", name, "docker", "ps", "--format", "{{.Names}}")
        assert ps.returncode == 0 and name in ps.stdout.decode(), out(ps)
    finally:
        stack.docker("rm", "-f", name)


def daemon_inspect(stack, container_id: str) -> dict:
    for endpoint in stack.env["MOORAGE_DIRECT_HOSTS"].split():
        done = subprocess.run(
            [DOCKER, "-H", endpoint, "inspect", container_id],
            capture_output=True,
            timeout=30,
            env={k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")},
        )
        if done.returncode == 0:
            return json.loads(done.stdout)[0]
    raise AssertionError(f"no daemon holds {container_id}")


@pytest.mark.isolation
def test_a_socket_sees_and_touches_nothing_of_another_project(stack, cli_image, unique):
    name = f"{unique}-alphas"
    assert stack.docker("run", "-d", "--name", name, "busybox", "sleep", "300").returncode == 0
    try:
        alpha_id = stack.docker("inspect", "-f", "{{.Id}}", name).stdout.decode().strip()
        script = f"""
docker ps -a --format '{{{{.Names}}}} {{{{.ID}}}}'
echo ---
docker inspect {name} {alpha_id[:12]} ; echo "inspect=$?"
docker kill {name} ; echo "kill=$?"
docker stop {alpha_id} ; echo "stop=$?"
"""
        done = inside(stack, script, tenant="beta")
        text = out(done)
        listed = text.split("---")[0]
        assert name not in listed and alpha_id[:12] not in listed, text
        assert "inspect=1" in text and "kill=1" in text and "stop=1" in text, text
        assert "No such container" in text
        running = stack.docker("inspect", "-f", "{{.State.Running}}", name).stdout.decode().strip()
        assert running == "true"
    finally:
        stack.docker("rm", "-f", name)


def _ask(path: str, target: str) -> str:
    """One GET on a unix socket; the answer's status line and body, or the error."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(20)
            sock.connect(path)
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")
    except OSError as exc:
        return f"error: {exc}"


def test_the_credential_ends_with_its_container(stack, cli_image, unique):
    """The socket answers as the project while its container exists; once the daemon removed
    it (as with --rm), the gateway refuses the socket's credential; once removed through
    Moorage, the socket itself is gone."""
    first, second = f"{unique}-a", f"{unique}-b"
    for name in (first, second):
        assert (
            stack.docker("run", "-d", "--name", name, "-v", SOCK, CLI_IMAGE, "sleep", "300").returncode == 0
        )
    try:
        paths = {}
        for name in (first, second):
            cid = stack.docker("inspect", "-f", "{{.Id}}", name).stdout.decode().strip()
            paths[name] = (cid, daemon_inspect(stack, cid)["Mounts"][0]["Source"])
        answer = _ask(paths[first][1], "/containers/json")
        assert answer.startswith("HTTP/1.1 200") and first in answer, answer
        # Only the Docker API: no client certificate of the project through a container's socket.
        assert _ask(paths[first][1], "/moorage/v1/certs").startswith("HTTP/1.1 403")
        # Removed by its daemon: the map forgets it at the next heartbeat, and the credential with it.
        cid = paths[first][0]
        for endpoint in stack.env["MOORAGE_DIRECT_HOSTS"].split():
            subprocess.run(
                [DOCKER, "-H", endpoint, "rm", "-f", cid],
                capture_output=True,
                timeout=30,
                env={k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")},
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answer = _ask(paths[first][1], "/containers/json")
            if not answer.startswith("HTTP/1.1 200"):
                break
            time.sleep(2)
        assert answer.startswith("HTTP/1.1 401") or answer.startswith("error:"), answer
        # Removed through Moorage: revoked, and its agent closes the socket at once.
        assert stack.docker("rm", "-f", second).returncode == 0
        assert _ask(paths[second][1], "/containers/json").startswith("error:")
    finally:
        stack.docker("rm", "-f", first, second)


# -- testcontainers with Ryuk ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def testcontainers_path():
    target = tempfile.mkdtemp(prefix="testcontainers-")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            target,
            "testcontainers==4.15.0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    yield target
    shutil.rmtree(target, ignore_errors=True)


def alpha_address(stack) -> str:
    """Where alpha's published ports are reached: its instance's address, as `docker port`
    says. (Until the gateway publishes them itself, issue 15 item 3, testcontainers is told this
    with TC_HOST; then TC_HOST goes.)"""
    done = stack.docker("run", "-d", "-p", "8080", "busybox", "sleep", "60")
    assert done.returncode == 0, out(done)
    probe = done.stdout.decode().strip()
    try:
        port = stack.docker("port", probe, "8080").stdout.decode().split()[0]
    finally:
        stack.docker("rm", "-f", probe)
    return port.rpartition(":")[0]


def test_testcontainers_with_ryuk_removes_a_killed_sessions_containers(stack, cli_image, testcontainers_path):
    build(
        stack,
        "alpha",
        REAPER_IMAGE,
        {
            "Dockerfile": "FROM busybox\nCOPY docker /usr/local/bin/docker\nCOPY reaper connection /ryuk/\n"
            'CMD ["/ryuk/reaper"]\n',
            "reaper": REAPER,
            "connection": CONNECTION,
        },
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DOCKER_", "TESTCONTAINERS_", "RYUK_"))
        and k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
    }
    env.update(
        DOCKER_HOST=stack.env["DOCKER_HOST"],
        DOCKER_CONFIG=stack.env["MOORAGE_CONFIG_alpha"],
        PYTHONPATH=testcontainers_path,
        RYUK_CONTAINER_IMAGE=REAPER_IMAGE,
        TC_HOST=alpha_address(stack),
    )
    session = subprocess.Popen(
        [sys.executable, "-c", SESSION], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = session.stdout.readline() if session.stdout else ""
        if not line.startswith("STARTED"):
            session.kill()
            pytest.fail(f"testcontainers did not start its container: {line}{session.communicate()[1]}")
        _, session_id, container_id = line.split()
        label = f"label=org.testcontainers.session-id={session_id}"
        ryuk = f"testcontainers-ryuk-{session_id}"
        names = stack.docker("ps", "--format", "{{.Names}}").stdout.decode().split()
        assert ryuk in names
        assert stack.docker("ps", "-q", "--filter", label).stdout.decode().strip() == container_id[:12]
        session.send_signal(signal.SIGKILL)
        session.wait(timeout=10)
        killed = time.monotonic()
        while time.monotonic() - killed < 60:
            left = stack.docker("ps", "-aq", "--filter", label).stdout.decode().split()
            reaper = stack.docker("ps", "-aq", "--filter", f"name={ryuk}").stdout.decode().split()
            if not left and not reaper:
                break
            time.sleep(2)
        assert not left, f"the session's containers outlived it: {left}"
        assert not reaper, "the reaper is still there"
    finally:
        if session.poll() is None:
            session.kill()
        for ref in stack.docker("ps", "-aq", "--filter", "name=testcontainers-ryuk").stdout.decode().split():
            stack.docker("rm", "-f", ref)
