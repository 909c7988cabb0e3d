"""`moorage login` against the real Keystone: from an openrc, from clouds.yaml, and its refusals."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid

import pytest

from tests.keystone.conftest import REPO, docker, http, read_exports, token_of

pytestmark = pytest.mark.keystone


def moorage_login(env: dict, *args: str) -> subprocess.CompletedProcess:
    """`moorage login ARGS`, through the real console entry point (gateway.cli)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "DOCKER_", "MOORAGE_"))}
    clean.update(env)
    clean["PYTHONPATH"] = REPO + (os.pathsep + clean["PYTHONPATH"] if clean.get("PYTHONPATH") else "")
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "login", *args],
        capture_output=True,
        text=True,
        env=clean,
        timeout=120,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
    )


def exports(stdout: str) -> dict:
    out = {}
    for line in stdout.splitlines():
        assert line.startswith("export "), f"stdout must hold only export lines: {stdout!r}"
        key, _, value = line[len("export ") :].partition("=")
        out[key] = value
    return out


def headers_in(config_dir: str) -> dict:
    with open(os.path.join(config_dir, "config.json")) as fh:
        return json.load(fh)["HttpHeaders"]


def test_login_from_openrc_then_docker_ps(stack, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {**read_exports(stack.env["MOORAGE_OPENRC_alpha"]), "HOME": str(home)}
    result = moorage_login(env, "--host", stack.host)
    assert result.returncode == 0, result.stderr
    out = exports(result.stdout)
    config_dir = str(home / ".moorage" / "docker-config-alpha")
    assert out == {"DOCKER_CONFIG": config_dir, "DOCKER_HOST": stack.host}
    assert "expires at" in result.stderr and "--refresh" in result.stderr
    assert stat.S_IMODE(os.stat(config_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(config_dir, "config.json")).st_mode) == 0o600
    headers = headers_in(config_dir)
    assert headers["X-Auth-Project-Id"] == stack.project["alpha"]
    assert not (home / ".docker").exists()  # the user's default docker config is never touched
    ps = docker(out, "ps")
    assert ps.returncode == 0, ps.stderr

    # Again: the token still lives, so it is kept; --refresh issues a new one.
    again = moorage_login(env, "--host", stack.host)
    assert again.returncode == 0 and "still logged in" in again.stderr
    assert headers_in(config_dir)["X-Auth-Token"] == headers["X-Auth-Token"]
    refreshed = moorage_login({**env, "MOORAGE_HOST": stack.host}, "--refresh")
    assert refreshed.returncode == 0, refreshed.stderr
    assert exports(refreshed.stdout)["DOCKER_HOST"] == stack.host
    assert headers_in(config_dir)["X-Auth-Token"] != headers["X-Auth-Token"]
    assert docker(out, "ps").returncode == 0


def test_login_keeps_other_settings_and_takes_config_dir(stack, tmp_path):
    config_dir = tmp_path / "beta-config"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(
        json.dumps({"HttpHeaders": {"User-Agent": "ci"}, "psFormat": "table {{.ID}}"})
    )
    env = {**read_exports(stack.env["MOORAGE_OPENRC_beta"]), "HOME": str(tmp_path)}
    result = moorage_login(env, "--config-dir", str(config_dir))
    assert result.returncode == 0, result.stderr
    assert exports(result.stdout) == {"DOCKER_CONFIG": str(config_dir)}
    with open(config_dir / "config.json") as fh:
        config = json.load(fh)
    assert config["psFormat"] == "table {{.ID}}" and config["HttpHeaders"]["User-Agent"] == "ci"
    assert config["HttpHeaders"]["X-Auth-Project-Id"] == stack.project["beta"]
    ps = docker({"DOCKER_HOST": stack.host, "DOCKER_CONFIG": str(config_dir)}, "ps", "-q")
    assert ps.returncode == 0, ps.stderr


def test_login_with_an_application_credential_from_clouds_yaml(stack, tmp_path):
    pytest.importorskip("yaml")
    openrc = stack.openrc["alpha"]
    token, body = token_of(openrc)
    status, _, data = http(
        openrc["OS_AUTH_URL"],
        "POST",
        f"/v3/users/{body['user']['id']}/application_credentials",
        headers={"X-Auth-Token": token},
        body={"application_credential": {"name": f"ci-{uuid.uuid4().hex[:8]}"}},
    )
    assert status == 201, data
    cred = json.loads(data)["application_credential"]
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n"
        "  ci:\n"
        "    auth_type: v3applicationcredential\n"
        "    auth:\n"
        f"      auth_url: {openrc['OS_AUTH_URL']}\n"
        f"      application_credential_id: {cred['id']}\n"
        f"      application_credential_secret: {cred['secret']}\n"
    )
    env = {"HOME": str(tmp_path), "OS_CLIENT_CONFIG_FILE": str(clouds)}
    result = moorage_login(env, "--os-cloud", "ci", "--host", stack.host)
    assert result.returncode == 0, result.stderr
    out = exports(result.stdout)
    assert out["DOCKER_CONFIG"] == str(tmp_path / ".moorage" / "docker-config-alpha")
    assert headers_in(out["DOCKER_CONFIG"])["X-Auth-Project-Id"] == stack.project["alpha"]
    ps = docker(out, "ps")
    assert ps.returncode == 0, ps.stderr


def test_login_refusals(stack, tmp_path):
    openrc = read_exports(stack.env["MOORAGE_OPENRC_alpha"])
    nothing = moorage_login({"HOME": str(tmp_path)})
    assert nothing.returncode == 2 and "OS_AUTH_URL" in nothing.stderr and not nothing.stdout
    wrong = moorage_login({**openrc, "OS_PASSWORD": "wrong", "HOME": str(tmp_path)})
    assert wrong.returncode == 1 and "refused the credentials" in wrong.stderr and not wrong.stdout
    default = moorage_login({**openrc, "HOME": str(tmp_path)}, "--config-dir", str(tmp_path / ".docker"))
    assert default.returncode == 2 and "refusing" in default.stderr
    assert not (tmp_path / ".docker").exists()
    unreachable = moorage_login({**openrc, "OS_AUTH_URL": "http://127.0.0.1:9/v3", "HOME": str(tmp_path)})
    assert unreachable.returncode == 1 and "cannot reach Keystone" in unreachable.stderr
