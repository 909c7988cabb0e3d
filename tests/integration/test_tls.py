"""The TLS address with client certificates (issue #15 item 1): real clients that send no
headers (the docker CLI without DOCKER_CONFIG, docker-py, dockerode) authenticate with the
certificate devstack obtained through `moorage login --tls`; certificates that are revoked,
expired, of another CA or of another project never get access."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.conftest import DOCKER

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def tls(stack):
    if not stack.env.get("MOORAGE_TLS_HOST"):
        pytest.fail("the stack's env has no MOORAGE_TLS_HOST: bring it up with this branch's devstack")
    return stack.env["MOORAGE_TLS_HOST"]


def tls_env(tls_host: str, cert_dir: str, config_dir: str | None = None) -> dict:
    """A client's environment with the certificate and, unless given, no docker config at all;
    without the CA-bundle variables of these machines, which override docker-py's ca.pem."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DOCKER_") and k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
    }
    env.update(
        DOCKER_HOST=tls_host,
        DOCKER_TLS_VERIFY="1",
        DOCKER_CERT_PATH=cert_dir,
        DOCKER_CONFIG=config_dir or tempfile.mkdtemp(prefix="docker-config-empty-"),
    )
    return env


def docker(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([DOCKER, *args], capture_output=True, timeout=timeout, env=env)


def https(tls_host: str, path: str) -> str:
    return "https://" + tls_host.removeprefix("tcp://") + path


def issue(stack, tls_host: str, directory: str, config_dir: str | None = None) -> dict:
    """A fresh certificate for a tenant's token (alpha's unless config_dir), the way a user gets one."""
    result = subprocess.run(
        [
            *stack.env["MOORAGE_ADMIN"].split()[:1],
            "login",
            "--tls",
            "--token-from-config",
            "--config-dir",
            config_dir or stack.env["MOORAGE_CONFIG_alpha"],
            "--cert-dir",
            directory,
            "--host",
            stack.env["DOCKER_HOST"],
            "--tls-host",
            tls_host,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"export DOCKER_HOST={tls_host}",
        "export DOCKER_TLS_VERIFY=1",
        f"export DOCKER_CERT_PATH={directory}",
    ]
    assert oct(os.stat(os.path.join(directory, "key.pem")).st_mode & 0o777) == "0o600"
    with open(os.path.join(directory, "moorage-cert.json")) as fh:
        return json.load(fh)


def test_docker_cli_with_a_certificate_and_no_docker_config(stack, tls, unique):
    alpha = tls_env(tls, stack.env["MOORAGE_CERTS_alpha"])
    beta = tls_env(tls, stack.env["MOORAGE_CERTS_beta"])
    ok = docker(alpha, "run", "--rm", "busybox", "echo", "ok")
    assert (ok.returncode, ok.stdout) == (0, b"ok\n"), ok.stderr
    try:
        assert docker(alpha, "run", "-d", "--name", unique, "busybox", "sleep", "300").returncode == 0
        assert unique in docker(alpha, "ps", "--format", "{{.Names}}").stdout.decode()
        listed = docker(beta, "ps", "-a", "--format", "{{.Names}}")
        assert listed.returncode == 0 and unique not in listed.stdout.decode()
        seen = docker(beta, "inspect", unique)
        assert seen.returncode != 0 and b"No such object" in seen.stderr
        removed = docker(beta, "rm", "-f", unique)  # -f: exit 0 on no such container, as dockerd's CLI does
        assert b"No such container" in removed.stderr
        assert unique in docker(alpha, "ps", "--format", "{{.Names}}").stdout.decode()
        # The headers of the same project beside the certificate: one identity, fine.
        both = tls_env(tls, stack.env["MOORAGE_CERTS_alpha"], stack.env["MOORAGE_CONFIG_alpha"])
        assert unique in docker(both, "ps", "--format", "{{.Names}}").stdout.decode()
        # Another project's headers beside alpha's certificate: refused, not beta's view.
        mixed = tls_env(tls, stack.env["MOORAGE_CERTS_alpha"], stack.env["MOORAGE_CONFIG_beta"])
        refused = docker(mixed, "ps")
        assert refused.returncode != 0 and b"names project" in refused.stderr, refused.stderr
    finally:
        docker(alpha, "rm", "-f", unique)
    # The plain address still takes the headers.
    assert stack.docker("ps").returncode == 0


def test_docker_py_over_tls(stack, tls, unique, monkeypatch):
    import docker as docker_py

    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # they would override ca.pem
        monkeypatch.delenv(name, raising=False)
    client = docker_py.from_env(environment=tls_env(tls, stack.env["MOORAGE_CERTS_alpha"]))
    try:
        assert client.ping()
        out = client.containers.run("busybox", ["echo", "from-docker-py"], name=unique, remove=True)
        assert out == b"from-docker-py\n"
        assert unique not in [c.name for c in client.containers.list(all=True)]
    finally:
        client.close()


def test_revoked_certificates_are_refused(stack, tls, tmp_path):
    mine = str(tmp_path / "mine")
    meta = issue(stack, tls, mine)
    env = tls_env(tls, mine)
    assert docker(env, "ps").returncode == 0
    # The user lists and revokes their own project's certificates, authenticated by the certificate.
    user = [*stack.env["MOORAGE_ADMIN"].split()[:1], "certs"]
    listed = subprocess.run(
        [*user, "list", "--host", tls, "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    rows = {r["serial"]: r for r in json.loads(listed.stdout)}
    assert rows[meta["serial"]]["state"] == "valid"
    assert {r["project_id"] for r in rows.values()} == {stack.env["MOORAGE_PROJECT_alpha"]}
    revoked = subprocess.run(
        [*user, "revoke", meta["serial"], "--host", tls], env=env, capture_output=True, text=True, timeout=60
    )
    assert revoked.returncode == 0, revoked.stderr
    refused = docker(env, "ps")
    assert refused.returncode != 0 and b"revoked" in refused.stderr, refused.stderr
    # The operator revokes another, from the store.
    other = str(tmp_path / "other")
    serial = issue(stack, tls, other)["serial"]
    assert docker(tls_env(tls, other), "ps").returncode == 0
    assert stack.admin("certs", "revoke", serial).returncode == 0
    refused = docker(tls_env(tls, other), "ps")
    assert refused.returncode != 0 and b"revoked" in refused.stderr, refused.stderr
    operator = json.loads(stack.admin("certs", "list", "--format", "json").stdout)
    assert {r["serial"]: r["state"] for r in operator}[serial] == "revoked"


def _signed_by(ca_cert: x509.Certificate, ca_key, directory: str, *, not_after: datetime.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forged")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now, not_after) - datetime.timedelta(days=2))
        .not_valid_after(not_after)
        .sign(ca_key, hashes.SHA256())
    )
    os.makedirs(directory)
    with open(os.path.join(directory, "cert.pem"), "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(directory, "key.pem"), "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )


def test_expired_foreign_unrecorded_and_absent_certificates_never_get_access(stack, tls, tmp_path):
    pki = os.path.join(stack.dir, "tls")
    with open(os.path.join(pki, "client-ca.pem"), "rb") as fh:
        stack_ca = x509.load_pem_x509_certificate(fh.read())
    with open(os.path.join(pki, "client-ca-key.pem"), "rb") as fh:
        stack_ca_key = serialization.load_pem_private_key(fh.read(), password=None)
    ca_pem = os.path.join(stack.env["MOORAGE_CERTS_alpha"], "ca.pem")
    now = datetime.datetime.now(datetime.UTC)
    # Expired (signed by the stack's own CA): the handshake fails.
    _signed_by(stack_ca, stack_ca_key, str(tmp_path / "expired"), not_after=now - datetime.timedelta(hours=1))
    # Another CA's: the handshake fails.
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the stack's CA")])
    other_ca = (
        x509.CertificateBuilder()
        .subject_name(other_name)
        .issuer_name(other_name)
        .public_key(other_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(other_key, hashes.SHA256())
    )
    _signed_by(other_ca, other_key, str(tmp_path / "foreign"), not_after=now + datetime.timedelta(hours=1))
    # The stack's CA but never issued by the gateway (no record): 401.
    _signed_by(
        stack_ca, stack_ca_key, str(tmp_path / "unrecorded"), not_after=now + datetime.timedelta(hours=1)
    )
    for name in ("expired", "foreign", "unrecorded"):
        directory = tmp_path / name
        shutil.copy(ca_pem, directory / "ca.pem")
        cert = (str(directory / "cert.pem"), str(directory / "key.pem"))
        try:
            resp = requests.get(https(tls, "/v1.41/containers/json"), cert=cert, verify=ca_pem, timeout=15)
        except requests.exceptions.SSLError:
            assert name in ("expired", "foreign")  # refused in the handshake
        else:
            assert name == "unrecorded" and resp.status_code == 401, (name, resp.status_code, resp.text)
            assert "not known to this gateway" in resp.json()["message"]
        refused = docker(tls_env(tls, str(directory)), "ps")
        assert refused.returncode != 0, (name, refused.stdout)
    # No certificate and no headers: 401 in Docker's shape, naming both ways in.
    resp = requests.get(https(tls, "/v1.41/containers/json"), verify=ca_pem, timeout=15)
    assert resp.status_code == 401 and "moorage login --tls" in resp.json()["message"]


def test_a_user_who_loses_the_project_loses_the_certificate(stack, tls, tmp_path):
    """Embedded identity: the user's entry leaves the token file; the gateway asks again within
    [gateway] cert_recheck (devstack: 5 s) and refuses the certificate."""
    if stack.env.get("MOORAGE_KEYSTONE_OPENRC"):
        pytest.skip("the embedded identity's variant (a Keystone stack removes the role in Keystone)")
    path = os.path.join(stack.dir, "identity.json")
    with open(path) as fh:
        original = fh.read()
    data = json.loads(original)
    token = "it-tls-" + os.urandom(8).hex()
    data["tokens"][token] = {
        "project_id": stack.env["MOORAGE_PROJECT_alpha"],
        "project_name": "alpha",
        "user_id": "it-tls-user-" + token[-6:],
        "user_name": "leaving-user",
        "roles": ["member"],
    }
    config = tmp_path / "config"
    config.mkdir()
    (config / "config.json").write_text(
        json.dumps(
            {"HttpHeaders": {"X-Auth-Token": token, "X-Auth-Project-Id": stack.env["MOORAGE_PROJECT_alpha"]}}
        )
    )
    try:
        with open(path, "w") as fh:
            json.dump(data, fh)
        certs = str(tmp_path / "certs")
        assert issue(stack, tls, certs, str(config))["user_name"] == "leaving-user"
        env = tls_env(tls, certs)
        assert docker(env, "ps").returncode == 0
        with open(path, "w") as fh:
            fh.write(original)
        deadline = time.monotonic() + 30
        while True:
            result = docker(env, "ps")
            if result.returncode != 0:
                break
            assert time.monotonic() < deadline, "the certificate still works 30 s after its user left"
            time.sleep(1)
        assert b"no role in its project" in result.stderr, result.stderr
    finally:
        with open(path, "w") as fh:
            fh.write(original)


@pytest.fixture(scope="session")
def dockerode():
    """dockerode from npm (node_modules in a temporary directory), or a skip saying why not."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are not installed")
    directory = tempfile.mkdtemp(prefix="moorage-dockerode-")
    result = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--prefix", directory, "dockerode@5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.skip(f"npm install dockerode failed (registry unreachable?): {result.stderr[-300:]}")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_dockerode_lists_runs_and_removes_over_tls(stack, tls, dockerode, unique):
    env = tls_env(tls, stack.env["MOORAGE_CERTS_alpha"])
    env["NODE_PATH"] = os.path.join(dockerode, "node_modules")
    env["CONTAINER_NAME"] = unique
    result = subprocess.run(
        ["node", os.path.join(HERE, "dockerode_tls.js")], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["output"] == "from-dockerode\n"
    assert report["listed"] and not report["listed_after_remove"]
    # It really was alpha's: beta's certificate never saw it, and it is gone.
    assert unique not in docker(tls_env(tls, stack.env["MOORAGE_CERTS_alpha"]), "ps", "-a").stdout.decode()
