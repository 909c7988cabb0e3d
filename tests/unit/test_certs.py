"""Client certificates (gateway/tenancy/certs.py): issuing from a CSR, the store's record,
revocation, expiry, another CA's certificate, the identity backend's re-check, a request with
both a certificate and headers (over a real TLS connection), and /moorage/v1/certs."""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from falcon import testing

from gateway import store
from gateway.app import Gateway
from gateway.cli import certs as cli_certs
from gateway.cli.commands import main as moorage
from gateway.dockerapi import ROUTES
from gateway.errors import DockerError
from gateway.tenancy import EmbeddedIdentity, Identity
from gateway.tenancy.certs import ClientCA, ClientCertificates, authenticate_request, revoke

ALICE = Identity(project_id="pa", project_name="alpha", user_id="ua", user_name="alice", roles=("member",))
TOKENS = {
    "tok-a": {
        "project_id": "pa",
        "project_name": "alpha",
        "user_id": "ua",
        "user_name": "alice",
        "roles": ["member"],
    },
    "tok-b": {
        "project_id": "pb",
        "project_name": "beta",
        "user_id": "ub",
        "user_name": "bob",
        "roles": ["member"],
    },
}


@pytest.fixture
def pki(tmp_path):
    directory = tmp_path / "pki"
    assert moorage(["certs", "init-ca", str(directory), "--server-name", "127.0.0.1", "--days", "2"]) == 0
    return directory


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "identity.json"
    path.write_text(json.dumps({"tokens": TOKENS}))
    return path


@pytest.fixture
def authority(pki, token_file, tmp_path):
    store.init(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ca = ClientCA(str(pki / "client-ca.pem"), str(pki / "client-ca-key.pem"))
    return ClientCertificates(ca, EmbeddedIdentity(str(token_file)), recheck=300, days=30)


def der(pem: str) -> bytes:
    return x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)


def test_issued_certificate_names_project_and_user_and_is_recorded(authority, pki):
    key_pem, csr_pem = cli_certs.new_key_and_csr()
    issued = authority.issue(csr_pem, ALICE)
    cert = x509.load_pem_x509_certificate(issued.certificate.encode())
    ca = x509.load_pem_x509_certificate((pki / "client-ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "alpha"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:moorage:project:pa",
        "urn:moorage:user:ua",
    ]
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The key is the client's: the certificate carries the CSR's public key.
    client_key = serialization.load_pem_private_key(key_pem, password=None)
    assert cert.public_key() == client_key.public_key()
    # Default lifetime: 30 days, except that the CA (2 days here) bounds it.
    assert cert.not_valid_after_utc <= ca.not_valid_after_utc
    assert format(cert.serial_number, "x") == issued.serial
    row = store.cert(issued.serial)
    assert row is not None
    assert (row.project, row.user_id, row.user_name, row.revoked_at) == ("pa", "ua", "alice", None)


def test_lifetime_is_the_setting(authority, pki, tmp_path):
    # A CA that outlives the certificate: the configured days decide.
    longer = tmp_path / "longer"
    assert moorage(["certs", "init-ca", str(longer), "--days", "365"]) == 0
    ca = ClientCertificates(
        ClientCA(str(longer / "client-ca.pem"), str(longer / "client-ca-key.pem")),
        authority.provider,
        days=30,
    )
    issued = ca.issue(cli_certs.new_key_and_csr()[1], ALICE)
    lifetime = issued.not_after - store.utcnow()
    assert datetime.timedelta(days=29, hours=23) < lifetime <= datetime.timedelta(days=30)


def test_bad_requests_are_400(authority):
    with pytest.raises(DockerError) as exc:
        authority.issue(b"not a csr", ALICE)
    assert exc.value.status == 400
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .sign(weak, hashes.SHA256())
    )
    with pytest.raises(DockerError) as exc:
        authority.issue(csr.public_bytes(serialization.Encoding.PEM), ALICE)
    assert exc.value.status == 400 and "2048" in exc.value.message
    assert store.certs() == []


def test_identify_revoked_expired_unknown_and_foreign(authority):
    issued = authority.issue(cli_certs.new_key_and_csr()[1], ALICE)
    identity = authority.identify(der(issued.certificate))
    assert identity == ALICE
    # Revoked: refused at once, by the serial, whatever its form.
    revoke(issued.serial.upper(), "pa")
    with pytest.raises(DockerError) as exc:
        authority.identify(der(issued.certificate))
    assert (
        exc.value.status == 401
        and "revoked" in exc.value.message
        and "moorage login --tls" in exc.value.message
    )
    # Another project cannot revoke it (404, the same as no such certificate).
    other = authority.issue(cli_certs.new_key_and_csr()[1], ALICE)
    with pytest.raises(DockerError) as exc:
        revoke(other.serial, "pb")
    assert exc.value.status == 404
    assert authority.identify(der(other.certificate)) == ALICE
    # Expired by the store's record.
    store.ClientCert.update(not_after=store.utcnow() - datetime.timedelta(seconds=1)).where(
        store.ClientCert.serial == other.serial
    ).execute()
    with pytest.raises(DockerError) as exc:
        authority.identify(der(other.certificate))
    assert exc.value.status == 401 and "expired" in exc.value.message
    # Issued by this CA but not recorded (another gateway's database): refused.
    third = authority.issue(cli_certs.new_key_and_csr()[1], ALICE)
    store.ClientCert.delete().where(store.ClientCert.serial == third.serial).execute()
    with pytest.raises(DockerError) as exc:
        authority.identify(der(third.certificate))
    assert exc.value.status == 401 and "not known" in exc.value.message


def test_another_cas_certificate_is_not_an_identity(authority, tmp_path):
    assert moorage(["certs", "init-ca", str(tmp_path / "other")]) == 0
    other = ClientCA(str(tmp_path / "other" / "client-ca.pem"), str(tmp_path / "other" / "client-ca-key.pem"))
    foreign = other.issue(cli_certs.new_key_and_csr()[1], ALICE, 1)
    assert authority.identify(der(foreign.certificate)) is None


def test_a_user_who_loses_the_project_loses_the_certificate(authority, token_file):
    authority.recheck = 0  # ask the backend on every request
    issued = authority.issue(cli_certs.new_key_and_csr()[1], ALICE)
    assert authority.identify(der(issued.certificate)).roles == ("member",)
    token_file.write_text(json.dumps({"tokens": {"tok-b": TOKENS["tok-b"]}}))
    with pytest.raises(DockerError) as exc:
        authority.identify(der(issued.certificate))
    assert exc.value.status == 401 and "no role in its project" in exc.value.message


def test_membership_is_cached_for_the_recheck_interval(authority, token_file):
    issued = authority.issue(cli_certs.new_key_and_csr()[1], ALICE)
    assert authority.identify(der(issued.certificate)) == ALICE
    token_file.write_text(json.dumps({"tokens": {"tok-b": TOKENS["tok-b"]}}))
    assert authority.identify(der(issued.certificate)) == ALICE  # within cert_recheck
    authority.forget()
    with pytest.raises(DockerError):
        authority.identify(der(issued.certificate))


# -- a real TLS connection: the peer certificate is what the server side sees --------------------


def tls_connection(pki, cert_dir):
    """(server side, client side) of a TLS connection over a socket pair; the client presents
    cert_dir's certificate (None: no certificate)."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "client-ca.pem"))
    server_ctx.load_cert_chain(str(pki / "server.pem"), str(pki / "server-key.pem"))
    server_ctx.verify_mode = ssl.CERT_OPTIONAL
    client_ctx = ssl.create_default_context(cafile=str(pki / "client-ca.pem"))
    if cert_dir is not None:
        client_ctx.load_cert_chain(str(cert_dir / "cert.pem"), str(cert_dir / "key.pem"))
    a, b = socket.socketpair()
    out = {}

    def client():
        out["client"] = client_ctx.wrap_socket(b, server_hostname="127.0.0.1")

    thread = threading.Thread(target=client)
    thread.start()
    server = server_ctx.wrap_socket(a, server_side=True)
    thread.join(10)
    return server, out["client"]


def write_cert_dir(directory, authority, identity):
    key_pem, csr_pem = cli_certs.new_key_and_csr()
    issued = authority.issue(csr_pem, identity)
    directory.mkdir()
    (directory / "key.pem").write_bytes(key_pem)
    (directory / "cert.pem").write_text(issued.certificate)
    return issued


def headers(token=None, project=None):
    out = {}
    if token:
        out["X-AUTH-TOKEN"] = token
    if project:
        out["X-AUTH-PROJECT-ID"] = project
    return out


def test_certificate_and_headers_on_a_tls_connection(authority, pki, tmp_path):
    write_cert_dir(tmp_path / "alice", authority, ALICE)
    server, client = tls_connection(pki, tmp_path / "alice")
    provider = authority.provider
    try:
        # The certificate alone.
        assert authenticate_request(provider, authority, {}, server).project_id == "pa"
        # Both, agreeing.
        assert authenticate_request(provider, authority, headers("tok-a", "pa"), server).user_id == "ua"
        # Both, disagreeing: another project's token, or only another project's header.
        for sent in (headers("tok-b", "pb"), headers(None, "pb")):
            with pytest.raises(DockerError) as exc:
                authenticate_request(provider, authority, sent, server)
            assert exc.value.status == 401 and "names project alpha" in exc.value.message
        # A garbage token beside a good certificate is still refused.
        with pytest.raises(DockerError) as exc:
            authenticate_request(provider, authority, headers("nope", "pa"), server)
        assert exc.value.status == 401
    finally:
        server.close()
        client.close()
    # No certificate on a TLS connection: the headers, and a 401 that names both ways.
    for sent in (headers("tok-b", "pb"), {}):
        server, client = tls_connection(pki, None)
        try:
            if sent:
                assert authenticate_request(provider, authority, sent, server).project_id == "pb"
                continue
            with pytest.raises(DockerError) as exc:
                authenticate_request(provider, authority, sent, server)
            assert exc.value.status == 401 and "moorage login --tls" in exc.value.message
        finally:
            server.close()
            client.close()


# -- the endpoint ------------------------------------------------------------------------------


@pytest.fixture
def gateway(gateway_settings, pki, token_file):
    gateway_settings.identity.token_file = str(token_file)
    gateway_settings.gateway.tls_client_ca = str(pki / "client-ca.pem")
    gateway_settings.gateway.tls_client_ca_key = str(pki / "client-ca-key.pem")
    return Gateway(gateway_settings, ROUTES)


def test_endpoint_issues_lists_and_revokes_within_the_project(gateway, pki):
    client = testing.TestClient(gateway)
    alice, bob = (
        {"X-Auth-Token": "tok-a", "X-Auth-Project-Id": "pa"},
        {"X-Auth-Token": "tok-b", "X-Auth-Project-Id": "pb"},
    )
    csr = cli_certs.new_key_and_csr()[1].decode()
    assert client.simulate_post("/moorage/v1/certs", json={"csr": csr}).status_code == 401
    resp = client.simulate_post("/moorage/v1/certs", json={"csr": csr}, headers=alice)
    assert resp.status_code == 201, resp.text
    answer = resp.json
    assert answer["ca"] == (pki / "client-ca.pem").read_text()  # tls_server_ca defaults to the client CA
    assert (answer["project_id"], answer["user_name"]) == ("pa", "alice")
    bad = client.simulate_post("/moorage/v1/certs", json={"csr": "x"}, headers=alice)
    assert bad.status_code == 400 and "message" in bad.json
    client.simulate_post("/moorage/v1/certs", json={"csr": csr}, headers=bob)
    listed = client.simulate_get("/moorage/v1/certs", headers=alice).json
    assert [r["serial"] for r in listed] == [answer["serial"]] and listed[0]["state"] == "valid"
    assert client.simulate_delete(f"/moorage/v1/certs/{answer['serial']}", headers=bob).status_code == 404
    revoked = client.simulate_delete(f"/moorage/v1/certs/{answer['serial']}", headers=alice)
    assert revoked.status_code == 200 and revoked.json["state"] == "revoked"
    assert client.simulate_get("/moorage/v1/certs/nope", headers=alice).status_code == 404


def test_endpoint_without_a_client_ca_says_so(gateway_settings):
    client = testing.TestClient(Gateway(gateway_settings, ROUTES))
    resp = client.simulate_get(
        "/moorage/v1/certs", headers={"X-Auth-Token": "tok-a", "X-Auth-Project-Id": "pa"}
    )
    assert resp.status_code == 404 and "tls_client_ca" in resp.json["message"]


def test_ec_csr_accepted_and_operator_cli_lists_and_revokes(authority, tmp_path, capsys):
    key = ec.generate_private_key(ec.SECP384R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored")]))
        .sign(key, hashes.SHA384())
    )
    issued = authority.issue(csr.public_bytes(serialization.Encoding.PEM), ALICE)
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    capsys.readouterr()
    assert moorage(["--db", db, "certs", "list", "--format", "json"]) == 0
    assert [r["serial"] for r in json.loads(capsys.readouterr().out)] == [issued.serial]
    assert moorage(["--db", db, "certs", "revoke", issued.serial, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["state"] == "revoked"
    assert moorage(["--db", db, "certs", "revoke", "abc"]) == 1


def test_settings_take_tls_bind_as_a_string_or_a_list():
    from gateway import config

    one = config.parse({"gateway": {"tls_bind": "tcp://0.0.0.0:2376", "cert_days": 7}})
    assert one.gateway.tls_bind == ["tcp://0.0.0.0:2376"] and one.gateway.cert_days == 7.0
    assert config.parse({}).gateway.cert_days == 30.0 and config.parse({}).gateway.cert_recheck == 300.0
    with pytest.raises(config.SettingsError):
        config.parse({"gateway": {"tls_client_ca_path": "x"}})


def test_tls_listeners_are_tcp_and_never_share_a_plain_port(gateway_settings, pki, capsys):
    from gateway import server

    gw = gateway_settings.gateway
    gw.tls_cert, gw.tls_key = str(pki / "server.pem"), str(pki / "server-key.pem")
    for bind, tls_bind, says in (
        (["tcp://127.0.0.1:2375"], ["unix:///tmp/x.sock"], "expected tcp://HOST:PORT"),
        (["tcp://127.0.0.1:2376"], ["tcp://0.0.0.0:2376"], "shares its port"),
    ):
        gw.bind, gw.tls_bind = bind, tls_bind
        with pytest.raises(ValueError) as exc:
            server.run(gateway_settings, lambda: None)
        assert says in str(exc.value)
