"""HTTP to the services on loopback (Keystone, placement, neutron, nova-api)."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def http_call(method: str, url: str, body=None, headers: dict | None = None, timeout: float = 15):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.netloc, timeout=timeout)
    try:
        hdrs = {"Accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            hdrs["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        rh = {k.lower(): v for k, v in resp.getheaders()}
    except (OSError, http.client.HTTPException) as exc:
        raise OSError(f"{method} {url}: {exc or type(exc).__name__}") from exc
    finally:
        conn.close()
    try:
        doc = json.loads(raw) if raw.strip() else {}
    except ValueError:
        doc = {"raw": raw[:300].decode("utf-8", "replace")}
    return resp.status, rh, doc


# --- apt and the virtualenv --------------------------------------------------------------------


def api_answers(port: int, path: str = "/") -> bool:
    try:
        return http_call("GET", f"http://127.0.0.1:{port}{path}", timeout=3)[0] < 500
    except OSError:
        return False
