"""Client certificates with a real Keystone: `moorage login --tls` from an openrc, and a
certificate that stops working when Keystone takes its user's role away or disables its
project (the gateway asks again every [gateway] cert_recheck seconds; devstack: 5)."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time

import pytest

from tests.keystone.conftest import docker, http, issue_token, read_exports
from tests.keystone.test_login import exports, moorage_login

pytestmark = pytest.mark.keystone


class Admin:
    """Keystone's admin API, as devstack's admin (stdlib HTTP)."""

    def __init__(self, stack):
        self.url = stack.admin["OS_AUTH_URL"]
        self.token, _ = issue_token(
            self.url, stack.admin["OS_USERNAME"], stack.admin["OS_PASSWORD"], stack.admin["OS_PROJECT_NAME"]
        )

    def call(self, method: str, path: str, body: dict | None = None, expect=(200, 201, 204)) -> dict:
        status, _, data = http(
            self.url, method, "/v3" + path, headers={"X-Auth-Token": self.token}, body=body
        )
        assert status in expect, f"{method} {path}: {status} {data[:300]!r}"
        return json.loads(data) if data.strip() else {}

    def role(self, name: str) -> str:
        return self.call("GET", f"/roles?name={name}")["roles"][0]["id"]


def tls_env(stack, cert_dir: str) -> dict:
    return {
        "DOCKER_HOST": stack.env["MOORAGE_TLS_HOST"],
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": cert_dir,
        "DOCKER_CONFIG": tempfile.mkdtemp(prefix="docker-config-empty-"),
    }


def login_tls(stack, tmp_path, openrc: dict) -> dict:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    result = moorage_login(
        {**openrc, "HOME": str(home)},
        "--tls",
        "--host",
        stack.host,
        "--tls-host",
        stack.env["MOORAGE_TLS_HOST"],
    )
    assert result.returncode == 0, result.stderr
    return exports(result.stdout)


def refused_within(stack, env: dict, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while True:
        result = docker(env, "ps")
        if result.returncode != 0:
            return result.stderr
        assert time.monotonic() < deadline, f"the certificate still works {seconds} s later"
        time.sleep(1)


def test_login_tls_from_openrc_then_docker_run(stack, tmp_path):
    out = login_tls(stack, tmp_path, read_exports(stack.env["MOORAGE_OPENRC_alpha"]))
    cert_dir = str(tmp_path / "home" / ".moorage" / "docker-certs-alpha")
    assert out == {
        "DOCKER_HOST": stack.env["MOORAGE_TLS_HOST"],
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": cert_dir,
    }
    for name in ("ca.pem", "cert.pem", "key.pem"):
        assert os.path.exists(os.path.join(cert_dir, name))
    with open(os.path.join(cert_dir, "moorage-cert.json")) as fh:
        meta = json.load(fh)
    assert (meta["project_id"], meta["user_name"]) == (stack.project["alpha"], "alpha-user")
    result = docker(out, "run", "--rm", "busybox", "echo", "ok")
    assert (result.returncode, result.stdout) == (0, "ok\n"), result.stderr


def test_a_lost_role_or_a_disabled_project_ends_the_certificate(stack, tmp_path):
    admin = Admin(stack)
    member = admin.role("member")
    suffix = secrets.token_hex(3)
    project = admin.call("POST", "/projects", {"project": {"name": f"tls-{suffix}", "domain_id": "default"}})[
        "project"
    ]
    password = secrets.token_urlsafe(12)
    users = {}
    for who in ("leaver", "stayer"):
        users[who] = admin.call(
            "POST",
            "/users",
            {"user": {"name": f"tls-{who}-{suffix}", "domain_id": "default", "password": password}},
        )["user"]
        admin.call("PUT", f"/projects/{project['id']}/users/{users[who]['id']}/roles/{member}")
    try:
        envs = {}
        for who, user in users.items():
            openrc = {
                "OS_AUTH_URL": stack.admin["OS_AUTH_URL"],
                "OS_USERNAME": user["name"],
                "OS_PASSWORD": password,
                "OS_PROJECT_NAME": project["name"],
                "OS_USER_DOMAIN_NAME": "Default",
                "OS_PROJECT_DOMAIN_NAME": "Default",
            }
            (tmp_path / who).mkdir()
            out = login_tls(stack, tmp_path / who, openrc)
            envs[who] = tls_env(stack, out["DOCKER_CERT_PATH"])
            assert docker(envs[who], "ps").returncode == 0
        # The leaver loses the project's role: its certificate stops, the stayer's does not.
        admin.call("DELETE", f"/projects/{project['id']}/users/{users['leaver']['id']}/roles/{member}")
        assert "no role in the project" in refused_within(stack, envs["leaver"], 30)
        assert docker(envs["stayer"], "ps").returncode == 0
        # The project is disabled: every certificate of it stops.
        admin.call("PATCH", f"/projects/{project['id']}", {"project": {"enabled": False}})
        assert "is disabled" in refused_within(stack, envs["stayer"], 30)
    finally:
        for user in users.values():
            admin.call("DELETE", f"/users/{user['id']}", expect=(204, 404))
        admin.call("PATCH", f"/projects/{project['id']}", {"project": {"enabled": False}})
        admin.call("DELETE", f"/projects/{project['id']}", expect=(204, 404))
