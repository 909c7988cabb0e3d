"""The agent: runs beside dockerd on an instance and fronts its API for the gateway only.

Every request must carry the per-agent secret the gateway issued at registration
(``X-Moorage-Agent-Secret``), each request on a kept connection too; anything else gets 401,
never reaches dockerd, and ends the connection. An accepted request is passed to the daemon
with the secret removed, on a connection to dockerd kept between requests, and its answer is
passed back as it comes (relay/framing.py finds where each body ends, so both connections can
carry the next request): a body of known length as it is, a chunked one with its chunks gathered
into large ones (_Gathered). A hijacked answer (attach, exec, BuildKit's session)
or one that ends only when the daemon closes is spliced both ways by the relay, and ends the
connection.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import socket
import time
from dataclasses import dataclass, field

import gevent
from gevent.server import StreamServer

from agent.segments import SegmentError, Segments
from agent.sockets import TenantSockets
from gateway.wire import AGENT_SECRET_HEADER, AGENT_SEGMENTS_PATH, AGENT_SOCKETS_PATH, REQUEST_ID_HEADER
from relay.framing import BodyEnd
from relay.pool import Pool
from relay.pump import splice
from relay.upstream import (
    BUFFER,
    YIELD_EVERY,
    Endpoint,
    SocketReader,
    UpstreamError,
    UpstreamResponse,
    parse_head,
    relay_buffer,
    send_parts,
)

log = logging.getLogger("moorage.agent")

SECRET_HEADER = AGENT_SECRET_HEADER.lower()
REQUEST_ID = REQUEST_ID_HEADER.lower()
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", SECRET_HEADER}


def _answer(sock: socket.socket, status: int, reason: str, message: str) -> None:
    body = json.dumps({"message": message}).encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with contextlib.suppress(OSError):
        sock.sendall(head + body)


# A kept connection from the gateway is closed after this long without a request: longer than
# the gateway keeps one idle (relay/pool.py, 20 s), so the gateway drops it first.
IDLE_SECONDS = 60.0
# How long the first request of a connection may take to arrive.
FIRST_REQUEST_SECONDS = 30.0


@dataclass
class _Request:
    """One request's head as the agent reads it, ready to be sent on to the daemon."""

    line: str
    method: str
    kept: list[str]
    headers: dict[str, str] = field(default_factory=dict)  # by lower-case name
    presented: str = ""
    request_id: str = "-"
    upgrade: bool = False
    length: int | None = None
    chunked: bool = False
    close: bool = False

    @classmethod
    def parse(cls, head: bytes) -> _Request:
        lines = head.decode("latin-1").split("\r\n")
        request = cls(line=lines[0], method=lines[0].split(" ", 1)[0], kept=[])
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            lname, value = name.strip().lower(), value.strip()
            request.headers[lname] = value
            if lname == SECRET_HEADER:
                request.presented = value
            elif lname == REQUEST_ID:
                request.request_id = value[:128]
            elif lname == "upgrade":
                request.upgrade = True
            elif lname == "content-length" and value.isdigit():
                request.length = int(value)
            elif lname == "transfer-encoding" and "chunked" in value.lower():
                request.chunked = True
            elif lname == "connection" and "close" in value.lower():
                request.close = True
            if lname not in _HOP_BY_HOP:
                request.kept.append(line)
        return request

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.length)

    def head(self) -> bytes:
        # Keep-alive to the daemon unless the connection is to be hijacked.
        lines = [self.line, *self.kept, *(["Connection: Upgrade"] if self.upgrade else [])]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class AgentProxy:
    def __init__(self, docker: Endpoint, instance_uuid: str):
        self.docker = docker
        self.instance_uuid = instance_uuid
        self.secret: str | None = None  # set once registered
        # Connections to dockerd kept between requests (relay/pool.py says why).
        self.daemon_connections = Pool()
        self.sockets: TenantSockets | None = None  # the containers' tenant sockets (agent/sockets.py)
        self.segments = Segments(docker)  # spanning networks on this instance (agent/segments.py)

    def handle(self, client: socket.socket, address) -> None:
        try:
            self._handle(client)
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def _handle(self, client: socket.socket) -> None:
        """Serve the gateway's requests on one connection, one after another (keep-alive),
        until it closes the connection, a request hijacks it, or a body has no known end."""
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = SocketReader(client)
        wait = FIRST_REQUEST_SECONDS
        while True:
            client.settimeout(wait)
            try:
                head = reader.read_head()
            except (UpstreamError, OSError):
                return
            client.settimeout(None)
            wait = IDLE_SECONDS
            request = _Request.parse(head)
            # Every request carries the secret, kept connection or not: a connection is never
            # trusted for what an earlier request on it presented.
            if not self.secret or not hmac.compare_digest(request.presented.encode(), self.secret.encode()):
                log.warning("request %s refused: wrong or missing agent secret", request.request_id)
                _answer(
                    client,
                    401,
                    "Unauthorized",
                    "this agent serves its registered Moorage gateway only: "
                    "send Docker API requests to the gateway",
                )
                return
            log.debug("request %s: %s", request.request_id, request.line)
            target = request.line.split(" ")[1] if request.line.count(" ") >= 2 else ""
            if target.startswith(AGENT_SOCKETS_PATH + "/"):
                # The gateway opens or closes a container's tenant socket: the agent's own
                # business, answered here, and the connection ends with it.
                if self.sockets is None:
                    _answer(client, 503, "Service Unavailable", "this agent serves no tenant sockets")
                else:
                    self.sockets.control(client, request.method, target, request.headers)
                return
            if target == AGENT_SEGMENTS_PATH or target.startswith(AGENT_SEGMENTS_PATH + "/"):
                # A spanning network's segment (agent/segments.py): answered here, and the
                # connection ends with it.
                self._segment_request(client, reader, request, target)
                return
            if not self._exchange(client, reader, request):
                return

    def _segment_request(
        self, client: socket.socket, reader: SocketReader, request: _Request, target: str
    ) -> None:
        """PUT {AGENT_SEGMENTS_PATH}/{vni} with the segment's desired state, or DELETE it."""
        length = request.length or 0
        if length > 1 << 22 or request.chunked:
            _answer(
                client, 413, "Payload Too Large", "a segment is one JSON body with its length, under 4 MiB"
            )
            return
        body = bytearray(reader.take_buffer())
        while len(body) < length:
            chunk = client.recv(65536)
            if not chunk:
                return
            body += chunk
        vni = target[len(AGENT_SEGMENTS_PATH) + 1 :]
        try:
            if request.method == "PUT" and vni.isdigit():
                result = self.segments.put(json.loads(bytes(body[:length]) or b"null"))
            elif request.method == "DELETE" and vni.isdigit():
                self.segments.delete(int(vni))
                result = {}
            else:
                raise SegmentError(404, f"no such segment route: {request.method} {target}")
        except ValueError as exc:
            _answer(client, 400, "Bad Request", f"segment is not JSON: {exc}")
            return
        except SegmentError as exc:
            log.warning("segment request %s %s refused: %s", request.method, target, exc)
            _answer(client, exc.status, "Segment Refused", str(exc))
            return
        payload = json.dumps(result).encode() + b"\n"
        with contextlib.suppress(OSError):
            client.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )

    def _daemon(self) -> tuple[socket.socket, bool]:
        """A connection to dockerd: a kept one if there is one, and whether it was kept."""
        kept = self.daemon_connections.take(self.docker)
        if kept is not None:
            return kept, True
        return self.docker.connect(timeout=3), False

    def _unavailable(self, client: socket.socket, request: _Request, exc: Exception) -> None:
        log.warning("request %s: dockerd at %s is not answering: %s", request.request_id, self.docker, exc)
        _answer(
            client,
            503,
            "Service Unavailable",
            # The daemon's address stays out of the answer (it is the instance's, not the
            # tenant's business); the agent's log has it.
            f"instance {self.instance_uuid}: its dockerd is not answering "
            f"({getattr(exc, 'strerror', None) or exc}); try again shortly, or ask the operator to "
            "check the daemon on that instance",
        )

    def _exchange(self, client: socket.socket, reader: SocketReader, request: _Request) -> bool:
        """Relay one request and its answer; True when the connection can carry the next."""
        for attempt in range(2):
            try:
                daemon, kept = self._daemon()
            except OSError as exc:
                self._unavailable(client, request, exc)
                return False
            upstream = SocketReader(daemon)
            try:
                return self._relay(client, reader, request, daemon, upstream)
            except _DaemonGone as exc:
                with contextlib.suppress(OSError):
                    daemon.close()
                # A kept connection the daemon had closed: the request was not answered, nor
                # any of its body read from the gateway; send it again on a fresh one.
                if kept and attempt == 0 and upstream.received == 0 and not exc.body_started:
                    continue
                self._unavailable(client, request, exc)
                return False
            except BaseException:
                with contextlib.suppress(OSError):
                    daemon.close()
                raise
        return False

    def _relay(
        self,
        client: socket.socket,
        reader: SocketReader,
        request: _Request,
        daemon: socket.socket,
        upstream: SocketReader,
    ) -> bool:
        body_job = None
        watch = _GatewayWatch(reader, daemon)
        try:
            try:
                daemon.sendall(request.head())
                if request.has_body:
                    body_job = _send_body(reader, daemon, BodyEnd(request.length, request.chunked))
                head = _response_head(upstream, daemon, watch, body_job)
                status, _, headers = parse_head(head)
                while status == 100:  # "100 Continue" goes to the gateway; the answer follows
                    client.sendall(head)
                    head = _response_head(upstream, daemon, watch, body_job)
                    status, _, headers = parse_head(head)
            except (OSError, UpstreamError, ValueError) as exc:
                started = body_job is not None or (request.has_body and not reader.buf)
                if body_job is not None:
                    body_job.kill(block=False)
                raise _DaemonGone(str(exc), body_started=started) from exc
            response = UpstreamResponse(daemon, upstream, status, "", headers, request.method)
            client.sendall(head)
            unframed = response.has_body and response.content_length is None and not response.chunked
            if response.status == 101 or unframed:
                # Hijacked (attach, exec, BuildKit's session), or a body that ends when the
                # daemon closes: both ways at once, and this connection ends with it.
                watch.stop()
                if body_job is not None:
                    body_job.kill(block=True, timeout=1)
                splice(client, daemon, from_upstream=upstream.take_buffer(), from_client=reader.take_buffer())
                return False
            if response.has_body:
                # A chunked answer may be a stream that never ends by itself (logs -f, events,
                # stats): while the agent waits for the daemon, the gateway's side is watched.
                _pump_response(
                    upstream,
                    client,
                    BodyEnd(response.content_length, response.chunked),
                    watch if response.chunked and body_job is None else None,
                )
        finally:
            watch.stop()
        if body_job is not None and not body_job.ready():
            # The daemon answered before reading the whole body (an early error): what is
            # left of the body is not a next request; neither connection can go on.
            body_job.kill(block=True, timeout=1)
            daemon.close()
            return False
        if body_job is not None and not body_job.successful():
            daemon.close()
            return False
        if "close" in (response.header("Connection") or "").lower() or upstream.buf or watch.gone:
            daemon.close()
            return False
        self.daemon_connections.give(self.docker, daemon)
        return not request.close and not reader.eof


class _DaemonGone(UpstreamError):
    def __init__(self, message: str, body_started: bool):
        super().__init__(message)
        self.body_started = body_started


class _GatewayWatch:
    """While the agent waits on the daemon (a long poll, a stream), the gateway may go away:
    its client left. Nothing else would tell the daemon, which would go on waiting or
    streaming for no one; the watch reads the gateway's side and, at its end, shuts the
    daemon's connection, which ends the request there. Started only once a wait proves long,
    so a quick answer costs no greenlet."""

    def __init__(self, reader: SocketReader, daemon: socket.socket):
        self.reader = reader
        self.daemon = daemon
        self.job: gevent.Greenlet | None = None
        self.gone = False

    def start(self) -> None:
        if self.job is None:
            self.job = gevent.spawn(self._watch)

    def stop(self) -> None:
        if self.job is not None:
            self.job.kill(block=False)

    def _watch(self) -> None:
        try:
            data = self.reader.sock.recv(BUFFER)
        except OSError:
            data = b""
        if data:  # the gateway's next request, early: it waits in the buffer
            self.reader.buf += data
            return
        self.gone = True
        self.reader.eof = True
        with contextlib.suppress(OSError):
            self.daemon.shutdown(socket.SHUT_RDWR)


# How long the daemon may take to answer before the gateway's side is watched (see above).
HEAD_PATIENCE = 1.0


def _response_head(upstream: SocketReader, daemon: socket.socket, watch: _GatewayWatch, body_job) -> bytes:
    """The daemon's response head; if it is slow to come and no body is being read from the
    gateway (which would notice the gateway going away itself), watch the gateway meanwhile."""
    if body_job is not None and not body_job.ready():
        return upstream.read_head()
    daemon.settimeout(HEAD_PATIENCE)
    try:
        return upstream.read_head()
    except TimeoutError:
        watch.start()
        daemon.settimeout(None)
        return upstream.read_head()
    finally:
        daemon.settimeout(None)


def _send_body(reader: SocketReader, daemon: socket.socket, end: BodyEnd):
    """Send the request's body to the daemon: what is already read at once; the rest, if
    any, in a greenlet of its own (the daemon may answer before it has it all)."""
    data = reader.take_buffer()
    used = end.feed(data)
    if used:
        daemon.sendall(data[:used])
    reader.unread(data[used:])
    if end.done:
        return None
    return gevent.spawn(_pump_body, reader, daemon, end)


def _pass_on(
    buf: bytearray,
    n: int,
    end: BodyEnd,
    source: SocketReader,
    dst: socket.socket,
    since: int,
    gathered: _Gathered | None = None,
) -> int:
    """Send ``dst`` the part of ``buf``'s first ``n`` bytes that belongs to the body and keep
    the rest (the next message's) in ``source``: as it came, or, for a chunked answer, the data
    of its chunks to ``gathered`` (which sends them on joined, _Gathered). Returns the bytes
    passed on since the greenlet last let the others run, which it does every YIELD_EVERY bytes
    (relay/upstream.py says why)."""
    runs: list[tuple[int, int]] | None = None if gathered is None else []
    used = end.feed(buf, n, runs)
    with memoryview(buf) as view:
        if runs is None:
            dst.sendall(view[:used])
        else:
            assert gathered is not None
            gathered.take(view, runs, end.done)
        if used < n:
            source.unread(bytes(view[used:n]))
    since += used
    if since < YIELD_EVERY:
        return since
    gevent.sleep(0)
    return 0


def _pump_body(reader: SocketReader, daemon: socket.socket, end: BodyEnd) -> None:
    """Copy one body, framing and all, until its end; the bytes after it stay in ``reader``.
    A gateway that goes away inside the body (its client's upload broke) leaves the daemon a
    body that ends early, as it would see from a client of its own, so it fails the request
    and lets go of what it holds (a container's archive lock) instead of waiting."""
    since = 0
    try:
        with relay_buffer() as buf:
            while not end.done:
                n = reader.read_into(buf)
                if not n:
                    raise UpstreamError("the gateway closed the connection inside a request body")
                since = _pass_on(buf, n, end, reader, daemon, since)
    except BaseException:
        with contextlib.suppress(OSError):
            daemon.shutdown(socket.SHUT_WR)
        raise


# A piece with more runs of chunk data than this is copied, never sent in place (sendmsg takes
# up to IOV_MAX, 1024, buffers, and one per line costs more than the copy).
FEW_RUNS = 16
# A chunked answer's data is gathered to be sent on in chunks of about this size (_Gathered)...
GATHER_BYTES = 64 * 1024
# ...unless the daemon pauses this long (the end of a burst: what `logs -f` shows as it
# happens goes on at once)...
GATHER_PAUSE = 0.001
# ...or the oldest byte gathered has waited this long (a stream that trickles without pause).
GATHER_AGE = 0.005


class _Gathered:
    """The data of a chunked answer's pieces, sent on to the gateway as one chunk per
    GATHER_BYTES or so. dockerd writes a log one chunk per line and one write per chunk, and
    its socket holds only a few hundred of them (each small write costs the kernel a buffer
    of its own), so the agent must read often: a piece is 5-10 KB of a log. Sending each
    on was a pass through TCP (and the veth into the instance) for the gateway too, per piece;
    gathered, the gateway reads large chunks and passes them on as they are
    (relay/upstream.py iter_framed), and the client reads a few large chunks, not a million
    small ones. The agent goes on reading while it gathers (waiting instead stalled dockerd),
    and sends what it has when the daemon pauses, when it has waited GATHER_AGE, or at the
    answer's end. Large pieces (an archive's, a save's) go on from the receive buffer in
    place. Trailers, which dockerd never sends, are not passed on."""

    def __init__(self, dst: socket.socket):
        self.dst = dst
        self.data = bytearray()
        self.since = 0.0  # when the oldest byte in ``data`` came

    def take(self, view: memoryview, runs: list[tuple[int, int]], last: bool) -> None:
        """The runs of chunk data of one piece (in ``view``); ``last``: the answer ends in it."""
        data = self.data
        if not data and len(runs) <= FEW_RUNS:
            size = sum(b - a for a, b in runs)
            if size >= GATHER_BYTES or last:
                self._send_chunk(size, [view[a:b] for a, b in runs], last)
                return
        if not data:
            self.since = time.monotonic()
        for a, b in runs:
            data += view[a:b]
        if last or len(data) >= GATHER_BYTES or time.monotonic() - self.since >= GATHER_AGE:
            self.send(last)

    @property
    def waiting(self) -> bool:
        return bool(self.data)

    def send(self, last: bool = False) -> None:
        """What is gathered as one chunk (and the last chunk, if ``last``)."""
        self._send_chunk(len(self.data), [self.data], last)
        self.data.clear()

    def _send_chunk(self, size: int, parts: list, last: bool) -> None:
        """``parts`` (``size`` bytes in all; none: no chunk) as one chunk, in one system call
        (send_parts), followed by the last chunk if ``last``."""
        head, tail = (b"%x\r\n" % size, b"\r\n") if size else (b"", b"")
        send_parts(self.dst, [head, *parts, tail, b"0\r\n\r\n" if last else b""])


def _pump_response(
    upstream: SocketReader, client: socket.socket, end: BodyEnd, watch: _GatewayWatch | None
) -> None:
    """The daemon's answer to the gateway, as it comes (a chunked one gathered, _Gathered),
    until the body's end; with a ``watch``, the gateway is watched once the daemon has been
    silent for a while."""
    since = 0
    gathered = _Gathered(client) if end.chunked else None
    # The receive's timeout: a pause ends a gathering; a long silence starts the watch.
    patience = HEAD_PATIENCE if watch is not None else None
    timeout = None
    try:
        with relay_buffer() as buf:
            while not end.done:
                wait = GATHER_PAUSE if gathered is not None and gathered.waiting else patience
                if wait != timeout:
                    upstream.sock.settimeout(wait)
                    timeout = wait
                try:
                    n = upstream.read_into(buf)
                except TimeoutError:
                    if gathered is not None and gathered.waiting:
                        gathered.send()
                    elif watch is not None:
                        watch.start()
                        patience = None
                    else:
                        raise
                    continue
                if not n:
                    raise UpstreamError("dockerd closed the connection inside its answer")
                since = _pass_on(buf, n, end, upstream, client, since, gathered)
    finally:
        if timeout is not None:
            upstream.sock.settimeout(None)


def serve(listen: tuple[str, int], proxy: AgentProxy) -> StreamServer:
    server = StreamServer(listen, proxy.handle, backlog=1024)
    server.start()
    log.info("agent listening on %s:%s for the gateway", *listen)
    return server
