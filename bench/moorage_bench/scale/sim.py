"""Simulated instances: one light gevent process playing the agents of many instances.

    python3 -m moorage_bench.scale.sim SPEC.json READY.json

For each instance in SPEC it listens on its own socket on 127.0.0.1 and, as agent/ does:

- registers with a gateway replica (POST AGENTS_PATH with the operator's registration secret,
  the daemon's facts, its address and capacity: agent/registration.py register_once), keeps the
  agent secret the gateway issues, and heartbeats every `heartbeat_interval` the gateway
  answered (PUT .../heartbeat with the facts and the labelled containers the gateway reconciles
  its map against: heartbeat_once), registering again on a 401 or 404. As the agent's
  GatewayLink does, a registration takes a connection of its own, and the heartbeats go on one
  kept connection, opened again when the gateway closed it. The first heartbeat comes
  after a random part of the interval, so that N instances registered together beat spread over
  the interval as a fleet's agents do;
- serves the agent API the gateway calls (agent/server.py): keep-alive HTTP/1.1, every request
  carrying the agent secret (401 and the connection closed otherwise), answered by a daemon held
  in memory (daemon.py) instead of being relayed to a dockerd.

READY is written once every instance listens: the control port and each instance's port. The
control port answers GET /stats (JSON): registrations, heartbeats (with each one's time and
latency), requests served, and the arrival time of every numbered create (daemon.py SEQ_LABEL).
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import collections  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

from .daemon import Daemon  # noqa: E402

# gateway/wire.py's names, spelt out: the simulator imports nothing of the gateway's.
AGENTS_PATH = "/moorage/v1/agents"
REGISTRATION_SECRET_HEADER = "X-Moorage-Registration-Secret"
AGENT_SECRET_HEADER = "X-Moorage-Agent-Secret"
SECRET = AGENT_SECRET_HEADER.lower()
IDLE_SECONDS = 60.0  # agent/server.py's: a kept connection idle this long is closed
REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    409: "Conflict",
}
STATS = collections.Counter()
REGISTERED: list[float] = []  # when each registration was answered
BEATS: collections.deque = collections.deque(maxlen=200_000)  # (time.time(), ms, status)


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- the gateway's side: registration and heartbeats ------------------------------------------------


# How long a call waits for the gateway's answer. Longer than the agent's (urllib, 10 s): a
# registration the gateway makes but answers after the client gave up leaves the agent without
# its secret, and registering again without it is refused (409) while the instance counts as
# live, for the heartbeat timeout (three intervals); the bench would wait that long.
ANSWER_SECONDS = 600


class KeptConnection:
    """A connection to the gateway, kept from one call to the next (as agent/registration.py
    GatewayLink keeps the heartbeats'): a call on a connection the gateway closed while idle
    is sent once more on a new one."""

    def __init__(self, address: tuple[str, int]):
        self.address = address
        self.sock: socket.socket | None = None

    def call(self, method: str, path: str, payload: dict, headers: dict) -> tuple[int, dict]:
        data = json.dumps(payload).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.address[0]}:{self.address[1]}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"User-Agent: moorage-bench-scale\r\n{extra}\r\n"
        ).encode() + data
        kept, self.sock = self.sock, None
        if kept is not None:
            try:
                return self._exchange(kept, request)
            except ConnectionError:
                kept.close()  # closed while idle: once more, on a new one
        return self._exchange(socket.create_connection(self.address, timeout=ANSWER_SECONDS), request)

    def _exchange(self, sock: socket.socket, request: bytes) -> tuple[int, dict]:
        sock.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            piece = sock.recv(65536)
            if not piece:
                raise ConnectionResetError("the gateway closed the connection")
            buf += piece
        top, _, body = buf.partition(b"\r\n\r\n")
        head = top.lower()
        if b"transfer-encoding: chunked" in head:
            while not body.endswith(b"0\r\n\r\n"):
                piece = sock.recv(65536)
                if not piece:
                    raise ConnectionResetError("the gateway closed the connection")
                body += piece
            body = _unchunk(body)
        else:
            length = 0
            for line in head.split(b"\r\n"):
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            while len(body) < length:
                piece = sock.recv(65536)
                if not piece:
                    raise ConnectionResetError("the gateway closed the connection")
                body += piece
        if b"connection: close" in head:
            sock.close()
        else:
            self.sock = sock
        status = int(top.split(b" ", 2)[1])
        try:
            return status, json.loads(body or b"{}")
        except ValueError:
            return status, {}

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _unchunk(data: bytes) -> bytes:
    out, rest = [], data
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out.append(rest[:size])
        rest = rest[size + 2 :]
    return b"".join(out)


class Instance:
    def __init__(self, uuid: str, project: str, containers: int, capacity: int, gateway: tuple[str, int]):
        self.uuid = uuid
        self.capacity = capacity
        self.gateway = gateway
        self.daemon = Daemon(uuid, project, containers, time.time())
        self.secret: str | None = None
        self.previous = ""
        self.interval = 10.0
        self.port = 0
        self.link = KeptConnection(gateway)  # the heartbeats'

    def register(self) -> bool:
        payload = {
            "uuid": self.uuid,
            "agent_url": f"tcp://127.0.0.1:{self.port}",
            "capacity": self.capacity,
            "provider": "static",
            **self.daemon.facts(),
        }
        headers = {REGISTRATION_SECRET_HEADER: SPEC["secret"]}
        if self.previous:
            headers[AGENT_SECRET_HEADER] = self.previous
        try:
            once = KeptConnection(self.gateway)  # a connection of its own, as the agent registers
            try:
                status, body = once.call("POST", AGENTS_PATH, payload, headers)
            finally:
                once.close()
        except OSError:
            STATS["register_unreachable"] += 1
            return False
        if status not in (200, 201):
            STATS[f"register_{status}"] += 1
            return False
        self.secret = self.previous = body["agent_secret"]
        self.interval = float(body.get("heartbeat_interval", self.interval))
        STATS["registered"] += 1
        REGISTERED.append(time.time())
        return True

    def heartbeat(self) -> bool:
        payload = {"capacity": self.capacity, "daemon": "up", **self.daemon.facts()}
        payload["containers"] = self.daemon.labelled()
        t0 = time.perf_counter()
        try:
            status, _ = self.link.call(
                "PUT",
                f"{AGENTS_PATH}/{self.uuid}/heartbeat",
                payload,
                {AGENT_SECRET_HEADER: self.secret or ""},
            )
        except OSError:
            STATS["heartbeat_unreachable"] += 1
            return True
        BEATS.append((time.time(), (time.perf_counter() - t0) * 1000, status))
        STATS[f"heartbeat_{status}"] += 1
        return status not in (401, 404)

    def run(self, registrations: gevent.pool.Pool) -> None:
        backoff = 0.5
        while True:
            if self.secret is None:
                if not registrations.apply(self.register):
                    gevent.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.5
                # The first beat after a random part of the interval (the module's docstring says why).
                gevent.sleep(self.interval * random.random())
            if not self.heartbeat():
                STATS["reregister"] += 1
                self.secret = None
                continue
            gevent.sleep(self.interval)

    # -- the agent API -------------------------------------------------------------------------

    def serve(self, client: socket.socket, _address) -> None:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        try:
            while True:
                client.settimeout(IDLE_SECONDS)
                while b"\r\n\r\n" not in buf:
                    piece = client.recv(65536)
                    if not piece:
                        return
                    buf += piece
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                headers = {}
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    headers[k.strip().lower()] = v.strip()
                if not self.secret or headers.get(SECRET) != self.secret:
                    STATS["refused_401"] += 1
                    _send(
                        client,
                        401,
                        {"message": "this agent serves its registered Moorage gateway only"},
                        {},
                        True,
                    )
                    return
                body, buf = _read_body(client, headers, buf)
                if body is None:
                    return
                if method == "GET" and target.split("?")[0].endswith("/events"):
                    # The gateway follows each daemon's events: a stream that stays open (this
                    # daemon has none to tell) until the gateway closes it.
                    STATS["events_streams"] += 1
                    client.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Transfer-Encoding: chunked\r\nApi-Version: 1.41\r\n\r\n"
                    )
                    client.settimeout(None)
                    while client.recv(65536):
                        pass
                    return
                status, payload, extra = self.daemon.answer(method, target, body)
                STATS[f"served_{method}"] += 1
                if status == 404:  # what the in-memory daemon lacks, or a container it has not
                    STATS[f"404 {method} {target.split('?')[0]}"] += 1
                close = "close" in headers.get("connection", "").lower()
                _send(client, status, payload, extra, close, head_only=method == "HEAD")
                if close:
                    return
        except OSError:
            return
        finally:
            client.close()


def _read_body(client: socket.socket, headers: dict, buf: bytes) -> tuple[bytes | None, bytes]:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while not (b"\r\n0\r\n\r\n" in buf or buf.startswith(b"0\r\n\r\n")):
            piece = client.recv(65536)
            if not piece:
                return None, b""
            buf += piece
        end = buf.index(b"0\r\n\r\n") + 5
        return _unchunk(buf[:end]), buf[end:]
    length = int(headers.get("content-length") or 0)
    while len(buf) < length:
        piece = client.recv(65536)
        if not piece:
            return None, b""
        buf += piece
    return buf[:length], buf[length:]


def _send(client, status: int, payload, extra: dict, close: bool, head_only: bool = False) -> None:
    if payload is None:
        body, kind = b"", ""
    elif isinstance(payload, str):
        body, kind = payload.encode(), "text/plain; charset=utf-8"
    else:
        body, kind = json.dumps(payload).encode() + b"\n", "application/json"
    lines = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
        "Server: Docker/20.10.24 (linux)",
        "Api-Version: 1.41",
        "Docker-Experimental: false",
        "Ostype: linux",
    ]
    lines += [
        f"{k}: {v}"
        for k, v in extra.items()
        if k.lower() not in ("api-version", "docker-experimental", "ostype")
    ]
    if kind:
        lines.append(f"Content-Type: {kind}")
    if status not in (204, 304):
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    client.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head_only else body))


# -- control ------------------------------------------------------------------------------------------


def control(client: socket.socket, _address) -> None:
    """GET /stats[?since=T] on the control port: the counters, the heartbeats, the creates' arrivals."""
    try:
        line = client.recv(65536).split(b"\r\n", 1)[0].decode("latin-1")
        _, _, query = line.split(" ")[1].partition("?") if line.count(" ") >= 2 else ("", "", "")
        since = float(query.removeprefix("since=") or 0) if query.startswith("since=") else 0.0
        creates = {}
        for inst in INSTANCES:
            creates.update(inst.daemon.creates)
        body = json.dumps(
            {
                "pid": os.getpid(),
                "stats": dict(STATS),
                "beats": [b for b in BEATS if b[0] >= since],
                "creates": creates,
                "intervals": sorted({inst.interval for inst in INSTANCES}),
                "registered": [min(REGISTERED, default=0), max(REGISTERED, default=0)],
                "started": STARTED,
            }
        ).encode()
        client.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
    finally:
        client.close()


SPEC: dict = {}
STARTED = 0.0
INSTANCES: list[Instance] = []


def main(spec_path: str, ready_path: str) -> None:
    raise_fd_limit()
    with open(spec_path) as fh:
        SPEC.update(json.load(fh))
    gateways = [(h, int(p)) for h, p in (g.rsplit(":", 1) for g in SPEC["gateways"])]
    servers = []
    for i, (uuid, project, containers, capacity) in enumerate(SPEC["instances"]):
        inst = Instance(uuid, project, containers, capacity, gateways[i % len(gateways)])
        server = StreamServer(("127.0.0.1", 0), inst.serve, backlog=128)
        server.start()
        inst.port = server.address[1]
        INSTANCES.append(inst)
        servers.append(server)
    ctl = StreamServer(("127.0.0.1", 0), control)
    ctl.start()
    with open(ready_path + ".tmp", "w") as fh:
        json.dump({"control": ctl.address[1], "ports": {i.uuid: i.port for i in INSTANCES}}, fh)
    os.replace(ready_path + ".tmp", ready_path)
    global STARTED
    STARTED = time.time()
    registrations = gevent.pool.Pool(int(SPEC.get("register_concurrency", 16)))
    jobs = [gevent.spawn(inst.run, registrations) for inst in INSTANCES]
    gevent.signal_handler(signal.SIGTERM, lambda: gevent.killall(jobs, block=False))
    gevent.joinall(jobs)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
