"""agent/registration.py GatewayLink: the heartbeats' kept connection to the gateway."""

from __future__ import annotations

import json
import socket

import pytest

from agent.registration import GatewayLink
from tests.unit.test_keepalive import Upstream


class Gateway(Upstream):
    """Answers every request 200 with a JSON body counting the requests."""

    def __init__(self):
        super().__init__(self._answer)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _answer(self, head: bytes, body: bytes) -> bytes:
        answer = json.dumps({"n": len(self.requests)}).encode()
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
            len(answer),
            answer,
        )

    def seen(self) -> list[tuple[str, dict]]:
        """(path, JSON body) of each request, in order."""
        out = []
        for raw in self.requests:
            head, _, body = raw.partition(b"\r\n\r\n")
            out.append((head.split(b" ")[1].decode(), json.loads(body)))
        return out


@pytest.fixture
def gateway():
    gw = Gateway()
    yield gw
    gw.drop_idle()
    gw.close()


def test_heartbeats_share_one_connection(gateway):
    link = GatewayLink(gateway.url)
    for i in range(1, 4):
        assert link.call("PUT", "/moorage/v1/agents/u/heartbeat", {"i": i}, {"X-A": "s"}) == (200, {"n": i})
    assert gateway.connections == 1 and link.connections == 1
    assert [body["i"] for _, body in gateway.seen()] == [1, 2, 3]


def test_a_connection_the_gateway_closed_is_replaced_once(gateway):
    link = GatewayLink(gateway.url)
    assert link.call("PUT", "/hb", {"i": 1}, {})[0] == 200
    gateway.drop_idle()  # a restart or the idle limit, between two heartbeats
    assert link.call("PUT", "/hb", {"i": 2}, {}) == (200, {"n": 2})
    assert gateway.connections == 2
    assert [body["i"] for _, body in gateway.seen()] == [1, 2], "the heartbeat went once"


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
    assert gateway.seen()[0][0] == "/moorage-gw/moorage/v1/agents/u/heartbeat"


def test_a_registration_takes_a_connection_of_its_own_and_closes_it(gateway):
    """GatewayLink.once (registrations): never sent on a kept connection, so never sent twice."""
    link = GatewayLink(gateway.url)
    assert link.call("PUT", "/hb", {"i": 1}, {})[0] == 200
    assert GatewayLink.once(gateway.url, "POST", "/moorage/v1/agents", {"i": 2}, {}) == (200, {"n": 2})
    assert gateway.connections == 2 and link.connections == 1
    assert link.call("PUT", "/hb", {"i": 3}, {}) == (200, {"n": 3})
    assert gateway.connections == 2, "the heartbeats' connection is still the kept one"
