"""How the gateway is served: TLS with client certificates, and a relay tier."""

import json
import os
import shutil
import socket
import subprocess
import time

import pytest
import requests


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(stack, tmp_path, *args):
    """Another gateway process (same config and store as the stack's), foreground, until the test ends."""
    moorage = stack.env["MOORAGE_ADMIN"].split()
    log = open(tmp_path / f"{args[0]}.log", "wb")  # noqa: SIM115 (the child writes to it after this returns)
    proc = subprocess.Popen([*moorage, *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc


def wait_port(port, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"nothing listening on {port}")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def certs(tmp_path):
    d = tmp_path / "pki"
    d.mkdir()
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=moorage-test-ca",
        cwd=d,
    )
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{who}-key.pem",
            "-out",
            f"{who}.csr",
            "-subj",
            f"/CN={who}",
            cwd=d,
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{who}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{who}.pem",
            "-days",
            "2",
            "-extfile",
            f"{who}.ext",
            cwd=d,
        )
    return d


def test_tls_with_client_certificates_as_docker_tls_verify_expects(stack, tmp_path, certs):
    port = free_port()
    proc = start(
        stack,
        tmp_path,
        "serve",
        "--bind",
        f"tcp://127.0.0.1:{port}",
        "--workers",
        "1",
        "--tls-cert",
        str(certs / "server.pem"),
        "--tls-key",
        str(certs / "server-key.pem"),
        "--tls-ca",
        str(certs / "ca.pem"),
        "--log-file",
        str(tmp_path / "tls-gateway.log"),
    )
    try:
        wait_port(port, proc)
        client = tmp_path / "client-config"
        client.mkdir()
        shutil.copy(certs / "ca.pem", client / "ca.pem")
        shutil.copy(certs / "client.pem", client / "cert.pem")
        shutil.copy(certs / "client-key.pem", client / "key.pem")
        shutil.copy(os.path.join(stack.env["MOORAGE_CONFIG_alpha"], "config.json"), client / "config.json")
        result = stack.docker(
            "run",
            "--rm",
            "-i",
            "busybox",
            "sh",
            "-c",
            "cat; echo over-tls",
            input=b"in\n",
            env={
                "DOCKER_HOST": f"tcp://127.0.0.1:{port}",
                "DOCKER_TLS_VERIFY": "1",
                "DOCKER_CERT_PATH": str(client),
                "DOCKER_CONFIG": str(client),
            },
        )
        assert (result.returncode, result.stdout) == (0, b"in\nover-tls\n"), result.stderr
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(f"https://127.0.0.1:{port}/_ping", verify=str(certs / "ca.pem"), timeout=10)
    finally:
        stop(proc)


def test_relay_tier_serves_the_streaming_routes_only(stack, tmp_path, unique):
    port = free_port()
    proc = start(
        stack,
        tmp_path,
        "relay",
        "--bind",
        f"tcp://127.0.0.1:{port}",
        "--workers",
        "1",
        "--log-file",
        str(tmp_path / "relay.log"),
    )
    try:
        wait_port(port, proc)
        assert stack.docker("run", "--name", unique, "busybox", "echo", "through-the-relay").returncode == 0
        headers = stack.headers("alpha")
        logs = requests.get(
            f"http://127.0.0.1:{port}/v1.41/containers/{unique}/logs?stdout=1", headers=headers, timeout=10
        )
        assert logs.status_code == 200
        assert logs.content == b"\x01\x00\x00\x00\x00\x00\x00\x12through-the-relay\n"
        listed = requests.get(f"http://127.0.0.1:{port}/v1.41/containers/json", headers=headers, timeout=10)
        assert listed.status_code == 404 and listed.json() == {"message": "page not found"}
        unauthenticated = requests.get(
            f"http://127.0.0.1:{port}/v1.41/containers/{unique}/logs?stdout=1", timeout=10
        )
        assert unauthenticated.status_code == 401
    finally:
        stop(proc)
        stack.docker("rm", "-f", unique)


def test_moorage_db_upgrade_is_idempotent(stack):
    result = stack.admin("db", "upgrade")
    assert result.returncode == 0 and "up to date" in result.stdout
    json.loads(stack.admin("instances", "list", "--format", "json").stdout)


def test_unix_socket_bind_serves_the_api_with_the_same_authentication(stack, unique):
    """A `unix://` bind (devstack binds replica 1 on DIR/gateway.sock) is a Docker endpoint like
    the TCP one: the CLI's HttpHeaders authenticate it, a request without them is a 401, and the
    CLI detaches on its keys there (over plain TCP it does not, against dockerd too:
    docs/divergences.md#detach-keys-tcp)."""
    import requests_unixsocket

    socket_url = stack.env.get("MOORAGE_GATEWAY_SOCKET")
    assert socket_url, "devstack exports MOORAGE_GATEWAY_SOCKET"
    over_unix = {"DOCKER_HOST": socket_url}
    made = stack.docker("run", "-d", "--name", unique, "busybox", "sleep", "60", env=over_unix)
    try:
        assert made.returncode == 0, made.stderr
        listed = stack.docker("ps", "--filter", f"name={unique}", "--format", "{{.Names}}", env=over_unix)
        assert listed.stdout.decode().split() == [unique]
        # the same container through the TCP bind: one gateway, two listeners
        assert stack.docker("inspect", "-f", "{{.Name}}", unique).stdout.decode().strip() == f"/{unique}"
        sock = socket_url[len("unix://") :].replace("/", "%2F")
        with requests_unixsocket.Session() as session:
            bare = session.get(f"http+unix://{sock}/v1.41/containers/json", timeout=10)
        assert bare.status_code == 401 and "X-Auth-Token" in bare.json()["message"]
    finally:
        stack.docker("rm", "-f", unique)
