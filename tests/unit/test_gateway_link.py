"""agent/registration.py GatewayLink: the heartbeats' kept connection to the gateway."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from agent.registration import GatewayLink


class Gateway:
    """A keep-alive HTTP/1.1 server that answers every request with 200 and a JSON body and
    counts its connections; ``drop_idle()`` closes the connections it keeps, as a gateway's
    idle limit or restart does."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        self.requests: list[tuple[str, str, dict]] = []
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                length = int(headers.get("content-length", 0))
                while len(buf) < length:
                    buf += conn.recv(65536)
                body, buf = buf[:length], buf[length:]
                method, path, _ = lines[0].split(" ")
                self.requests.append((method, path, json.loads(body)))
                answer = json.dumps({"n": len(self.requests)}).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
                )
        except OSError:
            return

    def drop_idle(self):
        for conn in self.open:
            conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.open.clear()

    def close(self):
        self.drop_idle()
        self.sock.close()


@pytest.fixture
def gateway():
    gw = Gateway()
    yield gw
    gw.close()


def test_heartbeats_share_one_connection(gateway):
    link = GatewayLink(gateway.url)
    for i in range(1, 4):
        assert link.call("PUT", "/moorage/v1/agents/u/heartbeat", {"i": i}, {"X-A": "s"}) == (200, {"n": i})
    assert gateway.accepted == 1 and link.connections == 1
    assert [r[2]["i"] for r in gateway.requests] == [1, 2, 3]


def test_a_connection_the_gateway_closed_is_replaced_once(gateway):
    link = GatewayLink(gateway.url)
    assert link.call("PUT", "/hb", {"i": 1}, {})[0] == 200
    gateway.drop_idle()  # a restart or the idle limit, between two heartbeats
    assert link.call("PUT", "/hb", {"i": 2}, {}) == (200, {"n": 2})
    assert gateway.accepted == 2
    assert [r[2]["i"] for r in gateway.requests] == [1, 2], "the heartbeat went once"


def test_an_unreachable_gateway_is_an_oserror():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    link = GatewayLink(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(OSError):
        link.call("PUT", "/hb", {}, {})


def test_a_path_prefix_in_the_gateway_url_is_kept(gateway):
    link = GatewayLink(gateway.url + "/moorage-gw/")
    link.call("PUT", "/moorage/v1/agents/u/heartbeat", {}, {})
    assert gateway.requests[0][1] == "/moorage-gw/moorage/v1/agents/u/heartbeat"
