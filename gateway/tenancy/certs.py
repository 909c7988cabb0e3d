"""Client certificates as identities: the gateway's client CA issues them, and a verified peer
certificate on a TLS connection is the project and user it names, as long as the store's record
of it stands and the identity backend still gives the user a role in the project.

    issue(csr)  -> a certificate naming project and user (subject CN=user, O=project, and the
                   SAN URIs urn:moorage:project:ID and urn:moorage:user:ID), recorded in the store
    identify()  -> the Identity of a peer certificate this CA issued: refused (401) when its
                   serial is unknown, revoked or expired, or when the backend says the user lost
                   the project's role or the project is disabled (asked again every
                   [gateway] cert_recheck seconds, cached per user and project)

The key never reaches the gateway: clients send a certificate signing request. The TLS listener
(gateway/server.py) has already checked the chain against [gateway] tls_client_ca; the issuer
and signature are checked again here, so that a certificate of another CA (the all-binds
``tls_ca`` setup) is not taken for one of ours and the headers decide instead.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import threading
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway import store
from gateway.errors import DockerError
from gateway.tenancy import sockets
from gateway.tenancy.identity import Identity, IdentityProvider, authenticate
from gateway.wire import PROJECT_HEADER, SOCKET_CREDENTIAL_HEADER, TOKEN_HEADER

URN_PROJECT = "urn:moorage:project:"
URN_USER = "urn:moorage:user:"
RENEW_HINT = "run `moorage login --tls` for a new certificate and use the DOCKER_CERT_PATH it prints"
MAX_CSR_BYTES = 16 * 1024
# A peer certificate's parse and store lookups are cached this many seconds per certificate;
# a revocation is seen within this time by every worker.
ROW_TTL = 2.0
NEGATIVE_TTL = 5.0  # seconds a refused membership is remembered


def normalize_serial(text: str) -> str:
    """A serial as the store keeps it: lowercase hex without colons or leading zeros."""
    value = text.strip().lower().replace(":", "").removeprefix("0x")
    try:
        return format(int(value, 16), "x")
    except ValueError:
        raise DockerError(400, f"{text!r} is not a certificate serial (hexadecimal)") from None


def _utc(moment: datetime.datetime) -> datetime.datetime:
    """Naive UTC, as the store keeps times."""
    return moment.astimezone(datetime.UTC).replace(tzinfo=None) if moment.tzinfo else moment


@dataclass(frozen=True)
class Issued:
    serial: str
    certificate: str  # PEM
    not_after: datetime.datetime  # naive UTC


def _check_public_key(key) -> None:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise DockerError(400, f"the request's RSA key has {key.key_size} bits; use 2048 or more")
    elif not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        raise DockerError(400, "the request's key type is not accepted; use an EC (P-256) or RSA key")


def _private_key_hash(key):
    """The hash to sign with: none for Edwards keys, SHA-256 otherwise."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


class ClientCA:
    """The client CA ([gateway] tls_client_ca and tls_client_ca_key)."""

    def __init__(self, cert_path: str, key_path: str = ""):
        with open(cert_path, "rb") as fh:
            self.cert = x509.load_pem_x509_certificate(fh.read())
        self.key = None
        if key_path:
            with open(key_path, "rb") as fh:
                self.key = serialization.load_pem_private_key(fh.read(), password=None)

    def issued_here(self, cert: x509.Certificate) -> bool:
        if cert.issuer != self.cert.subject:
            return False
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, Exception):  # noqa: BLE001 - InvalidSignature and friends
            return False
        return True

    def issue(self, csr_pem: bytes, identity: Identity, days: float) -> Issued:
        """Sign the request for ``identity`` and record it; 400 for a request that is not one."""
        if self.key is None:
            raise DockerError(
                503,
                "this gateway issues no client certificates ([gateway] tls_client_ca_key is not "
                "set); ask the operator",
            )
        if len(csr_pem) > MAX_CSR_BYTES:
            raise DockerError(400, "the certificate signing request is too large")
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise DockerError(400, f"not a PEM certificate signing request: {exc}") from None
        if not csr.is_signature_valid:
            raise DockerError(400, "the certificate signing request's signature does not verify")
        public_key = csr.public_key()
        _check_public_key(public_key)
        now = datetime.datetime.now(datetime.UTC)
        not_after = now + datetime.timedelta(days=days)
        not_after = min(not_after, self.cert.not_valid_after_utc)
        serial = x509.random_serial_number()
        subject = x509.Name(
            [
                x509.NameAttribute(
                    NameOID.COMMON_NAME, (identity.user_name or identity.user_id or "user")[:64]
                ),
                x509.NameAttribute(
                    NameOID.ORGANIZATION_NAME, (identity.project_name or identity.project_id)[:64]
                ),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "moorage"),
            ]
        )
        ca_public = self.cert.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=5))  # clients' clocks drift
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.UniformResourceIdentifier(URN_PROJECT + identity.project_id),
                        x509.UniformResourceIdentifier(URN_USER + (identity.user_id or "-")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public),  # type: ignore[arg-type]
                critical=False,
            )
        )
        cert = builder.sign(self.key, _private_key_hash(self.key))  # type: ignore[arg-type]
        issued = Issued(
            serial=format(serial, "x"),
            certificate=cert.public_bytes(serialization.Encoding.PEM).decode(),
            not_after=_utc(not_after),
        )
        store.record_cert(
            issued.serial,
            identity.project_id,
            identity.project_name,
            identity.user_id,
            identity.user_name,
            issued.not_after,
        )
        return issued


@dataclass(frozen=True)
class _Membership:
    until: float
    identity: Identity | None
    reason: str = ""


class ClientCertificates:
    """What the gateway knows of its client certificates: the CA, the store's records, and the
    identity backend's current word on each user and project (cached)."""

    def __init__(
        self,
        ca: ClientCA,
        provider: IdentityProvider,
        *,
        recheck: float = 300.0,
        days: float = 30.0,
        server_ca: str = "",
    ):
        self.ca = ca
        self.server_ca = server_ca
        self.provider = provider
        self.recheck = max(0.0, recheck)
        self.days = days
        self._lock = threading.Lock()
        self._members: dict[tuple[str, str], _Membership] = {}
        self._parsed: collections.OrderedDict[bytes, tuple[float, str | None]] = collections.OrderedDict()

    @classmethod
    def from_settings(cls, settings, provider: IdentityProvider) -> ClientCertificates | None:
        gw = settings.gateway
        if not gw.tls_client_ca:
            return None
        return cls(
            ClientCA(gw.tls_client_ca, gw.tls_client_ca_key),
            provider,
            recheck=gw.cert_recheck,
            days=gw.cert_days,
            server_ca=gw.tls_server_ca or gw.tls_client_ca,
        )

    # -- the peer ---------------------------------------------------------------------------
    def _serial_of(self, der: bytes) -> str | None:
        """The serial of a certificate this CA issued, or None for another CA's."""
        key = hashlib.sha256(der).digest()
        now = time.monotonic()
        with self._lock:
            hit = self._parsed.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        try:
            cert = x509.load_der_x509_certificate(der)
            serial = format(cert.serial_number, "x") if self.ca.issued_here(cert) else None
        except ValueError:
            serial = None
        with self._lock:
            self._parsed[key] = (now + 3600, serial)
            while len(self._parsed) > 10000:
                self._parsed.popitem(last=False)
        return serial

    def identify(self, der: bytes) -> Identity | None:
        """The Identity a peer certificate stands for; None if this CA did not issue it;
        DockerError 401 if it did but it no longer counts (503: the backend cannot say)."""
        serial = self._serial_of(der)
        if serial is None:
            return None
        row = store.cert(serial)
        if row is None:
            raise DockerError(
                401, f"authentication failed: certificate {serial} is not known to this gateway; {RENEW_HINT}"
            )
        if row.revoked_at is not None:
            raise DockerError(
                401,
                f"authentication failed: certificate {serial} was revoked at "
                f"{row.revoked_at:%Y-%m-%d %H:%M:%S} UTC; {RENEW_HINT}",
            )
        if row.not_after <= store.utcnow():
            raise DockerError(401, f"authentication failed: certificate {serial} expired; {RENEW_HINT}")
        return self.member(row.user_id, row.project, serial)

    def member(self, user_id: str, project_id: str, serial: str = "") -> Identity:
        """The backend's current word on the user in the project, cached for ``recheck`` s."""
        key = (user_id, project_id)
        now = time.monotonic()
        with self._lock:
            entry = self._members.get(key)
        if entry is None or entry.until <= now:
            try:
                identity = self.provider.membership(user_id, project_id)
                entry = _Membership(until=now + self.recheck, identity=identity)
            except DockerError as exc:
                if exc.status != 401:
                    raise
                entry = _Membership(
                    until=now + min(self.recheck, NEGATIVE_TTL), identity=None, reason=exc.message
                )
            with self._lock:
                self._members[key] = entry
                if len(self._members) > 10000:
                    self._members.pop(next(iter(self._members)))
        if entry.identity is None:
            what = f"certificate {serial}" if serial else "the certificate"
            raise DockerError(
                401, f"authentication failed: {what} no longer counts: {entry.reason}; {RENEW_HINT}"
            )
        return entry.identity

    def forget(self) -> None:
        """Drop every cached membership (tests; an operator's hook)."""
        with self._lock:
            self._members.clear()

    # -- the store, for the endpoint and the CLI ---------------------------------------------
    def server_ca_pem(self) -> str:
        """What clients verify the gateway's TLS listener with (their ca.pem)."""
        if not self.server_ca:
            return ""
        with open(self.server_ca) as fh:
            return fh.read()

    def issue(self, csr_pem: bytes, identity: Identity) -> Issued:
        return self.ca.issue(csr_pem, identity, self.days)


def peer_certificate(connection) -> bytes | None:
    """The verified certificate the client presented on ``connection`` (DER), if any."""
    getpeercert = getattr(connection, "getpeercert", None)
    if getpeercert is None:
        return None
    try:
        return getpeercert(binary_form=True) or None
    except (ValueError, OSError):  # not (or no longer) a TLS connection
        return None


def authenticate_request(
    provider: IdentityProvider,
    certificates: ClientCertificates | None,
    headers: dict[str, str],
    connection=None,
) -> Identity:
    """Who sends this request: the client certificate of its TLS connection (one this gateway
    issued), else the headers (gateway/tenancy/identity.py authenticate). A request that
    carries both must name the same project in both, or it is refused (401). A request from a
    container's tenant socket carries its agent's credential for it (gateway/tenancy/sockets.py),
    which alone decides: the agent drops any other the container sent."""
    socket_credential = headers.get(SOCKET_CREDENTIAL_HEADER.upper(), "")
    if socket_credential:
        return sockets.identify(socket_credential)
    der = peer_certificate(connection) if certificates is not None else None
    identity = certificates.identify(der) if der and certificates is not None else None
    if identity is None:
        try:
            return authenticate(provider, headers, connection)
        except DockerError as exc:
            if certificates is None or exc.status != 401 or not hasattr(connection, "getpeercert"):
                raise
            raise DockerError(
                401,
                exc.message
                + "; or, on this TLS address, present a client certificate (`moorage login --tls`)",
            ) from None
    token = headers.get(TOKEN_HEADER.upper(), "").strip()
    project = headers.get(PROJECT_HEADER.upper(), "").strip()
    if project and project != identity.project_id:
        raise DockerError(
            401,
            f"authentication failed: the client certificate names project {identity.project_name or '?'} "
            f"({identity.project_id}) but {PROJECT_HEADER} names {project}; send one identity: unset "
            "DOCKER_CONFIG (or remove its HttpHeaders), or use the certificate of that project",
        )
    if token:
        # Both credentials: the token must be good, and for the same project.
        return authenticate(provider, {**headers, PROJECT_HEADER.upper(): identity.project_id}, connection)
    return identity


def certificate_rows(project: str | None = None) -> list[dict]:
    """The store's certificates as the endpoint and `moorage certs list` show them."""
    now = store.utcnow()
    rows = []
    for row in store.certs(project):
        state = "revoked" if row.revoked_at else ("expired" if row.not_after <= now else "valid")
        rows.append(
            {
                "serial": row.serial,
                "project_id": row.project,
                "project_name": row.project_name,
                "user_id": row.user_id,
                "user_name": row.user_name,
                "not_after": row.not_after.isoformat(timespec="seconds") + "Z",
                "created_at": row.created_at.isoformat(timespec="seconds") + "Z",
                "revoked_at": row.revoked_at.isoformat(timespec="seconds") + "Z" if row.revoked_at else None,
                "state": state,
            }
        )
    return rows


def revoke(serial: str, project: str | None = None) -> dict:
    """Revoke a certificate (of ``project``, when given); 404 when there is none such."""
    serial = normalize_serial(serial)
    row = store.revoke_cert(serial, project)
    if row is None:
        raise DockerError(404, f"no certificate {serial} in this project; `moorage certs list` shows them")
    return next(r for r in certificate_rows(row.project) if r["serial"] == serial)
