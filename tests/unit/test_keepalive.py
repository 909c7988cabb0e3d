"""Kept connections: where a body ends (relay/framing.py), the pool of idle connections
(relay/pool.py), the gateway's client reusing them (relay/upstream.py) and the agent serving
several requests on one connection (agent/server.py), against real sockets."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time

import pytest

from agent.server import AgentProxy, serve
from relay import Endpoint, UpstreamError, request
from relay.framing import BodyEnd, FramingError
from relay.pool import Pool, is_stale
from relay.upstream import SocketReader, UpstreamResponse, parse_head

CHUNKED = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n"


@pytest.mark.parametrize("split", range(len(CHUNKED) + 1))
def test_a_chunked_body_ends_where_it_ends_however_it_is_split(split):
    end = BodyEnd(chunked=True)
    after = b"GET /next HTTP/1.1\r\n"
    first, second = CHUNKED[:split], CHUNKED[split:] + after
    used = end.feed(first)
    assert (used == len(first) and not end.done) or split == len(CHUNKED)
    used2 = end.feed(second)
    assert end.done
    assert first[:used] + second[:used2] == CHUNKED
    assert second[used2:] == after


def test_a_body_of_known_length_and_broken_chunks():
    end = BodyEnd(length=5)
    assert end.feed(b"hel") == 3 and not end.done
    assert end.feed(b"loGET") == 2 and end.done
    assert BodyEnd(length=0).done
    with pytest.raises(FramingError):
        BodyEnd(chunked=True).feed(b"zz\r\n")
    with pytest.raises(FramingError):
        BodyEnd(chunked=True).feed(b"1" * 10_000)
    # Many small chunks in one read (a log stream): one pass, and the end found.
    lines = b"".join(b"6c\r\n" + b"x" * 108 + b"\r\n" for _ in range(5000)) + b"0\r\n\r\n"
    end = BodyEnd(chunked=True)
    assert end.feed(lines) == len(lines) and end.done


@pytest.mark.parametrize(
    "bad",
    [
        b"0x3\r\nabc\r\n0\r\n\r\n",  # int(..., 16) takes these; HTTP/1.1 does not
        b"+3\r\nabc\r\n0\r\n\r\n",
        b"3_0\r\n",
        b" 3\r\nabc\r\n",
        b"3\nabc\r\n0\r\n\r\n",  # a size line without its CR
        b"3\r\nabcXY0\r\n\r\n",  # data not followed by CRLF, the chunk here whole
    ],
)
def test_a_chunk_framing_another_reader_could_read_otherwise_is_refused(bad):
    """What the relay passes on framed as it came must end where every reader after it ends
    it: anything but hex sizes, CRLF-ended lines and CRLF after each chunk's data is refused."""
    with pytest.raises(FramingError):
        BodyEnd(chunked=True).feed(bad)


@pytest.mark.parametrize("split", range(1, 9))
def test_a_chunks_missing_crlf_is_found_across_pieces(split):
    data = b"3\r\nabcX\n0\r\n\r\n"
    end = BodyEnd(chunked=True)
    with pytest.raises(FramingError):
        end.feed(data[:split])
        end.feed(data[split:])


@pytest.mark.parametrize("seed", range(20))
def test_chunk_data_runs_are_the_body_without_its_framing(seed):
    """feed(..., spans): the runs of chunk data it reports, joined, are the body; what is past
    the end stays past it; in a reused buffer (``n``), bytes past ``n`` are never read."""
    rng = random.Random(seed)
    payload = [rng.randbytes(rng.choice([1, 2, 100, 3000])) for _ in range(rng.randrange(1, 30))]
    wire = b"".join(b"%x%s\r\n%s\r\n" % (len(p), rng.choice([b"", b";a=1", b" "]), p) for p in payload)
    wire += b"0\r\nX-Trailer: 1\r\n\r\nNEXT"
    end, body, at = BodyEnd(chunked=True), bytearray(), 0
    while not end.done:
        take = rng.randrange(1, 4000)
        piece = bytearray(wire[at : at + take]) + b"\r\n0\r\n\r\n"  # junk past n
        n = min(take, len(wire) - at)
        runs: list[tuple[int, int]] = []
        used = end.feed(piece, n, runs)
        body += b"".join(piece[a:b] for a, b in runs)
        at += used
        assert used == n or end.done
    assert bytes(body) == b"".join(payload)
    assert wire[at:] == b"NEXT"


def test_the_pool_drops_connections_their_peer_closed():
    pool = Pool(idle_seconds=60)
    a, b = socket.socketpair()
    pool.give("k", a)
    assert not is_stale(a)
    assert pool.take("k") is a
    pool.give("k", a)
    b.close()
    assert pool.take("k") is None  # closed by its peer while kept
    c, d = socket.socketpair()
    old = Pool(idle_seconds=0.01)
    old.give("k", c)
    time.sleep(0.05)
    assert old.take("k") is None  # kept too long
    d.close()


class Upstream:
    """A small HTTP/1.1 server on loopback that keeps its connections alive, counting them;
    ``drop_idle()`` closes the ones it keeps, as a server's idle limit or restart does."""

    def __init__(self, answer=None):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.connections = 0
        self.open: list[socket.socket] = []
        self.requests: list[bytes] = []
        self.answer = answer or (lambda head, body: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint.parse(f"tcp://127.0.0.1:{self.listener.getsockname()[1]}")

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
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
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += conn.recv(65536)
                body, buf = buf[:length], buf[length:]
                self.requests.append(head + b"\r\n\r\n" + body)
                conn.sendall(self.answer(head, body))
        except ConnectionError:
            return  # the client went away (reset): nothing to answer
        finally:
            conn.close()

    def drop_idle(self):
        for conn in self.open:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.open.clear()

    def close(self):
        self.listener.close()


def test_the_client_reuses_a_kept_connection_and_replaces_a_dead_one():
    upstream = Upstream()
    pool = Pool()
    try:
        for _ in range(3):
            resp = request(upstream.endpoint, "GET", "/x", [], pool=pool)
            assert resp.read() == b"ok"
        assert upstream.connections == 1
        # A response closed before its body was read is never kept.
        resp = request(upstream.endpoint, "POST", "/y", [], b"{}", pool=pool)
        assert resp.status == 200
        resp.close()
        assert request(upstream.endpoint, "GET", "/x", [], pool=pool).read() == b"ok"
        assert upstream.connections == 2
    finally:
        upstream.close()


def test_a_kept_connection_dead_before_any_answer_is_replaced_for_a_replayable_request():
    answers = iter([b"", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])

    def handler(conn):
        # First connection: answer one request, then take the next and close without a word.
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        conn.recv(65536)
        conn.close()

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    endpoint = Endpoint.parse(f"tcp://127.0.0.1:{listener.getsockname()[1]}")

    def run():
        first, _ = listener.accept()
        handler(first)
        second, _ = listener.accept()
        second.recv(65536)
        second.sendall(next(answers) or next(answers))
        second.close()

    threading.Thread(target=run, daemon=True).start()
    pool = Pool()
    assert request(endpoint, "GET", "/a", [], pool=pool).read() == b"ok"
    # The kept connection dies as the next request is sent: sent again on a fresh one.
    assert request(endpoint, "GET", "/b", [], pool=pool, timeout=5).read() == b"ok"
    listener.close()


def test_a_body_that_cannot_be_sent_again_is_not_replayed():
    def handler(conn):
        conn.recv(65536)
        conn.close()

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    endpoint = Endpoint.parse(f"tcp://127.0.0.1:{listener.getsockname()[1]}")
    threading.Thread(target=lambda: handler(listener.accept()[0]), daemon=True).start()
    with pytest.raises(UpstreamError):
        request(endpoint, "POST", "/build", [], iter([b"part"]), pool=Pool(), timeout=5)
    listener.close()


@pytest.fixture
def cooperative(monkeypatch):
    """The agent runs monkey-patched by gevent (gateway/cli/commands.py): its connections to
    the daemon are gevent sockets here too, so a wait on the daemon lets the test's greenlets
    run."""
    from gevent import socket as gsocket

    monkeypatch.setattr("relay.upstream.socket", gsocket)


def agent_for(upstream: Upstream):
    proxy = AgentProxy(upstream.endpoint, "uuid-test")
    proxy.secret = "s3cret"
    server = serve(("127.0.0.1", 0), proxy)
    return Endpoint.parse(f"tcp://127.0.0.1:{server.server_port}"), server


def test_the_agent_serves_many_requests_on_one_connection_and_keeps_the_daemons(cooperative):
    # The agent is a gevent server: its client runs as a greenlet of the same hub.
    import gevent
    from gevent import socket as gsocket

    def answer(head, body):
        if b" /chunked " in head.split(b"\r\n", 1)[0]:
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body) + 2, b"ok" + body)

    upstream = Upstream(answer)
    agent, server = agent_for(upstream)

    def client():
        sock = gsocket.create_connection(agent.address)
        out = []
        for target, body in (("/a", b""), ("/chunked", b""), ("/b", b"xyz"), ("/c", b"")):
            sock.sendall(
                f"POST {target} HTTP/1.1\r\nHost: d\r\nX-Moorage-Agent-Secret: s3cret\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            data = b""
            while not (data.endswith(b"ok") or data.endswith(b"okxyz") or data.endswith(b"0\r\n\r\n")):
                data += sock.recv(65536)
            out.append(data)
        # A wrong secret on the same connection: refused, and the connection ends.
        sock.sendall(b"GET /d HTTP/1.1\r\nHost: d\r\nX-Moorage-Agent-Secret: nope\r\n\r\n")
        refused = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            refused += data
        return out, refused

    out, refused = gevent.spawn(client).get(timeout=10)
    assert [o.split(b"\r\n", 1)[0] for o in out] == [b"HTTP/1.1 200 OK"] * 4
    assert out[1].endswith(b"3\r\nabc\r\n0\r\n\r\n") and out[2].endswith(b"okxyz")
    assert refused.startswith(b"HTTP/1.1 401")
    assert len(upstream.requests) == 4 and upstream.connections == 1
    assert all(b"s3cret" not in r for r in upstream.requests)  # the secret stays with the agent
    server.stop()  # nothing of this test outlives it
    upstream.close()


def test_the_agent_joins_a_logs_one_line_chunks_and_the_connection_goes_on(cooperative):
    """dockerd writes a log one chunk per line: the agent passes on the same bytes in a few
    large chunks (what the gateway then passes on as they are), drops the trailer, and both
    connections carry the next request."""
    import gevent
    from gevent import socket as gsocket

    lines = [b"\x01\x00\x00\x00\x00\x00\x00\x0c" + b"line %06d\n" % i for i in range(3000)]
    log = b"".join(b"%x\r\n%s\r\n" % (len(x), x) for x in lines) + b"0\r\nX-Trailer: t\r\n\r\n"

    def answer(head, body):
        if b" /logs " in head.split(b"\r\n", 1)[0]:
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + log
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    upstream = Upstream(answer)
    agent, server = agent_for(upstream)

    def gateway():
        sock = gsocket.create_connection(agent.address)
        reader = SocketReader(sock)
        got = []
        for target in ("/logs", "/next"):
            sock.sendall(
                f"GET {target} HTTP/1.1\r\nHost: d\r\nX-Moorage-Agent-Secret: s3cret\r\n\r\n".encode()
            )
            response = UpstreamResponse(sock, reader, *parse_head(reader.read_head()), "GET")
            raw, end = bytearray(), BodyEnd(response.content_length, response.chunked)
            while not end.done:
                piece = reader.read_some(65536)
                assert piece, "the agent closed the connection inside the answer"
                used = end.feed(piece)
                raw += piece[:used]
                reader.unread(piece[used:])
            got.append(bytes(raw))
        sock.close()
        return got

    chunked, after = gevent.spawn(gateway).get(timeout=10)
    runs: list[tuple[int, int]] = []
    BodyEnd(chunked=True).feed(chunked, None, runs)
    assert b"".join(chunked[a:b] for a, b in runs) == b"".join(lines)
    assert len(runs) < len(lines) // 10  # joined: a few chunks, not one per line
    assert b"X-Trailer" not in chunked and chunked.endswith(b"\r\n0\r\n\r\n")
    assert after == b"ok" and upstream.connections == 1
    server.stop()
    upstream.close()


def _trickling_daemon(lines: list[bytes], between) -> tuple[Endpoint, socket.socket]:
    """A daemon that answers one request with ``lines`` one chunk (and one write) each,
    calling ``between(i)`` before line ``i``: a log as dockerd writes it, at its own pace."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def daemon():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i, line in enumerate(lines):
            between(i)
            conn.sendall(b"%x\r\n%s\r\n" % (len(line), line))
        conn.sendall(b"0\r\n\r\n")
        conn.recv(65536)
        conn.close()

    threading.Thread(target=daemon, daemon=True).start()
    return Endpoint.parse(f"tcp://127.0.0.1:{listener.getsockname()[1]}"), listener


def _read_chunks_as_they_come(port: int, seen) -> bytes:
    """The gateway's side: one GET to the agent; ``seen(data so far)`` after every piece."""
    from gevent import socket as gsocket

    sock = gsocket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /logs HTTP/1.1\r\nHost: d\r\nX-Moorage-Agent-Secret: s3cret\r\n\r\n")
    reader = SocketReader(sock)
    response = UpstreamResponse(sock, reader, *parse_head(reader.read_head()), "GET")
    raw, data, end = bytearray(), bytearray(), BodyEnd(chunked=response.chunked)
    while not end.done:
        piece = reader.read_some(65536)
        assert piece, "the agent closed the connection inside the answer"
        runs: list[tuple[int, int]] = []
        end.feed(piece, None, runs)
        raw += piece
        data += b"".join(piece[a:b] for a, b in runs)
        seen(bytes(data))
    sock.close()
    return bytes(data)


def test_the_agent_sends_what_it_gathered_when_the_daemon_pauses(cooperative):
    """A log's lines are gathered into large chunks, but a pause in the daemon's writing (what
    `logs -f` shows as it happens) sends what was gathered at once: here the daemon writes
    ten lines, then waits until the gateway has them before it writes the rest."""
    import gevent

    lines = [b"line %02d\n" % i for i in range(20)]
    first_ten = threading.Event()
    waited: list[bool] = []

    def between(i):
        if i == 10:
            waited.append(first_ten.wait(10))

    daemon, listener = _trickling_daemon(lines, between)
    proxy = AgentProxy(daemon, "uuid-test")
    proxy.secret = "s3cret"
    server = serve(("127.0.0.1", 0), proxy)

    def seen(data):
        if data.startswith(b"".join(lines[:10])):
            first_ten.set()

    got = gevent.spawn(_read_chunks_as_they_come, server.server_port, seen).get(timeout=20)
    assert got == b"".join(lines)
    assert waited == [True], "the first ten lines were held until the daemon went on"
    server.stop()
    listener.close()


def test_the_agent_holds_gathered_data_a_few_milliseconds_at_most(cooperative, monkeypatch):
    """A stream that trickles without a pause long enough to send what was gathered (the
    pause made endless here) is still sent on as it goes (GATHER_AGE), not held to the end."""
    import gevent

    monkeypatch.setattr("agent.server.GATHER_PAUSE", 3600.0)
    lines = [b"line %03d\n" % i for i in range(200)]
    last_written = threading.Event()
    early: list[bytes] = []

    def between(i):
        time.sleep(0.002)
        if i == len(lines) - 1:
            last_written.set()

    daemon, listener = _trickling_daemon(lines, between)
    proxy = AgentProxy(daemon, "uuid-test")
    proxy.secret = "s3cret"
    server = serve(("127.0.0.1", 0), proxy)

    def seen(data):
        if not last_written.is_set():
            early.append(data)

    got = gevent.spawn(_read_chunks_as_they_come, server.server_port, seen).get(timeout=30)
    assert got == b"".join(lines)
    assert early, "nothing reached the gateway before the daemon's last line"
    server.stop()
    listener.close()


def test_a_gateway_gone_during_a_long_wait_ends_the_request_at_the_daemon(cooperative):
    import gevent
    from gevent import socket as gsocket

    ended = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def daemon():
        conn, _ = listener.accept()
        conn.recv(65536)  # a long poll: no answer until the container exits, or the caller leaves
        if conn.recv(65536) == b"":
            ended.set()
        conn.close()

    threading.Thread(target=daemon, daemon=True).start()
    proxy = AgentProxy(Endpoint.parse(f"tcp://127.0.0.1:{listener.getsockname()[1]}"), "uuid-test")
    proxy.secret = "s3cret"
    server = serve(("127.0.0.1", 0), proxy)

    def gateway():
        sock = gsocket.create_connection(("127.0.0.1", server.server_port))
        sock.sendall(b"POST /containers/x/wait HTTP/1.1\r\nHost: d\r\nX-Moorage-Agent-Secret: s3cret\r\n\r\n")
        gevent.sleep(0.3)
        sock.close()  # the gateway's client left

    gevent.spawn(gateway).get(timeout=5)
    deadline = time.monotonic() + 10
    while not ended.is_set() and time.monotonic() < deadline:
        gevent.sleep(0.1)
    assert ended.is_set(), "the daemon's side of the wait was never ended"
    server.stop()
    listener.close()


def test_many_small_chunks_arrive_as_few_pieces_and_a_lone_one_at_once():
    lines = [b"%03d " % i + b"x" * 95 + b"\n" for i in range(2000)]  # 100-byte log lines

    def answer(head, body):
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(line), line) for line in lines)
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"

    upstream = Upstream(answer)
    try:
        pieces = list(request(upstream.endpoint, "GET", "/logs", [], pool=Pool()).iter_body())
        assert b"".join(pieces) == b"".join(lines)
        assert len(pieces) < len(lines) / 10, f"{len(pieces)} pieces for {len(lines)} chunks"
    finally:
        upstream.close()


def random_chunked(rng: random.Random) -> bytes:
    """A chunked body of many chunks of random sizes (small ones, as a log stream's lines,
    and large ones), some with extensions, ended by trailers."""
    out = bytearray()
    for _ in range(rng.randrange(1, 400)):
        size = rng.choice((1, 2, 100, 108, rng.randrange(1, 5000), rng.randrange(1, 300_000)))
        ext = b";name=v" if rng.random() < 0.1 else b""
        out += (
            b"%x%s\r\n" % (size, ext)
            + bytes(rng.getrandbits(8) for _ in range(min(size, 64))) * (size // 64)
            + b"z" * (size % 64)
            + b"\r\n"
        )
    return bytes(out) + b"0\r\nTrailer: x\r\n\r\n"


def decoded(body: bytes) -> bytes:
    """The data of a chunked body, decoded the plain way (the reference)."""
    out, i = bytearray(), 0
    while True:
        newline = body.index(b"\n", i)
        size = int(body[i:newline].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += body[newline + 1 : newline + 1 + size]
        i = newline + 1 + size + 2


@pytest.mark.parametrize("seed", range(12))
def test_chunk_framing_in_random_pieces_finds_the_same_end_and_data(seed):
    """Both readers of chunks: the agent's (BodyEnd: where the body ends, bytes passed on as
    they came) and the gateway's (UpstreamResponse._iter_chunked: the data, unframed), fed the
    body in pieces of random sizes with the next message behind it."""
    rng = random.Random(seed)
    body = random_chunked(rng)
    after = b"HTTP/1.1 200 OK\r\n"
    stream = body + after
    cuts = sorted(rng.sample(range(1, len(stream)), min(40, len(stream) - 1)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    end = BodyEnd(chunked=True)
    passed = bytearray()
    for piece in pieces:
        used = end.feed(piece)
        passed += piece[:used]
        if end.done:
            break
    assert end.done and bytes(passed) == body

    a, b = socket.socketpair()
    try:

        def send():
            for piece in pieces:
                b.sendall(piece)

        writer = threading.Thread(target=send, daemon=True)
        writer.start()
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        reader = SocketReader(a, head)
        status, reason, headers = parse_head(reader.read_head())
        resp = UpstreamResponse(a, reader, status, reason, headers, "GET")
        out = bytearray()
        for data in resp._iter_chunked(rng.choice((1024, 256 * 1024))):
            out += data
        writer.join(10)
        assert bytes(out) == decoded(body)
        assert resp.complete
        assert bytes(reader.buf) == after[: len(reader.buf)]  # the next message's, left alone
    finally:
        a.close()
        b.close()
