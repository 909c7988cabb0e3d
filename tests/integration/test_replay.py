"""Replayed answers (gateway/replay.py): a repeated read answered again before the WSGI stack,
with the gateway's own answer of a moment ago, never after a write it could not show, never to
credentials that no longer authenticate, each with its own request ID and counted as any other.

The requests here go over raw keep-alive connections, byte for byte the same each time, as a
polling client sends them."""

import json
import os
import socket
import time
import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families


class Raw:
    """One keep-alive connection to the gateway, sending requests as given."""

    def __init__(self, stack):
        host, port = stack.gateway[len("http://") :].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.buf = b""

    def head_for(self, path: str, headers: dict[str, str], extra: str = "") -> bytes:
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return f"GET {path} HTTP/1.1\r\nHost: moorage\r\n{lines}{extra}\r\n".encode()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            more = self.sock.recv(65536)
            assert more, "the gateway closed the connection before answering"
            self.buf += more
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers["content-length"])
        while len(self.buf) < length:
            more = self.sock.recv(65536)
            assert more, "the gateway closed the connection within an answer"
            self.buf += more
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(lines[0].split()[1]), headers, body

    def get(self, head: bytes) -> tuple[int, dict[str, str], bytes]:
        self.send(head)
        return self.answer()

    def closed(self) -> bool:
        """Whether the gateway closed the connection (nothing more comes)."""
        self.sock.settimeout(5)
        return not self.buf and self.sock.recv(1) == b""

    def close(self) -> None:
        self.sock.close()


def replays(stack, operation: str) -> float:
    url = stack.env.get("MOORAGE_METRICS_URL")
    if not url:
        pytest.skip("this stack writes no MOORAGE_METRICS_URL")
    total = 0.0
    for family in text_string_to_metric_families(requests.get(url, timeout=10).text):
        for sample in family.samples:
            if sample.name == "moorage_replayed_answers_total" and sample.labels["operation"] == operation:
                total += sample.value
    return total


@pytest.fixture
def target(stack, unique):
    made = stack.docker("run", "-d", "--name", unique, "busybox", "sleep", "300")
    assert made.returncode == 0, made.stderr
    yield unique
    stack.docker("rm", "-f", unique, f"{unique}-b")


def test_a_repeated_read_is_replayed_alike_with_its_own_request_id(stack, cached, target):
    raw = Raw(stack)
    try:
        for path, operation in (
            ("/v1.47/containers/json", "ContainerList"),
            (f"/v1.47/containers/{target}/json", "ContainerInspect"),
        ):
            head = raw.head_for(path, stack.headers())
            before = replays(stack, operation)
            answers = [raw.get(head) for _ in range(8)]
            assert replays(stack, operation) - before >= 4, "the repeated read was not replayed"
            assert {status for status, _, _ in answers} == {200}
            assert len({body for _, _, body in answers}) == 1  # nothing changed: the same answer
            ids = [headers["x-request-id"] for _, headers, _ in answers]
            assert len(set(ids)) == len(ids), ids  # each answer its own request ID
            for _, headers, _ in answers:
                assert headers["api-version"] and headers["content-type"] == "application/json"
                assert headers["date"].endswith(" GMT")
        # a client's own request ID comes back with its replays, as with the app's answers
        head = raw.head_for("/v1.47/containers/json", {**stack.headers(), "X-Request-Id": "mine-1"})
        assert {raw.get(head)[1]["x-request-id"] for _ in range(5)} == {"mine-1"}
    finally:
        raw.close()


def test_a_replay_never_outlives_a_write(stack, cached, target):
    """Between writes through the docker CLI (other connections, either worker), the same raw
    reads are replayed; the first read after each write shows it."""
    raw = Raw(stack)
    ps = raw.head_for("/v1.47/containers/json?all=1", stack.headers())
    renamed = f"{target}-b"

    def states(name: str) -> tuple[str | None, str | None]:
        row = next((c for c in json.loads(raw.get(ps)[2]) if c["Names"] == [f"/{name}"]), None)
        status, _, body = raw.get(raw.head_for(f"/v1.47/containers/{name}/json", stack.headers()))
        inspected = json.loads(body)["State"]["Status"] if status == 200 else None
        return (row["State"] if row else None), inspected

    try:
        name = target
        for command, then, want in (
            (["stop", "-t", "0", target], target, ("exited", "exited")),
            (["start", target], target, ("running", "running")),
            (["rename", target, renamed], renamed, ("running", "running")),
            (["kill", renamed], renamed, ("exited", "exited")),
            (["rm", renamed], renamed, (None, None)),
        ):
            before = replays(stack, "ContainerList")
            for _ in range(6):
                states(name)  # replayed from the second or third on
            assert replays(stack, "ContainerList") > before
            done = stack.docker(*command)
            assert done.returncode == 0, done.stderr
            assert states(then) == want, command
            name = then
    finally:
        raw.close()


def test_pipelined_requests_and_a_closing_one(stack, cached, target):
    raw = Raw(stack)
    try:
        head = raw.head_for(f"/v1.47/containers/{target}/json", stack.headers())
        for _ in range(3):
            raw.get(head)  # kept from the second
        raw.send(head * 4)  # four at once: four answers, in order
        bodies = [raw.answer() for _ in range(4)]
        assert [status for status, _, _ in bodies] == [200] * 4
        assert len({body for _, _, body in bodies}) == 1
    finally:
        raw.close()
    closing = Raw(stack)
    try:
        head = closing.head_for(f"/v1.47/containers/{target}/json", stack.headers(), "Connection: close\r\n")
        for _ in range(3):  # each on a connection of its own: the gateway closes it after answering
            status, headers, _ = closing.get(head)
            assert status == 200 and headers["connection"] == "close"
            assert closing.closed()
            closing.close()
            closing = Raw(stack)
    finally:
        closing.close()


def test_credentials_that_no_longer_authenticate_get_no_replay(stack, cached, target):
    """A token removed from the identity backend is refused at once, even for a request the
    gateway has just replayed to it."""
    path = os.path.join(stack.dir, "identity.json")
    with open(path) as fh:
        original = fh.read()
    data = json.loads(original)
    alpha = stack.headers()
    token = f"replay-{uuid.uuid4().hex}"
    entry = next(v for k, v in data["tokens"].items() if k == alpha["X-Auth-Token"])

    def write(tokens: dict) -> None:
        with open(path + ".tmp", "w") as fh:
            json.dump({**data, "tokens": tokens}, fh)
        os.replace(path + ".tmp", path)

    raw = Raw(stack)
    try:
        write({**data["tokens"], token: entry})
        head = raw.head_for("/v1.47/containers/json", {**alpha, "X-Auth-Token": token})
        before = replays(stack, "ContainerList")
        assert [raw.get(head)[0] for _ in range(5)] == [200] * 5
        assert replays(stack, "ContainerList") > before
        time.sleep(0.02)  # a new mtime for the file
        write(data["tokens"])
        status, _, body = raw.get(head)
        assert status == 401 and b"authentication failed" in body, body
    finally:
        raw.close()
        with open(path + ".tmp", "w") as fh:
            fh.write(original)
        os.replace(path + ".tmp", path)
