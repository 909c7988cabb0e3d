"""A small HTTP/1.1 client for talking to agents and daemons, built for streaming.

Why not requests/urllib3: we need the raw socket after the response head (hijacked
attach/exec), bodies of unknown length sent chunked as they are read, and responses handed
on buffer by buffer without buffering them. This module does exactly that and nothing more.
"""

from __future__ import annotations

import contextlib
import socket
import weakref
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlparse

import gevent

from relay.framing import SIZE_LINE, BodyEnd, FramingError, chunk_size
from relay.pool import Pool

BUFFER = 256 * 1024

# The bodies being relayed now (iter_body), so that a server shutting down gracefully can end
# them (end_streams): a `logs -f` or `events` never ends by itself, and a stream cut when the
# worker finally exits reaches the client as a broken chunked body rather than its end.
_relaying: weakref.WeakSet = weakref.WeakSet()


def end_streams() -> int:
    """End every body being relayed, as if the daemon had ended it: what was received is
    passed on, then the stream's proper end. Returns how many were ended."""
    ended = 0
    for upstream in list(_relaying):
        upstream.ending = True
        with contextlib.suppress(OSError):
            upstream.sock.shutdown(socket.SHUT_RDWR)
        ended += 1
    return ended


MAX_HEAD = 64 * 1024

# A stream whose bytes keep coming never makes a read wait, and a greenlet that never waits
# never lets the others run (a gunicorn worker's heartbeat to its master among them: starved,
# the master kills the worker mid-stream). Every this many bytes, a stream lets them.
YIELD_EVERY = 1024 * 1024


_Piece = TypeVar("_Piece", bound=Sized)


def cooperating(pieces: Iterable[_Piece]) -> Iterator[_Piece]:
    """``pieces``, letting the other greenlets run every YIELD_EVERY bytes."""
    since = 0
    for piece in pieces:
        yield piece
        since += len(piece)
        if since >= YIELD_EVERY:
            since = 0
            gevent.sleep(0)


# See Endpoint.connect: how long a peer may leave what we sent unacknowledged.
UNACKNOWLEDGED_MS = 5000


# Receive buffers kept for reuse by relays (read_into): a BUFFER-sized bytearray is an mmap'd
# allocation, zeroed page by page, which small answers should not pay for each time.
_spare_buffers: list[bytearray] = []


@contextlib.contextmanager
def relay_buffer() -> Iterator[bytearray]:
    """A BUFFER-sized receive buffer for one relay, given back for the next when it is done
    (whoever holds a view of it must be done with the view by then)."""
    buf = _spare_buffers.pop() if _spare_buffers else bytearray(BUFFER)
    try:
        yield buf
    finally:
        if len(_spare_buffers) < 16:
            _spare_buffers.append(buf)


class Framed:
    """A piece of a chunked body with its framing, as the upstream sent it (iter_framed): an
    answer that is chunked too writes it as it is (gateway/server.py)."""

    __slots__ = ("view",)

    def __init__(self, view: memoryview):
        self.view = view

    def __len__(self) -> int:
        return len(self.view)


class UpstreamError(Exception):
    """The upstream could not be reached, or broke the protocol before answering."""


@dataclass(frozen=True)
class Endpoint:
    """Where to connect: ``tcp://host:port``, ``http://host:port`` or ``unix:///path``."""

    scheme: str
    address: str | tuple[str, int]

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        if url.startswith("unix://"):
            return cls("unix", url[len("unix://") :])
        parsed = urlparse(url if "://" in url else "tcp://" + url)
        if parsed.scheme not in ("tcp", "http"):
            raise ValueError(f"unsupported endpoint {url!r}: use tcp://HOST:PORT or unix:///PATH")
        if not parsed.hostname or not parsed.port:
            raise ValueError(f"endpoint {url!r} needs a host and a port")
        return cls("tcp", (parsed.hostname, parsed.port))

    def connect(self, timeout: float) -> socket.socket:
        if self.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            sock = socket.socket(
                socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET, socket.SOCK_STREAM
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Sent bytes unacknowledged this long end the connection with an error. A kept
            # connection over a link that went down meanwhile would otherwise take a request
            # and wait for its answer for as long as the request may take (a stop, a stream:
            # no bound), where a fresh one fails its connect in seconds (relay/pool.py).
            with contextlib.suppress(AttributeError, OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, UNACKNOWLEDGED_MS)
        sock.settimeout(timeout)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        sock.settimeout(None)
        return sock

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.address}"
        return f"tcp://{self.address[0]}:{self.address[1]}"


class SocketReader:
    """Buffered reads from a socket that can hand back whatever it has buffered."""

    def __init__(self, sock: socket.socket, initial: bytes = b""):
        self.sock = sock
        self.buf = bytearray(initial)
        self.eof = False
        self.received = 0  # bytes read from the socket so far

    def _recv(self, limit: int = BUFFER) -> bytes:
        """One recv of up to ``limit`` bytes, counted; b'' (and ``eof`` set) at the end."""
        if self.eof:
            return b""
        data = self.sock.recv(limit)
        if not data:
            self.eof = True
            return b""
        self.received += len(data)
        return data

    def _fill(self) -> bool:
        data = self._recv()
        self.buf += data
        return bool(data)

    def read_head(self) -> bytes:
        """Read through the blank line that ends an HTTP head; return the head."""
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buf[: end + 4])
                del self.buf[: end + 4]
                return head
            if len(self.buf) > MAX_HEAD:
                raise UpstreamError("response head too large")
            if not self._fill():
                raise UpstreamError("connection closed before a response")

    def readline(self) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[: end + 1])
                del self.buf[: end + 1]
                return line
            if len(self.buf) > MAX_HEAD:
                raise UpstreamError("line too long")
            if not self._fill():
                raise UpstreamError("connection closed inside a chunked body")

    def read_some(self, limit: int) -> bytes:
        """Up to ``limit`` bytes: what is buffered, else one recv. b'' at EOF."""
        if limit <= 0:
            return b""
        if not self.buf:
            # Nothing buffered (a body relayed as it comes): what the socket gives is passed
            # on as it is, not copied into the buffer and out again (two copies of every byte
            # of a `docker cp` or a save were most of the agent's time).
            return self._recv(min(limit, BUFFER))
        data = bytes(self.buf[:limit])
        del self.buf[:limit]
        return data

    def read_into(self, into: bytearray) -> int:
        """read_some into ``into`` (at most its length): how many bytes, 0 at EOF. A body
        relayed as it comes is received into a buffer used again and again: a fresh bytes
        object per receive costs the kernel a page fault for every page of it (measured at a
        third of the relay's CPU)."""
        if self.buf:
            k = min(len(into), len(self.buf))
            into[:k] = self.buf[:k]
            del self.buf[:k]
            return k
        if self.eof:
            return 0
        k = self.sock.recv_into(into)
        if not k:
            self.eof = True
            return 0
        self.received += k
        return k

    def take_buffer(self) -> bytes:
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def unread(self, data: bytes) -> None:
        """Put bytes read too far (the next message's) back in front of the buffer."""
        if data:
            self.buf[0:0] = data


def whole_chunks(buf: bytearray, out: bytearray, size: int) -> None:
    """Move the data of the whole chunks at the front of ``buf`` (size line, data and CRLF all
    buffered) to ``out``, until ``out`` holds ``size`` bytes; a last chunk, or one not all
    here, stays in ``buf`` for the caller's chunk-by-chunk reading."""
    pos, n = 0, len(buf)
    size_line = SIZE_LINE.match
    view = memoryview(buf)
    try:
        while len(out) < size:
            m = size_line(buf, pos, n)
            if m is None:
                break  # not here whole, or malformed: the chunk-by-chunk reading says which
            chunk_len = int(m.group(1), 16)
            start = m.end()
            end = start + chunk_len + 2
            if chunk_len == 0 or end > n or buf[end - 2] != 13 or buf[end - 1] != 10:
                break
            out += view[start : end - 2]
            pos = end
    finally:
        view.release()  # before the buffer is resized
    if pos:
        del buf[:pos]


def parse_head(head: bytes) -> tuple[int, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise UpstreamError(f"malformed status line {lines[0]!r}")
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return status, reason, headers


class UpstreamResponse:
    """A response whose head has been read; its body is streamed on demand."""

    def __init__(
        self,
        sock: socket.socket,
        reader: SocketReader,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        method: str,
        pool: Pool | None = None,
        key: object = None,
    ):
        self.sock = sock
        self.reader = reader
        self.status = status
        self.reason = reason
        self.headers = headers
        self.method = method
        self.closed = False
        self.ending = False  # end_streams asked this body to end
        # Where the connection goes back once the whole body is read (keep-alive), if anywhere.
        self.pool = pool
        self.key = key
        self.complete = not self.has_body  # the whole body has been read

    @property
    def reusable(self) -> bool:
        """Whether the connection can carry another request once this body is read: the body
        has a known end, the connection was not hijacked, and the upstream did not close it."""
        if self.pool is None or self.status == 101 or self.is_raw_stream:
            return False
        if "close" in (self.header("Connection") or "").lower():
            return False
        return not self.has_body or self.chunked or self.content_length is not None

    def header(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return default

    @property
    def content_length(self) -> int | None:
        value = self.header("Content-Length")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def chunked(self) -> bool:
        return "chunked" in (self.header("Transfer-Encoding") or "").lower()

    @property
    def has_body(self) -> bool:
        return not (self.method == "HEAD" or self.status in (204, 304) or 100 <= self.status < 200)

    @property
    def is_raw_stream(self) -> bool:
        """The daemon hijacked the connection: 101, or 200 with neither length nor chunking."""
        if self.status == 101:
            return True
        ctype = self.header("Content-Type") or ""
        return (
            self.status == 200
            and self.content_length is None
            and not self.chunked
            and ctype.startswith("application/vnd.docker.")
        )

    def iter_body(self, size: int = BUFFER) -> Iterator[bytes]:
        """Yield the body as it arrives, framing removed, in pieces of up to ``size`` bytes:
        what has arrived is passed on together (a log stream's many small chunks make one
        piece, not one write each), and nothing waits for more while something is in hand.
        Closes the socket, or keeps it (``close``), at the end."""
        _relaying.add(self)
        try:
            if not self.has_body or self.ending:
                return
            if self.chunked:
                pieces = self._iter_chunked(size)
            elif self.content_length is not None:
                pieces = self._iter_length(size)
            else:
                pieces = self._iter_to_close(size)
            yield from cooperating(pieces)
        except (UpstreamError, OSError, ValueError):
            if not self.ending:
                raise
            # ended by end_streams: the end of the body, not an error
        finally:
            _relaying.discard(self)
            self.close()

    def iter_framed(self) -> Iterator[Framed]:
        """A chunked body as it arrives, framing and all, to the end of its last chunk: each
        piece passed on in the chunks the upstream wrote, so the gateway's answer writes it
        without taking it apart and framing it again (relay/framing.py checks the framing as it
        goes, so the pieces end exactly where the body does). A body ended by end_streams at a
        chunk's boundary gets its last chunk here; ended inside a chunk, it is a broken body
        (UpstreamError), as is one the upstream breaks off."""
        _relaying.add(self)
        try:
            yield from cooperating(self._framed_pieces())
        except FramingError as exc:
            raise UpstreamError(str(exc)) from None
        finally:
            _relaying.discard(self)
            self.close()

    def _framed_pieces(self) -> Iterator[Framed]:
        end = BodyEnd(chunked=True)
        with relay_buffer() as buf, memoryview(buf) as view:
            while not end.done:
                try:
                    n = self.reader.read_into(buf)
                except OSError:
                    if not self.ending:
                        raise
                    n = 0
                if not n:
                    if self.ending and end.at_boundary:
                        yield Framed(memoryview(b"0\r\n\r\n"))
                        return
                    raise UpstreamError("connection closed inside a chunked body")
                used = end.feed(buf, n)
                if used < n:
                    self.reader.unread(bytes(view[used:n]))  # not the body's: kept (see close)
                self.complete = end.done
                yield Framed(view[:used])

    def _iter_length(self, size: int) -> Iterator[bytes]:
        remaining = self.content_length or 0
        self.complete = remaining == 0
        while remaining > 0:
            data = self.reader.read_some(min(size, remaining))
            if not data:
                raise UpstreamError("connection closed before the end of the body")
            remaining -= len(data)
            if remaining == 0:
                self.complete = True
            yield data

    def _iter_to_close(self, size: int) -> Iterator[bytes]:
        while True:
            data = self.reader.read_some(size)
            if not data:
                return
            yield data

    def _iter_chunked(self, size: int) -> Iterator[bytes]:
        reader = self.reader
        out = bytearray()
        while True:
            # Every chunk already buffered whole, taken in place (a log stream sends one
            # chunk per line: the per-chunk steps below, a few µs each, were the relay's rate).
            whole_chunks(reader.buf, out, size)
            if out and (len(out) >= size or b"\n" not in reader.buf):
                yield bytes(out)  # the next line is not here yet: pass on what is
                out.clear()
            line = reader.readline()
            try:
                chunk_len = chunk_size(line)
            except FramingError as exc:
                raise UpstreamError(str(exc)) from None
            if chunk_len == 0:
                if out:
                    yield bytes(out)
                    out.clear()
                # Trailers, then the final blank line.
                while reader.readline() not in (b"\r\n", b"\n"):
                    pass
                self.complete = True
                return
            remaining = chunk_len
            while remaining > 0:
                if out and (len(out) >= size or not reader.buf):
                    yield bytes(out)
                    out.clear()
                data = reader.read_some(min(size, remaining))
                if not data:
                    raise UpstreamError("connection closed inside a chunk")
                remaining -= len(data)
                if not out and remaining and not reader.buf:
                    yield data  # passed on as it came: nothing else is in hand to join it
                    continue
                out += data
            if out and b"\n" not in reader.buf:
                yield bytes(out)
                out.clear()
            if reader.readline() != b"\r\n":  # the CRLF after the chunk
                raise UpstreamError("chunk data not followed by CRLF")

    def read(self, limit: int = 16 * 1024 * 1024) -> bytes:
        """The whole body, for small JSON answers; refuses more than ``limit`` bytes."""
        out = bytearray()
        for data in self.iter_body():
            out += data
            if len(out) > limit:
                self.close()
                raise UpstreamError(f"response body larger than {limit} bytes")
        return bytes(out)

    def close(self) -> None:
        """Done with the response: its connection goes back to the pool when the whole body
        was read and the connection can carry another request, else it is closed."""
        if self.closed:
            return
        self.closed = True
        if self.complete and not self.ending and not self.reader.buf and self.reusable and self.pool:
            self.pool.give(self.key, self.sock)
            return
        with contextlib.suppress(OSError):
            self.sock.close()


def send_parts(sock: socket.socket, parts: Iterable[bytes | bytearray | memoryview]) -> None:
    """Send all of ``parts`` (a chunk's size line, its data, its CRLF) in one system call
    where the socket takes them all (sendmsg), not one each: on a loopback connection each
    send is a pass through the whole TCP stack, and the two small ones cost what the data did."""
    views = [memoryview(p) for p in parts if len(p)]
    while views:
        try:
            sent = sock.sendmsg(views)
        except NotImplementedError:  # a TLS socket (it encrypts what it sends; no sendmsg)
            sock.sendall(b"".join(views))
            return
        while views and sent >= len(views[0]):
            sent -= len(views.pop(0))
        if sent:
            views[0] = views[0][sent:]


def _send_body(sock: socket.socket, body: bytes | Iterable[bytes] | None, chunked: bool) -> None:
    if body is None:
        return
    if isinstance(body, bytes | bytearray):
        if body:
            sock.sendall(body)
        return
    for data in body:
        if not data:
            continue
        if chunked:
            send_parts(sock, (b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            sock.sendall(data)
    if chunked:
        sock.sendall(b"0\r\n\r\n")


def request(
    endpoint: Endpoint,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes | Iterable[bytes] | None = None,
    *,
    content_length: int | None = None,
    connect_timeout: float = 3.0,
    timeout: float | None = None,
    pool: Pool | None = None,
) -> UpstreamResponse:
    """Send one request and read the response head.

    ``body`` is bytes, or an iterable of buffers sent as they come: with ``content_length``
    as is, without it chunked. The response body is left on the socket for the caller.
    ``timeout`` bounds each socket operation (None: block, for waits and streams). With a
    ``pool``, a kept connection to ``endpoint`` is used if there is one, and the connection is
    kept again once the response's body has been read (UpstreamResponse.close).
    """
    sock = pool.take(endpoint) if pool is not None else None
    if sock is not None:
        try:
            return _exchange(sock, endpoint, method, target, headers, body, content_length, timeout, pool)
        except _StaleConnection:
            # The kept connection was dead (its peer closed it as we sent): nothing of the
            # request was answered, and a body of bytes can be sent again, on a fresh one.
            pass
    try:
        sock = endpoint.connect(connect_timeout)
    except OSError as exc:
        raise UpstreamError(f"cannot connect to {endpoint}: {exc.strerror or exc}") from exc
    return _exchange(sock, endpoint, method, target, headers, body, content_length, timeout, pool, fresh=True)


class _StaleConnection(UpstreamError):
    """A kept connection failed before any byte of an answer came, with a body to send again."""


def _exchange(
    sock: socket.socket,
    endpoint: Endpoint,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes | Iterable[bytes] | None,
    content_length: int | None,
    timeout: float | None,
    pool: Pool | None,
    fresh: bool = False,
) -> UpstreamResponse:
    sock.settimeout(timeout)
    chunked = False
    lines = [f"{method} {target} HTTP/1.1"]
    have = {name.lower() for name, _ in headers}
    lines += [f"{name}: {value}" for name, value in headers]
    if "host" not in have:
        lines.append("Host: docker")
    if isinstance(body, bytes | bytearray):
        lines.append(f"Content-Length: {len(body)}")
    elif body is not None:
        if content_length is not None:
            lines.append(f"Content-Length: {content_length}")
        else:
            chunked = True
            lines.append("Transfer-Encoding: chunked")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    reader = SocketReader(sock)
    replayable = body is None or isinstance(body, bytes | bytearray)
    try:
        if isinstance(body, bytes | bytearray) and body and len(body) <= 64 * 1024:
            sock.sendall(head + bytes(body))  # one write for a small request
        else:
            sock.sendall(head)
            # The daemon may answer (an error, usually) before reading the whole body; what it
            # said is more useful than our broken pipe.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                _send_body(sock, body, chunked)
        status, reason, resp_headers = parse_head(reader.read_head())
        while status == 100:  # "100 Continue": the real answer follows
            status, reason, resp_headers = parse_head(reader.read_head())
    except (OSError, UpstreamError, ValueError) as exc:
        sock.close()
        if not fresh and replayable and reader.received == 0:
            raise _StaleConnection(str(exc)) from exc
        if isinstance(exc, UpstreamError):
            raise
        raise UpstreamError(f"{endpoint}: {exc}") from exc
    except BaseException:
        # The body's source failed (its client sent a malformed or short body, or went away,
        # or the gateway refused what it read): closing the connection at once tells the
        # daemon the request is broken, never a short one that looks whole, so it fails the
        # request and releases what it holds instead of waiting for the rest.
        sock.close()
        raise
    return UpstreamResponse(sock, reader, status, reason, resp_headers, method, pool=pool, key=endpoint)
