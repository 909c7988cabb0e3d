"""The stack's TLS address: a client CA and a server certificate (DIR/tls, made by `moorage certs
init-ca`), the gateway's [gateway] tls_* settings, and a client certificate per tenant
(DIR/tenants/T/certs, issued by the gateway to the tenant's token through `moorage login --tls`)."""

from __future__ import annotations

import datetime
import http.client
import json
import os
import ssl

from .common import TENANTS, Fail, run, say
from .daemons import moorage_argv, moorage_env
from .state import Stack

CERT_RECHECK = (
    5  # seconds the gateway trusts a certificate's user and project: revocations in Keystone bite quickly
)
RENEW_BEFORE = datetime.timedelta(days=7)  # `up` re-issues a tenant certificate that lives less than this


def ca_name(directory: str) -> str:
    """The stack's client CA's common name: its directory, cut from the left to X.509's 64
    characters (a long TMPDIR made init-ca refuse it)."""
    name = f"Moorage devstack {directory}"
    return name if len(name) <= 64 else "Moorage devstack ..." + directory[-(64 - 20) :]


def tls_ports(st: Stack) -> list[int]:
    return list(st.state.get("tls_ports") or [])


def tls_host(st: Stack) -> str:
    return f"tcp://127.0.0.1:{tls_ports(st)[0]}" if tls_ports(st) else ""


def tls_binds(st: Stack, i: int) -> list[str]:
    """Replica i's TLS listeners (1-based)."""
    port = tls_ports(st)[i - 1]
    return [f"tcp://127.0.0.1:{port}", f"tcp://{st.gw_ip}:{port}"]


def ensure_pki(st: Stack) -> None:
    """DIR/tls: the client CA and the server certificate for 127.0.0.1, localhost and the stack's
    gateway address (kept across `up`s: certificates issued before stay good)."""
    argv = [*moorage_argv(), "certs", "init-ca", st.path("tls"), "--ca-name", ca_name(st.dir)]
    for name in ("127.0.0.1", "localhost", st.gw_ip):
        argv += ["--server-name", name]
    proc = run(argv, timeout=60, check=False, env=moorage_env())
    if proc.returncode != 0:
        raise Fail(
            "`moorage certs init-ca` failed: "
            + (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()[-300:]
        )


def gateway_config(st: Stack) -> list[str]:
    """[gateway] lines: replica 1's TLS listeners and the stack's CA."""
    q = json.dumps
    return [
        f"tls_bind = [{', '.join(q(b) for b in tls_binds(st, 1))}]",
        f"tls_cert = {q(st.path('tls', 'server.pem'))}",
        f"tls_key = {q(st.path('tls', 'server-key.pem'))}",
        f"tls_client_ca = {q(st.path('tls', 'client-ca.pem'))}",
        f"tls_client_ca_key = {q(st.path('tls', 'client-ca-key.pem'))}",
        f"cert_recheck = {CERT_RECHECK}",
    ]


def _still_good(cert_dir: str, project_id: str) -> bool:
    try:
        with open(os.path.join(cert_dir, "moorage-cert.json")) as fh:
            meta = json.load(fh)
        not_after = datetime.datetime.fromisoformat(meta["not_after"].replace("Z", "+00:00"))
    except (OSError, ValueError, KeyError, AttributeError):
        return False
    if meta.get("project_id") != project_id:
        return False
    if not all(os.path.exists(os.path.join(cert_dir, f)) for f in ("ca.pem", "cert.pem", "key.pem")):
        return False
    return not_after - datetime.datetime.now(datetime.UTC) > RENEW_BEFORE


def _accepted(st: Stack, cert_dir: str, serial: str) -> bool:
    """The gateway takes the certificate (its database may be newer than the file: `down
    --purge` keeps DIR/tenants): GET /moorage/v1/certs with it lists it as valid."""
    try:
        context = ssl.create_default_context(cafile=os.path.join(cert_dir, "ca.pem"))
        context.load_cert_chain(os.path.join(cert_dir, "cert.pem"), os.path.join(cert_dir, "key.pem"))
        conn = http.client.HTTPSConnection("127.0.0.1", tls_ports(st)[0], context=context, timeout=15)
        try:
            conn.request("GET", "/moorage/v1/certs")
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        rows = json.loads(body) if resp.status == 200 else []
    except (OSError, ValueError, http.client.HTTPException):
        return False
    return any(isinstance(r, dict) and r.get("serial") == serial and r.get("state") == "valid" for r in rows)


def _serial(cert_dir: str) -> str:
    try:
        with open(os.path.join(cert_dir, "moorage-cert.json")) as fh:
            return str(json.load(fh).get("serial") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def tenant_certs(st: Stack, port: int) -> None:
    """DIR/tenants/T/certs for each tenant, unless the one there lives another RENEW_BEFORE: issued
    by the gateway (plain address, port) to the token in DIR/tenants/T/config.json."""
    issued = []
    for name in TENANTS:
        tdir = st.path("tenants", name)
        cert_dir = os.path.join(tdir, "certs")
        if _still_good(cert_dir, st.state["tenants"][name]) and _accepted(st, cert_dir, _serial(cert_dir)):
            continue
        argv = [
            *moorage_argv(),
            "login",
            "--tls",
            "--token-from-config",
            "--config-dir",
            tdir,
            "--cert-dir",
            cert_dir,
            "--host",
            f"tcp://127.0.0.1:{port}",
            "--tls-host",
            tls_host(st),
        ]
        proc = run(argv, timeout=60, check=False, env=moorage_env())
        if proc.returncode != 0:
            raise Fail(
                f"`moorage login --tls` for {name} failed: "
                f"{(proc.stderr or proc.stdout).decode('utf-8', 'replace').strip()[-300:]}"
            )
        issued.append(name)
    if issued:
        say(f"client certificates for {', '.join(issued)} in DIR/tenants/T/certs (TLS at {tls_host(st)})")
