"""The client-certificate API, under gateway/wire.py CERTS_PATH on every listener. Not part of
the Docker API: the caller is authenticated as for Docker requests (headers, or a client
certificate), and acts on its own project's certificates only.

    POST   /moorage/v1/certs           issue: {"csr": PEM} -> the certificate, its serial, ca.pem
                                       (Keystone credentials required: a certificate does not
                                       renew itself)
    GET    /moorage/v1/certs           the project's certificates
    DELETE /moorage/v1/certs/{serial}  revoke one of them

`moorage login --tls` and `moorage certs list|revoke --host` (gateway/cli/certs.py) call it.
"""

from __future__ import annotations

import json

import falcon

from gateway.errors import DockerError
from gateway.routing import Route
from gateway.tenancy import Identity, certs
from gateway.wire import TOKEN_HEADER

BODY_LIMIT = 64 * 1024


def _enabled(gw) -> certs.ClientCertificates:
    if gw.certs is None:
        raise DockerError(
            404,
            "this gateway has no client certificates ([gateway] tls_client_ca is not set); "
            "authenticate with `moorage login` and its headers instead",
        )
    return gw.certs


def issue(req: falcon.Request, resp: falcon.Response, gw, identity: Identity, params: dict) -> None:
    authority = _enabled(gw)
    if not (req.get_header(TOKEN_HEADER) or "").strip():
        raise DockerError(
            401,
            "issuing a certificate needs Keystone credentials (X-Auth-Token and X-Auth-Project-Id), "
            "not a certificate: run `moorage login --tls` with your OpenStack credentials",
        )
    length = req.content_length or 0
    if length > BODY_LIMIT:
        raise DockerError(413, "request body too large")
    try:
        body = json.loads(req.bounded_stream.read(BODY_LIMIT + 1) or b"{}")
    except ValueError as exc:
        raise DockerError(400, f"invalid JSON: {exc}") from exc
    csr = body.get("csr") if isinstance(body, dict) else None
    if not isinstance(csr, str) or not csr.strip():
        raise DockerError(400, 'expected {"csr": "<PEM certificate signing request>"}')
    issued = authority.issue(csr.encode(), identity)
    resp.status = 201
    resp.content_type = "application/json"
    resp.media = {
        "serial": issued.serial,
        "certificate": issued.certificate,
        "ca": authority.server_ca_pem(),
        "not_after": issued.not_after.isoformat(timespec="seconds") + "Z",
        "project_id": identity.project_id,
        "project_name": identity.project_name,
        "user_id": identity.user_id,
        "user_name": identity.user_name,
    }


def listing(req: falcon.Request, resp: falcon.Response, gw, identity: Identity, params: dict) -> None:
    _enabled(gw)
    resp.content_type = "application/json"
    resp.media = certs.certificate_rows(identity.project_id)


def revoke(req: falcon.Request, resp: falcon.Response, gw, identity: Identity, params: dict) -> None:
    _enabled(gw)
    resp.content_type = "application/json"
    resp.media = certs.revoke(params["serial"], identity.project_id)


ROUTES = [
    Route("POST", "", "CertIssue", issue),
    Route("GET", "", "CertList", listing),
    Route("DELETE", "/{serial}", "CertRevoke", revoke),
]
