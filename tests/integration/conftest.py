"""A real stack for the integration tests: scripts/devstack up in a temporary DIR.

Set MOORAGE_TEST_ENV=/path/to/DIR/env to reuse a running stack instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

import pytest
import requests

from gateway import generations

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEVSTACK = os.path.join(REPO, "scripts", "devstack")
DOCKER = "/usr/local/bin/docker" if os.path.exists("/usr/local/bin/docker") else "docker"


def read_env(path: str) -> dict[str, str]:
    env = {}
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line.startswith("export "):
                key, _, value = line[len("export ") :].partition("=")
                env[key] = " ".join(shlex.split(value))
    return env


class Stack:
    def __init__(self, env: dict[str, str], directory: str):
        self.env = env
        self.dir = directory
        self.gateway = env["DOCKER_HOST"].replace("tcp://", "http://")
        self.direct = env["MOORAGE_DIRECT_HOST"]

    def headers(self, tenant: str = "alpha") -> dict[str, str]:
        with open(os.path.join(self.env[f"MOORAGE_CONFIG_{tenant}"], "config.json")) as fh:
            return json.load(fh)["HttpHeaders"]

    def http(self, method: str, path: str, tenant: str | None = "alpha", **kw) -> requests.Response:
        headers = {**(self.headers(tenant) if tenant else {}), **kw.pop("headers", {})}
        return requests.request(
            method, self.gateway + path, headers=headers, timeout=kw.pop("timeout", 30), **kw
        )

    def direct_http(self, method: str, path: str, **kw) -> requests.Response:
        import requests_unixsocket

        sock = self.direct[len("unix://") :].replace("/", "%2F")
        with requests_unixsocket.Session() as session:
            return session.request(method, f"http+unix://{sock}{path}", timeout=kw.pop("timeout", 30), **kw)

    def docker(
        self,
        *args: str,
        tenant: str | None = "alpha",
        direct: bool = False,
        input: bytes | None = None,
        timeout: float = 60,
        env: dict | None = None,
    ) -> subprocess.CompletedProcess:
        """The real docker CLI, through Moorage (as a tenant) or straight at the daemon."""
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        run_env["DOCKER_HOST"] = self.direct if direct else self.env["DOCKER_HOST"]
        run_env["DOCKER_CONFIG"] = (
            self.env[f"MOORAGE_CONFIG_{tenant}"]
            if tenant and not direct
            else tempfile.mkdtemp(prefix="docker-config-")
        )
        run_env.update(env or {})
        return subprocess.run([DOCKER, *args], input=input, capture_output=True, timeout=timeout, env=run_env)

    def admin(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*shlex.split(self.env["MOORAGE_ADMIN"]), *args], capture_output=True, text=True, timeout=60
        )

    def devstack(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, DEVSTACK, *args[:1], self.dir, *args[1:]],
            capture_output=True,
            text=True,
            timeout=180,
        )


@contextlib.contextmanager
def own_stack(prefix: str, *flags: str, timeout: float = 600):
    """A stack of a test module's own (`scripts/devstack up DIR FLAGS...`), down and purged
    after; the test fails with devstack's words when it does not come up."""
    directory = tempfile.mkdtemp(prefix=prefix)
    up = subprocess.run(
        [sys.executable, DEVSTACK, "up", directory, *flags], capture_output=True, text=True, timeout=timeout
    )
    try:
        if up.returncode != 0:
            pytest.fail(f"devstack up {' '.join(flags)} failed:\n{up.stderr}")
        yield Stack(read_env(os.path.join(directory, "env")), directory)
    finally:
        subprocess.run(
            [sys.executable, DEVSTACK, "down", directory, "--purge"], capture_output=True, timeout=300
        )


@pytest.fixture(scope="session")
def stack():
    reuse = os.environ.get("MOORAGE_TEST_ENV")
    if reuse:
        yield Stack(read_env(reuse), os.path.dirname(reuse))
        return
    directory = tempfile.mkdtemp(prefix="moorage-it-")
    up = subprocess.run(
        [sys.executable, DEVSTACK, "up", directory, "--hosts", "2", "--notifications"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if up.returncode != 0:
        pytest.fail(f"devstack up failed:\n{up.stderr}")
    try:
        yield Stack(read_env(os.path.join(directory, "env")), directory)
    finally:
        subprocess.run(
            [sys.executable, DEVSTACK, "down", directory, "--purge"], capture_output=True, timeout=180
        )


@pytest.fixture
def policy(stack):
    """policy(TEXT) writes the stack's policy file (DIR/policy.yaml, which the gateway re-reads
    when it changes); removed before and after the test (every rule refused)."""
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


@pytest.fixture
def unique(request):
    import uuid

    return f"it-{request.node.name[:20].strip('_[]').replace('[', '-')}-{uuid.uuid4().hex[:6]}".lower()


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "postgres: brings up its own `scripts/devstack up DIR --postgres --replicas 2` "
        "stack (scripts/test --lane postgres)",
    )
    config.addinivalue_line(
        "markers",
        "shared: needs projects to share instances (a `--tenancy shared` stack: scripts/test "
        "--lane shared); skipped on a dedicated stack",
    )
    config.addinivalue_line(
        "markers",
        "isolation: one project tries to reach another's objects; runs on both tenancies "
        "(scripts/test --lane integration and --lane shared)",
    )


def stack_tenancy(directory: str) -> str:
    """The stack's [placement] tenancy, as its gateway reads it (the default: dedicated)."""
    import tomllib

    try:
        with open(os.path.join(directory, "moorage.toml"), "rb") as fh:
            return tomllib.load(fh).get("placement", {}).get("tenancy", "dedicated")
    except OSError:
        return "dedicated"


@pytest.fixture(autouse=True)
def _tenancy_matches(request):
    """A test whose premise is a shared instance says so (marker "shared"); on a dedicated
    stack it cannot hold, and is skipped saying which stack it needs."""
    if request.node.get_closest_marker("shared") and "stack" in request.fixturenames:
        stack = request.getfixturevalue("stack")
        if stack_tenancy(stack.dir) != "shared":
            pytest.skip(
                "needs a `scripts/devstack up DIR --tenancy shared` stack (scripts/test --lane shared)"
            )


def up_instances(stack) -> list[str]:
    """The instances the gateway counts as up (the recorder follows each one's events)."""
    listed = stack.admin("instances", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    return [row["uuid"] for row in json.loads(listed.stdout) if row["state"] == "up"]


@pytest.fixture
def cached(stack):
    """The stack's table of generations, mapped here too: the cache is on for every instance
    (its events are followed), so the reads below can come from it."""
    generations.close()
    assert generations.open_table(os.path.join(stack.dir, "moorage.db") + generations.SUFFIX)
    deadline = time.monotonic() + 30
    while not all(generations.current(u) is not None for u in up_instances(stack)):
        assert time.monotonic() < deadline, "the event followers of the stack's instances are not connected"
        time.sleep(0.5)
    yield
    generations.close()
