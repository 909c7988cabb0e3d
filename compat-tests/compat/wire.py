"""A small HTTP/1.1 client on raw sockets, with hard deadlines.

The suite needs control that ordinary clients hide: malformed bodies, HEAD, exact header
values, chunked and streamed bodies read incrementally, and hijacked connections
(attach, exec start) where the socket turns into a raw byte pipe after the answer's head.
Every operation here has a deadline; nothing may hang.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class WireError(Exception):
    pass


def connect(endpoint: str, timeout: float) -> socket.socket:
    """endpoint: unix:///path or tcp://host:port."""
    if endpoint.startswith("unix://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(endpoint[len("unix://") :])
        return sock
    parts = urlsplit(endpoint.replace("tcp://", "http://", 1))
    sock = socket.create_connection((parts.hostname, parts.port or 2375), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    # for streamed reads: did the body end (EOF / final chunk) before the deadline?
    complete: bool = True
    sock: socket.socket | None = field(default=None, repr=False)
    leftover: bytes = field(default=b"", repr=False)

    def header(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return default

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def close(self):
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


class _Reader:
    def __init__(self, sock: socket.socket, deadline: float):
        self.sock = sock
        self.buf = b""
        self.deadline = deadline
        self.eof = False

    def _fill(self) -> bool:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        self.sock.settimeout(min(remaining, 30))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            if time.monotonic() >= self.deadline:
                raise
            return True
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise WireError("connection closed in the middle of a line")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise WireError("connection closed before the announced length")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def rest(self, limit: int) -> tuple[bytes, bool]:
        """Until EOF (True) or the deadline / limit (False)."""
        try:
            while not self.eof and len(self.buf) < limit:
                self._fill()
        except (TimeoutError, OSError):
            out, self.buf = self.buf, b""
            return out, False
        out, self.buf = self.buf, b""
        return out, self.eof


def build_request(
    method: str, target: str, headers: dict | list | None, body: bytes | None, chunked: bool = False
) -> bytes:
    hdrs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in hdrs}
    if "host" not in names:
        hdrs.insert(0, ("Host", "docker"))
    if body is not None and not chunked and "content-length" not in names:
        hdrs.append(("Content-Length", str(len(body))))
    if chunked:
        hdrs.append(("Transfer-Encoding", "chunked"))
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
    out = head.encode("latin-1")
    if body is not None:
        if chunked:
            out += (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
        else:
            out += body
    return out


def _read_head(reader: _Reader) -> tuple[int, str, list[tuple[str, str]]]:
    status_line = reader.line().decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise WireError(f"bad status line {status_line!r}")
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = []
    while True:
        line = reader.line()
        if not line:
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    return status, reason, headers


def request(
    endpoint: str,
    method: str,
    target: str,
    *,
    headers=None,
    body: bytes | None = None,
    timeout: float = 30,
    chunked: bool = False,
    limit: int = 64 * 1024 * 1024,
    stream_for: float | None = None,
    raw: bytes | None = None,
) -> Response:
    """One request on a fresh connection (Connection: close semantics on our side).

    stream_for: read a streamed body (events, stats, logs -f) for this many seconds at most,
    then close and return what arrived (complete=False if it had not ended).
    raw: send these exact bytes instead of building a request.
    """
    deadline = time.monotonic() + timeout
    sock = connect(endpoint, timeout)
    try:
        sock.sendall(raw if raw is not None else build_request(method, target, headers, body, chunked))
        reader = _Reader(sock, deadline)
        while True:
            status, reason, hdrs = _read_head(reader)
            if status != 100:
                break
        resp = Response(status, reason, hdrs)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return resp
        if stream_for is not None:
            reader.deadline = min(deadline, time.monotonic() + stream_for)
        te = (resp.header("Transfer-Encoding") or "").lower()
        length = resp.header("Content-Length")
        body_parts: list[bytes] = []
        try:
            if "chunked" in te:
                while True:
                    size = int(reader.line().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        # trailers
                        while reader.line():
                            pass
                        break
                    body_parts.append(reader.exactly(size))
                    reader.line()
                resp.body = b"".join(body_parts)
            elif length is not None:
                resp.body = reader.exactly(int(length))
            else:
                resp.body, resp.complete = reader.rest(limit)
        except (TimeoutError, OSError, WireError):
            if stream_for is None:
                raise
            # a stream we stopped reading on purpose: keep the complete chunks we have
            resp.complete = False
            if "chunked" in te:
                resp.body = b"".join(body_parts)
            else:
                resp.body = reader.buf
        return resp
    finally:
        sock.close()


def hijack(
    endpoint: str,
    method: str,
    target: str,
    *,
    headers=None,
    body: bytes | None = b"",
    stdin: bytes | None = None,
    half_close: bool = True,
    timeout: float = 20,
    upgrade: str = "tcp",
    read_for: float | None = None,
    stdin_delay: float = 0.0,
) -> Response:
    """A request that the daemon answers by hijacking the connection (attach, exec start).

    Sends the request with Connection: Upgrade, reads the head (101 or 200), then writes
    stdin (and half-closes our side if asked) and reads the raw stream until EOF or the
    deadline. resp.complete tells whether EOF arrived.
    """
    hdrs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    if upgrade:
        hdrs += [("Connection", "Upgrade"), ("Upgrade", upgrade)]
    deadline = time.monotonic() + timeout
    sock = connect(endpoint, timeout)
    try:
        sock.sendall(build_request(method, target, hdrs, body))
        reader = _Reader(sock, deadline)
        status, reason, rh = _read_head(reader)
        resp = Response(status, reason, rh)
        if status >= 400:
            length = resp.header("Content-Length")
            if length is not None:
                resp.body = reader.exactly(int(length))
            elif "chunked" in (resp.header("Transfer-Encoding") or "").lower():
                parts = []
                while True:
                    size = int(reader.line().split(b";")[0].strip() or b"0", 16)
                    if not size:
                        break
                    parts.append(reader.exactly(size))
                    reader.line()
                resp.body = b"".join(parts)
            else:
                resp.body, resp.complete = reader.rest(1 << 20)
            return resp
        if stdin_delay:
            time.sleep(stdin_delay)
        if stdin:
            sock.sendall(stdin)
        if half_close:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        if read_for is not None:
            reader.deadline = min(deadline, time.monotonic() + read_for)
        resp.body, resp.complete = reader.rest(16 << 20)
        return resp
    finally:
        sock.close()


def websocket(
    endpoint: str, target: str, *, headers=None, timeout: float = 10, read_for: float = 3
) -> Response:
    """GET target as a WebSocket upgrade; body = the concatenated payloads of frames read."""
    key = base64.b64encode(os.urandom(16)).decode()
    hdrs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    hdrs += [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
        ("Origin", "http://docker"),
    ]
    deadline = time.monotonic() + timeout
    sock = connect(endpoint, timeout)
    try:
        sock.sendall(build_request("GET", target, hdrs, None))
        reader = _Reader(sock, deadline)
        status, reason, rh = _read_head(reader)
        resp = Response(status, reason, rh)
        if status != 101:
            length = resp.header("Content-Length")
            if length:
                resp.body = reader.exactly(int(length))
            return resp
        reader.deadline = min(deadline, time.monotonic() + read_for)
        data, resp.complete = reader.rest(1 << 20)
        payloads = []
        while len(data) >= 2:
            n = data[1] & 0x7F
            off = 2
            if n == 126:
                n = struct.unpack(">H", data[2:4])[0]
                off = 4
            elif n == 127:
                n = struct.unpack(">Q", data[2:10])[0]
                off = 10
            if data[1] & 0x80:
                off += 4
            payloads.append((data[0] & 0x0F, data[off : off + n]))
            data = data[off + n :]
        resp.body = b"".join(p for op, p in payloads if op in (0, 1, 2))
        return resp
    finally:
        sock.close()


def demux(data: bytes) -> tuple[list[tuple[int, bytes]], list[str], bytes]:
    """Split a multiplexed stream into frames.

    Returns (frames as (stream, payload) merged per consecutive stream, frame-header
    problems, trailing bytes that do not form a whole frame). The 8-byte header is
    [stream, 0, 0, 0, size(4 bytes, big endian)].
    """
    frames: list[tuple[int, bytes]] = []
    problems: list[str] = []
    while len(data) >= 8:
        stream = data[0]
        if data[1:4] != b"\0\0\0" or stream not in (0, 1, 2, 3):
            problems.append(f"bad frame header {data[:8].hex()}")
            break
        size = struct.unpack(">I", data[4:8])[0]
        if len(data) < 8 + size:
            break
        payload = data[8 : 8 + size]
        if frames and frames[-1][0] == stream:
            frames[-1] = (stream, frames[-1][1] + payload)
        else:
            frames.append((stream, payload))
        data = data[8 + size :]
    return frames, problems, data
