"""The keystone lane: a `scripts/devstack up DIR --keystone` stack for the whole session.

Select it with `pytest -m keystone` (every test here carries the mark). Needs root (devstack makes
network namespaces and runs dockerd) and reaches PyPI once to install Keystone into its shared
virtualenv (scripts/keystone). A second, short-lived Keystone (tokens live SHORT_EXPIRATION s) is
set up in the background while the stack comes up, for the expiry test.
"""

from __future__ import annotations

import http.client as httpclient
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse

import pytest

from tests.lanes import DOCKER, REPO, devstack, read_exports, require_stack_tools, run

KEYSTONE = os.path.join(REPO, "scripts", "keystone")
SHORT_EXPIRATION = 5  # seconds a token of the short Keystone lives
SHORT_CACHE_TTL = 2


def pytest_configure(config):
    config.addinivalue_line("markers", "keystone: needs a real Keystone (scripts/devstack up DIR --keystone)")


# --- helpers -------------------------------------------------------------------------------------


def http(
    url: str,
    method: str,
    path: str,
    headers: dict | None = None,
    body: dict | None = None,
    timeout: float = 15,
) -> tuple[int, dict, bytes]:
    """One request on a new connection (so gunicorn may hand it to any worker)."""
    parts = urllib.parse.urlsplit(url.replace("tcp://", "http://", 1))
    conn = httpclient.HTTPConnection(parts.netloc, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = dict(headers or {})
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def issue_token(auth_url: str, user: str, password: str, project: str) -> tuple[str, dict]:
    """A project-scoped token by password: (token, Keystone's token body)."""
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}},
            },
            "scope": {"project": {"name": project, "domain": {"id": "default"}}},
        }
    }
    status, headers, data = http(auth_url, "POST", "/v3/auth/tokens?nocatalog", body=body)
    assert status == 201, f"Keystone refused {user}: {status} {data[:300]!r}"
    return headers["x-subject-token"], json.loads(data)["token"]


def token_of(openrc: dict) -> tuple[str, dict]:
    return issue_token(
        openrc["OS_AUTH_URL"], openrc["OS_USERNAME"], openrc["OS_PASSWORD"], openrc["OS_PROJECT_NAME"]
    )


def docker(env: dict, *args: str, timeout: int = 60) -> subprocess.CompletedProcess:
    """The docker CLI, always under `timeout -s KILL`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "OS_"))}
    clean.update(env)
    return subprocess.run(
        ["timeout", "-s", "KILL", str(timeout), DOCKER, *args],
        capture_output=True,
        text=True,
        env=clean,
        stdin=subprocess.DEVNULL,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- fixtures ------------------------------------------------------------------------------------


class Stack:
    def __init__(self, directory: str, env: dict):
        self.dir = directory
        self.env = env
        self.host = env["DOCKER_HOST"]
        self.keystone_dir = os.path.join(directory, "keystone")
        self.admin = read_exports(env["MOORAGE_KEYSTONE_OPENRC"])
        self.openrc = {t: read_exports(env[f"MOORAGE_OPENRC_{t}"]) for t in ("alpha", "beta")}
        self.project = {t: env[f"MOORAGE_PROJECT_{t}"] for t in ("alpha", "beta")}
        self.config_dir = {t: env[f"MOORAGE_CONFIG_{t}"] for t in ("alpha", "beta")}

    def headers(self, tenant: str) -> dict:
        with open(os.path.join(self.config_dir[tenant], "config.json")) as fh:
            return json.load(fh)["HttpHeaders"]

    def get(self, path: str, headers: dict | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
        return http(self.host, method, path, headers=headers)

    def gateway_settings(self):
        """The stack gateway's settings, read as the gateway reads them."""
        from gateway import config

        return config.load(os.path.join(self.dir, "moorage.toml"))


@pytest.fixture(scope="session")
def short_keystone_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("ks-short"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory, short_keystone_dir):
    require_stack_tools("keystone")
    directory = str(tmp_path_factory.mktemp("ks-stack"))
    # The short-lived Keystone sets itself up meanwhile (its install waits on the venv's lock).
    short = subprocess.Popen(
        [sys.executable, KEYSTONE, "up", short_keystone_dir, "--token-expiration", str(SHORT_EXPIRATION)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    _background["short"] = short
    try:
        # Shared tenancy: tests/keystone/test_side_by_side.py runs both tenants on one instance
        # (dedicated tenancy with Keystone: the nova lane, whose tenants' servers are their own).
        flags = ["--keystone", "--tenancy", "shared"]
        with devstack(directory, flags, lane="keystone", up_timeout=900, down_timeout=300) as env:
            yield Stack(directory, env)
    finally:
        if short.poll() is None:
            short.kill()
            short.wait()
        run([sys.executable, KEYSTONE, "down", short_keystone_dir, "--purge"], timeout=120)
        run([sys.executable, KEYSTONE, "down", os.path.join(directory, "keystone"), "--purge"], timeout=120)


_background: dict = {}


@pytest.fixture(scope="session")
def short_keystone(stack, short_keystone_dir):
    """The admin's OS_* of a Keystone whose tokens live SHORT_EXPIRATION seconds."""
    short = _background["short"]
    try:
        _out, err = short.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        short.kill()
        pytest.fail("scripts/keystone up (short-lived tokens) did not finish within 600 s")
    if short.returncode != 0:
        pytest.fail(f"scripts/keystone up --token-expiration {SHORT_EXPIRATION} failed:\n{err[-3000:]}")
    return read_exports(os.path.join(short_keystone_dir, "openrc"))


@pytest.fixture(scope="session")
def short_gateway(short_keystone, tmp_path_factory):
    """A bare gateway (no instance) on the short-lived Keystone, with a SHORT_CACHE_TTL s cache."""
    directory = tmp_path_factory.mktemp("gw-short")
    port = free_port()
    q = json.dumps
    config = directory / "moorage.toml"
    config.write_text(
        "\n".join(
            [
                "[gateway]",
                f"bind = [{q(f'tcp://127.0.0.1:{port}')}]",
                "workers = 1",
                f"database = {q('sqlite:///' + str(directory / 'moorage.db'))}",
                f"log_file = {q(str(directory / 'gateway.log'))}",
                "[identity]",
                'backend = "keystone"',
                f"auth_url = {q(short_keystone['OS_AUTH_URL'])}",
                'username = "admin"',
                f"password = {q(short_keystone['OS_PASSWORD'])}",
                'project_name = "admin"',
                'user_domain_name = "Default"',
                'project_domain_name = "Default"',
                "timeout = 5",
                f"cache_ttl = {SHORT_CACHE_TTL}",
            ]
        )
        + "\n"
    )
    os.chmod(config, 0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MOORAGE_", "DOCKER_", "OS_"))}
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log = open(directory / "serve.out", "wb")  # noqa: SIM115 (the child writes to it after this returns)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "--config", str(config), "serve"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    url = f"tcp://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if http(url, "GET", "/_ping", timeout=2)[0] == 401:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the short-lived gateway did not start; see {directory}/gateway.log")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
