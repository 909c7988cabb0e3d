"""Keystone's HTTP API on loopback: a request, a liveness check, the admin's token."""

from __future__ import annotations

import http.client
import json

from .common import Fail


def request(
    port: int,
    method: str,
    path: str,
    body: dict | None = None,
    headers: dict | None = None,
    timeout: float = 5,
) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise OSError(str(exc) or type(exc).__name__) from exc
    finally:
        conn.close()


def answers(port: int) -> bool:
    try:
        return request(port, "GET", "/v3", timeout=2)[0] == 200
    except OSError:
        return False


def password_auth(user: str, password: str, project: str) -> dict:
    """The body of POST /v3/auth/tokens for a project-scoped token by password (user and project
    in the default domain); devstack/identity.py and nova/identity.py send it too."""
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}},
            },
            "scope": {"project": {"name": project, "domain": {"id": "default"}}},
        }
    }


def admin_token(port: int, password: str, timeout: float = 10) -> str:
    body = password_auth("admin", password, "admin")
    status, headers, data = request(port, "POST", "/v3/auth/tokens", body, timeout=timeout)
    if status != 201:
        raise Fail(f"Keystone on 127.0.0.1:{port} refused the admin's password: {status} {data[:200]!r}")
    return headers["x-subject-token"]
