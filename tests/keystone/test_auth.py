"""Authentication against a real Keystone: every case through the gateway and the docker CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest

from gateway.tenancy.keystone import _parse_time
from tests.keystone.conftest import KEYSTONE, docker, http, issue_token, token_of

pytestmark = pytest.mark.keystone

# Routes of every kind: plain, versioned, streaming, hijacked. Authentication comes before the route.
ROUTES = [
    ("GET", "/_ping"),
    ("GET", "/v1.41/containers/json"),
    ("GET", "/events"),
    ("POST", "/v1.41/containers/abc/attach?stream=1&stdout=1"),
    ("POST", "/exec/abc/start"),
]


def message(body: bytes) -> str:
    doc = json.loads(body)
    assert set(doc) == {"message"}, doc
    return doc["message"]


@pytest.mark.parametrize("method,path", ROUTES)
def test_missing_token_header_is_401(stack, method, path):
    status, headers, body = http(
        stack.host, method, path, headers={"X-Auth-Project-Id": stack.project["alpha"]}
    )
    assert status == 401
    assert headers["content-type"].startswith("application/json")
    text = message(body)
    assert "X-Auth-Token" in text and "moorage login" in text


@pytest.mark.parametrize("method,path", ROUTES[:2])
def test_missing_project_header_is_401(stack, method, path):
    token = stack.headers("alpha")["X-Auth-Token"]
    status, _, body = http(stack.host, method, path, headers={"X-Auth-Token": token})
    assert status == 401
    text = message(body)
    assert "X-Auth-Project-Id" in text and "moorage login" in text


def test_garbage_token_is_401(stack):
    for garbage in ("garbage", "gAAAAAB" + "x" * 180):
        status, _, body = stack.get(
            "/_ping", {"X-Auth-Token": garbage, "X-Auth-Project-Id": stack.project["alpha"]}
        )
        assert status == 401
        assert "not valid" in message(body)


def test_token_of_another_project_is_401(stack):
    beta_token = stack.headers("beta")["X-Auth-Token"]
    status, _, body = stack.get(
        "/v1.41/containers/json", {"X-Auth-Token": beta_token, "X-Auth-Project-Id": stack.project["alpha"]}
    )
    assert status == 401
    text = message(body)
    assert "scoped to project beta" in text and stack.project["alpha"] in text


def test_each_tenant_with_its_own_headers(stack):
    for tenant in ("alpha", "beta"):
        status, _, body = stack.get("/_ping", stack.headers(tenant))
        assert (status, body) == (200, b"OK"), tenant


@pytest.mark.parametrize("tenant", ["alpha", "beta"])
def test_docker_cli_as_each_tenant(stack, tenant):
    env = {"DOCKER_HOST": stack.host, "DOCKER_CONFIG": stack.config_dir[tenant]}
    version = docker(env, "version", "--format", "{{.Server.Version}}")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip()
    ps = docker(env, "ps", "-a")
    assert ps.returncode == 0, ps.stderr
    assert ps.stdout.startswith("CONTAINER ID")


def test_docker_cli_without_login_says_how(stack, tmp_path):
    result = docker({"DOCKER_HOST": stack.host, "DOCKER_CONFIG": str(tmp_path)}, "ps")
    assert result.returncode != 0
    assert "moorage login" in result.stderr


def test_admin_role_is_recognized(stack):
    from gateway.tenancy import make_provider

    provider = make_provider(stack.gateway_settings().identity)
    token, body = token_of(stack.admin)
    admin = provider.validate(token, body["project"]["id"])
    assert admin.is_admin and admin.project_name == "admin" and admin.user_name == "admin"
    alpha = provider.validate(stack.headers("alpha")["X-Auth-Token"], stack.project["alpha"])
    assert not alpha.is_admin and "member" in alpha.roles
    assert (alpha.project_name, alpha.user_name) == ("alpha", "alpha-user")
    status, _, _ = stack.get("/_ping", {"X-Auth-Token": token, "X-Auth-Project-Id": body["project"]["id"]})
    assert status == 200


def test_cache_is_bounded(stack):
    from gateway.tenancy import make_provider

    provider = make_provider(dataclasses.replace(stack.gateway_settings().identity, cache_size=2))
    tokens = [token_of(stack.openrc["alpha"])[0] for _ in range(3)]
    for token in tokens:
        provider.validate(token, stack.project["alpha"])
    assert provider.cache_len() == 2


def test_revoked_token_is_refused_after_the_cache_ttl(stack):
    ttl = stack.gateway_settings().identity.cache_ttl
    token, _ = token_of(stack.openrc["alpha"])
    headers = {"X-Auth-Token": token, "X-Auth-Project-Id": stack.project["alpha"]}
    for _ in range(4):  # into both workers' caches
        assert stack.get("/_ping", headers)[0] == 200
    auth_url = stack.openrc["alpha"]["OS_AUTH_URL"]
    status, _, body = http(
        auth_url, "DELETE", "/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}
    )
    assert status == 204, body
    revoked = time.monotonic()
    time.sleep(max(0.0, revoked + ttl + 0.5 - time.monotonic()))
    for _ in range(4):
        status, _, body = stack.get("/_ping", headers)
        assert status == 401
        assert "not valid" in message(body)


def test_keystone_down_is_503_then_back_up_works(stack):
    token, _ = token_of(stack.openrc["alpha"])  # never used yet: in no cache
    headers = {"X-Auth-Token": token, "X-Auth-Project-Id": stack.project["alpha"]}
    down = subprocess.run(
        [sys.executable, KEYSTONE, "down", stack.keystone_dir], capture_output=True, text=True, timeout=60
    )
    assert down.returncode == 0, down.stderr
    try:
        t0 = time.monotonic()
        status, _, body = stack.get("/_ping", headers)
        assert status == 503
        assert "identity service unavailable" in message(body)
        assert time.monotonic() - t0 < 6
        result = docker({"DOCKER_HOST": stack.host, "DOCKER_CONFIG": stack.config_dir["beta"]}, "ps")
        if result.returncode != 0:  # beta's token may still be cached: then ps just works
            assert "identity service unavailable" in result.stderr
    finally:
        up = subprocess.run(
            [sys.executable, KEYSTONE, "up", stack.keystone_dir], capture_output=True, text=True, timeout=120
        )
    assert up.returncode == 0, up.stderr
    status, _, _ = stack.get("/_ping", headers)
    assert status == 200
    assert (
        docker({"DOCKER_HOST": stack.host, "DOCKER_CONFIG": stack.config_dir["alpha"]}, "ps").returncode == 0
    )


def test_expired_token_is_refused(short_keystone, short_gateway):
    token, body = issue_token(short_keystone["OS_AUTH_URL"], "admin", short_keystone["OS_PASSWORD"], "admin")
    headers = {"X-Auth-Token": token, "X-Auth-Project-Id": body["project"]["id"]}
    assert http(short_gateway, "GET", "/_ping", headers=headers)[0] == 200
    expires = _parse_time(body["expires_at"])
    assert expires - time.time() < 10  # the short Keystone's tokens, not a week-long one
    time.sleep(max(0.0, expires - time.time() + 0.5))
    for _ in range(3):
        status, _, data = http(short_gateway, "GET", "/_ping", headers=headers)
        assert status == 401
        text = message(data)
        assert "expired" in text or "not valid" in text
    # a fresh token of the same Keystone works
    fresh, body = issue_token(short_keystone["OS_AUTH_URL"], "admin", short_keystone["OS_PASSWORD"], "admin")
    assert (
        http(
            short_gateway,
            "GET",
            "/_ping",
            headers={"X-Auth-Token": fresh, "X-Auth-Project-Id": body["project"]["id"]},
        )[0]
        == 200
    )


def test_tokens_never_reach_the_gateway_log(stack):
    with open(os.path.join(stack.dir, "gateway-1.log"), errors="replace") as fh:
        text = fh.read()
    for tenant in ("alpha", "beta"):
        assert stack.headers(tenant)["X-Auth-Token"] not in text
    assert stack.admin["OS_PASSWORD"] not in text
