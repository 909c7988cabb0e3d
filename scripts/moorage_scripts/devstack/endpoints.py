"""HTTP to a daemon or a gateway (tcp:// or unix://), with a timeout on every call."""

from __future__ import annotations

import http.client
import socket
import urllib.parse


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def http_request(
    endpoint: str, method: str, path: str, body=None, headers: dict | None = None, timeout: float = 5
) -> tuple[int, bytes]:
    """One request to tcp://H:P, http://H:P or unix:///PATH; raises OSError when unreachable."""
    if endpoint.startswith("unix://"):
        conn: http.client.HTTPConnection = UnixHTTPConnection(endpoint[len("unix://") :], timeout)
    else:
        netloc = urllib.parse.urlsplit(endpoint.replace("tcp://", "http://", 1)).netloc
        conn = http.client.HTTPConnection(netloc, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except http.client.HTTPException as exc:
        raise OSError(str(exc)) from exc
    finally:
        conn.close()


def answers(endpoint: str, path: str = "/_ping", timeout: float = 2) -> bool:
    try:
        return http_request(endpoint, "GET", path, timeout=timeout)[0] == 200
    except OSError:
        return False


def tcp_open(host: str, port: int, timeout: float = 1) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
