"""Client certificates from the command line: `moorage login --tls`, `moorage certs`.

eval "$(moorage login --tls --host tcp://gw:2375 --tls-host tcp://gw:2376)"
    Keystone credentials as for `moorage login`; a new key (it never leaves this machine), a
    certificate for it from the gateway, and DIR (--cert-dir, default
    ~/.moorage/docker-certs-PROJECT) holding ca.pem, cert.pem and key.pem; prints
    DOCKER_HOST, DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH.
moorage certs list|revoke SERIAL --host URL
    a user's own project's certificates, through the gateway (authenticated by
    DOCKER_CERT_PATH's certificate and/or DOCKER_CONFIG's headers)
moorage certs list|revoke SERIAL [--project ID]
    the operator's: every project's, from the store (settings file as for `moorage quota`)
moorage certs init-ca DIR --server-name HOST...
    the operator's: a client CA and a server certificate it signs, for [gateway] tls_*
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import re
import shlex
import sys

from gateway.wire import CERTS_PATH, PROJECT_HEADER, TOKEN_HEADER

TIMEOUT = 30


class CertError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _say(msg: str) -> None:
    print(f"moorage: {msg}", file=sys.stderr, flush=True)


def _write(path: str, data: bytes, mode: int = 0o600) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _http_url(host: str) -> str:
    """A DOCKER_HOST-style address as an HTTP(S) base URL."""
    if host.startswith("tcp://"):
        return "http://" + host[len("tcp://") :]
    if host.startswith(("http://", "https://")):
        return host.rstrip("/")
    raise CertError(f"--host {host!r}: expected tcp://HOST:PORT, http(s)://HOST:PORT", 2)


def _headers_from(config_dir: str) -> dict[str, str]:
    try:
        with open(os.path.join(config_dir, "config.json")) as fh:
            headers = json.load(fh).get("HttpHeaders") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    wanted = (TOKEN_HEADER.lower(), PROJECT_HEADER.lower())
    return {k: v for k, v in headers.items() if k.lower() in wanted and v}


def _answer(resp) -> object:
    try:
        body = resp.json()
    except ValueError:
        body = {"message": resp.text.strip()[:300]}
    if resp.status_code >= 400:
        message = body.get("message") if isinstance(body, dict) else body
        raise CertError(f"the gateway answered {resp.status_code}: {message}")
    return body


# --- moorage login --tls -----------------------------------------------------------------------


def new_key_and_csr() -> tuple[bytes, bytes]:
    """(key PEM, CSR PEM): an EC P-256 key, which every Docker client's TLS stack takes."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "moorage-client")]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def request_certificate(host: str, headers: dict[str, str], cert_dir: str, cacert: str = "") -> dict:
    """Ask the gateway at ``host`` for a certificate (the headers authenticate) and write
    ``cert_dir`` (ca.pem, cert.pem, key.pem); the gateway's answer."""
    import requests

    if not headers.get(TOKEN_HEADER) or not headers.get(PROJECT_HEADER):
        raise CertError("no X-Auth-Token and X-Auth-Project-Id to authenticate with", 2)
    key_pem, csr_pem = new_key_and_csr()
    try:
        resp = requests.post(
            _http_url(host) + CERTS_PATH,
            json={"csr": csr_pem.decode()},
            headers=headers,
            timeout=TIMEOUT,
            verify=cacert or True,
        )
    except requests.RequestException as exc:
        raise CertError(f"cannot reach the gateway at {host}: {exc}") from exc
    answer = _answer(resp)
    if not isinstance(answer, dict) or not answer.get("certificate"):
        raise CertError("the gateway's answer holds no certificate")
    os.makedirs(cert_dir, mode=0o700, exist_ok=True)
    os.chmod(cert_dir, 0o700)
    _write(os.path.join(cert_dir, "key.pem"), key_pem)
    _write(os.path.join(cert_dir, "cert.pem"), answer["certificate"].encode(), 0o644)
    if answer.get("ca"):
        _write(os.path.join(cert_dir, "ca.pem"), answer["ca"].encode(), 0o644)
    meta = {
        k: answer.get(k)
        for k in ("serial", "not_after", "project_id", "project_name", "user_id", "user_name")
    }
    meta["note"] = "written by `moorage login --tls`; revoke with `moorage certs revoke SERIAL`"
    _write(os.path.join(cert_dir, "moorage-cert.json"), (json.dumps(meta, indent=2) + "\n").encode())
    return answer


def default_cert_dir(project: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", project) or "project"
    return os.path.join(os.path.expanduser("~"), ".moorage", f"docker-certs-{safe}")


def login_tls(args, keystone_login, login_error: type[Exception]) -> int:
    """`moorage login --tls`: the token (a fresh login through gateway/cli/login.py's
    ``keystone_login``, or the one in --config-dir with --token-from-config), then the
    certificate; prints the export lines."""
    if not args.host:
        _say("login --tls needs --host (the gateway's address, as for `moorage login`) or $MOORAGE_HOST")
        return 2
    try:
        if args.token_from_config:
            config_dir = args.config_dir or os.environ.get("DOCKER_CONFIG", "")
            if not config_dir:
                raise CertError("--token-from-config needs --config-dir DIR (or $DOCKER_CONFIG)", 2)
        else:
            config_dir, _ = keystone_login(args)
        headers = _headers_from(os.path.expanduser(config_dir))
        if not headers:
            raise CertError(f"{config_dir}/config.json holds no X-Auth-Token and X-Auth-Project-Id", 2)
        project = headers.get(PROJECT_HEADER, "")
        # Named as `moorage login` names the config dir: by the project's name when it wrote one.
        try:
            with open(os.path.join(os.path.expanduser(config_dir), "moorage-login.json")) as fh:
                label = json.load(fh).get("project_name") or project
        except (OSError, ValueError, AttributeError):
            label = project
        cert_dir = os.path.abspath(os.path.expanduser(args.cert_dir or default_cert_dir(label)))
        answer = request_certificate(args.host, headers, cert_dir, args.cacert or "")
    except (CertError, login_error) as exc:
        _say(str(exc))
        return getattr(exc, "code", 1)
    assert isinstance(answer, dict)
    _say(
        f"certificate {answer.get('serial')} for project {answer.get('project_name') or project} "
        f"({answer.get('project_id')}) as {answer.get('user_name') or answer.get('user_id')} in {cert_dir}, "
        f"valid until {answer.get('not_after')}; the key never left this machine"
    )
    tls_host = args.tls_host or os.environ.get("MOORAGE_TLS_HOST", "")
    out = []
    if tls_host:
        out.append(f"export DOCKER_HOST={shlex.quote(tls_host)}")
    else:
        _say("no --tls-host (or $MOORAGE_TLS_HOST): set DOCKER_HOST to the gateway's TLS address yourself")
    out += ["export DOCKER_TLS_VERIFY=1", f"export DOCKER_CERT_PATH={shlex.quote(cert_dir)}"]
    sys.stdout.write("".join(line + "\n" for line in out))
    sys.stdout.flush()
    return 0


def add_login_arguments(p) -> None:
    """`moorage login`'s TLS options (gateway/cli/login.py)."""
    p.add_argument(
        "--tls",
        action="store_true",
        help="also get a client certificate for the project and print DOCKER_HOST, DOCKER_TLS_VERIFY and "
        "DOCKER_CERT_PATH for the gateway's TLS address (clients that send no headers)",
    )
    p.add_argument(
        "--tls-host",
        default=os.environ.get("MOORAGE_TLS_HOST") or None,
        metavar="URL",
        help="--tls: the gateway's TLS address to print as DOCKER_HOST (default: $MOORAGE_TLS_HOST)",
    )
    p.add_argument(
        "--cert-dir",
        metavar="DIR",
        help="--tls: where to write the certificate (default ~/.moorage/docker-certs-PROJECT)",
    )
    p.add_argument("--cacert", metavar="FILE", help="--tls with an https:// --host: the CA to verify it with")
    p.add_argument(
        "--token-from-config",
        action="store_true",
        help="--tls: authenticate with the token already in --config-dir (or $DOCKER_CONFIG) instead of "
        "logging in to Keystone",
    )


# --- moorage certs -----------------------------------------------------------------------------


def client_session(host: str, path: str = CERTS_PATH):
    """A requests session to the gateway as the user of this shell: DOCKER_CERT_PATH's
    certificate when DOCKER_TLS_VERIFY is set (or the URL is https), DOCKER_CONFIG's headers.
    Returns (session, the URL of ``path``, what to verify the server with)."""
    import requests

    session = requests.Session()
    url = _http_url(host)
    cert_path = os.environ.get("DOCKER_CERT_PATH", "")
    if cert_path and (os.environ.get("DOCKER_TLS_VERIFY") or url.startswith("https://")):
        url = "https://" + url.split("://", 1)[1]
        session.cert = (os.path.join(cert_path, "cert.pem"), os.path.join(cert_path, "key.pem"))
        session.verify = os.path.join(cert_path, "ca.pem")
    session.headers.update(_headers_from(os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")))
    return session, url + path, session.verify


def through_gateway(host: str, path: str, calls) -> tuple[int, object]:
    """``calls(session, url, verify)`` against the gateway at ``host``: (0, its result), or
    (the exit status, None) with what went wrong said. ``verify`` goes on each call: requests
    prefers $REQUESTS_CA_BUNDLE to a session's own."""
    import requests

    session, url, verify = client_session(host, path)
    try:
        return 0, calls(session, url, verify)
    except requests.RequestException as exc:
        _say(f"cannot reach the gateway at {host}: {exc}")
        return 1, None
    except CertError as exc:
        _say(str(exc))
        return exc.code, None


def _print(rows: list[dict], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(rows, indent=2))
        return
    columns = ["serial", "state", "project_name", "user_name", "not_after", "revoked_at"]
    shown = [{c: ("" if r.get(c) is None else str(r.get(c))) for c in columns} for r in rows]
    widths = {c: max([len(c)] + [len(r[c]) for r in shown]) for c in columns}
    print("   ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in shown:
        print("   ".join(row[c].ljust(widths[c]) for c in columns).rstrip())


def cmd_certs(args, settings_of) -> int:
    if args.action == "init-ca":
        return _init_ca(args)
    if args.action == "revoke" and not args.serial:
        _say("certs revoke needs a SERIAL (`moorage certs list` shows them)")
        return 2
    if args.host:  # the user's: through the gateway

        def calls(session, url, verify):
            if args.action == "list":
                return _answer(session.get(url, timeout=TIMEOUT, verify=verify))
            return [_answer(session.delete(f"{url}/{args.serial}", timeout=TIMEOUT, verify=verify))]

        code, rows = through_gateway(args.host, CERTS_PATH, calls)
        if code == 0:
            _print(rows if isinstance(rows, list) else [], args.format)
        return code
    from gateway import store
    from gateway.errors import DockerError
    from gateway.tenancy import certs

    store.init(settings_of(args).gateway.database)
    if args.action == "list":
        _print(certs.certificate_rows(args.project), args.format)
        return 0
    try:
        row = certs.revoke(args.serial, args.project)
    except DockerError as exc:
        _say(exc.message)
        return 1
    _print([row], args.format)
    return 0


def _init_ca(args) -> int:
    """A client CA and a server certificate it signs (EC P-256), unless they exist already."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not args.serial:
        _say("certs init-ca needs a DIR")
        return 2
    if not 1 <= len(args.ca_name) <= 64:
        # X.509's upper bound on a common name (RFC 5280 ub-common-name)
        _say(f"certs init-ca: --ca-name takes 1 to 64 characters, not {len(args.ca_name)}; use a shorter one")
        return 2
    directory = os.path.abspath(args.serial)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    ca_cert, ca_key = os.path.join(directory, "client-ca.pem"), os.path.join(directory, "client-ca-key.pem")
    now = datetime.datetime.now(datetime.UTC)
    pem = serialization.Encoding.PEM
    private = (pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    if not (os.path.exists(ca_cert) and os.path.exists(ca_key)):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, args.ca_name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=args.days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write(ca_key, key.private_bytes(*private))
        _write(ca_cert, cert.public_bytes(pem), 0o644)
        _say(f"client CA written to {ca_cert} (key {ca_key})")
    server_cert, server_key = os.path.join(directory, "server.pem"), os.path.join(directory, "server-key.pem")
    if args.server_name and not os.path.exists(server_cert):
        with open(ca_cert, "rb") as fh:
            issuer = x509.load_pem_x509_certificate(fh.read())
        with open(ca_key, "rb") as fh:
            issuer_key = serialization.load_pem_private_key(fh.read(), password=None)
        names: list[x509.GeneralName] = []
        for value in args.server_name:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(value)))
            except ValueError:
                names.append(x509.DNSName(value))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, args.server_name[0])]))
            .issuer_name(issuer.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(min(now + datetime.timedelta(days=args.days), issuer.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        _write(server_key, key.private_bytes(*private))
        _write(server_cert, cert.public_bytes(pem), 0o644)
        _say(f"server certificate for {', '.join(args.server_name)} written to {server_cert}")
    print(
        "\n".join(
            [
                f'tls_client_ca = "{ca_cert}"',
                f'tls_client_ca_key = "{ca_key}"',
                *([f'tls_cert = "{server_cert}"', f'tls_key = "{server_key}"'] if args.server_name else []),
            ]
        )
    )
    return 0


def add_parser(subparsers, settings_of) -> None:
    p = subparsers.add_parser(
        "certs",
        help="client certificates: list, revoke (yours with --host, else every project's), init-ca",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["list", "revoke", "init-ca"])
    p.add_argument(
        "serial", nargs="?", metavar="SERIAL|DIR", help="revoke: the serial; init-ca: the directory"
    )
    p.add_argument(
        "--host", metavar="URL", help='through the gateway at URL, as a user (e.g. "$DOCKER_HOST")'
    )
    p.add_argument("--project", metavar="PROJECT_ID", help="operator: only this project's")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument(
        "--server-name", action="append", metavar="HOST", help="init-ca: the server's IP or DNS name"
    )
    p.add_argument("--ca-name", default="Moorage client CA", help="init-ca: the CA's common name")
    p.add_argument(
        "--days", type=float, default=3650, help="init-ca: lifetime of the CA and server certificate"
    )
    p.set_defaults(func=lambda args: cmd_certs(args, settings_of))
