"""The bench's HTTP client: raw sockets, HTTP/1.1 keep-alive, the least parsing that works.

Both sides (the gateway over TCP, the daemon over its unix socket) go through this same code, so
whatever it costs is paid alike; bench/run measures that cost (thread CPU per request) and
prints it. `requests` cost about 0.6 ms a request on each side and its threads capped the direct
side's concurrency figure near 1,000 req/s, which is why the bench no longer uses it.

It parses what Docker's API answers with: a status line, headers, then a body framed by
Content-Length, by chunked transfer encoding, or by the end of the connection; and the hijacked
connection of `attach` (101 Switching Protocols, then raw bytes until the daemon closes).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from time import perf_counter

from .common import REQUEST_TIMEOUT, BenchError

READ_SIZE = 1 << 20  # streamed bodies are read and counted in pieces of up to 1 MiB


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes = b""
    length: int = 0  # bytes of body received (also when a sink consumed them)
    first_byte: float = 0.0  # perf_counter() when the first body byte arrived (streams only)
    extra: dict = field(default_factory=dict)

    def text(self) -> str:
        return self.body[:300].decode(errors="replace").strip()


class Conn:
    """One keep-alive connection to one endpoint (unix:// or tcp://), reopened when closed."""

    def __init__(
        self,
        endpoint: str,
        headers: dict[str, str] | None = None,
        prefix: str = "",
        timeout: float = REQUEST_TIMEOUT,
    ):
        self.endpoint = endpoint
        self.timeout = timeout  # seconds per socket operation
        self.prefix = prefix  # "/v1.41": prepended to every path
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.fixed = f"Host: docker\r\nUser-Agent: moorage-bench\r\n{extra}".encode()
        self.sock: socket.socket | None = None
        self.rfile = None

    def connect(self) -> None:
        if self.endpoint.startswith("unix://"):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            s.connect(self.endpoint[len("unix://") :])
        elif self.endpoint.startswith("tcp://"):
            host, _, port = self.endpoint[len("tcp://") :].rpartition(":")
            s = socket.create_connection((host, int(port)), timeout=self.timeout)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            raise BenchError(f"unsupported endpoint {self.endpoint!r} (unix:// or tcp://)")
        self.sock = s
        self.rfile = s.makefile("rb", buffering=READ_SIZE)

    def close(self) -> None:
        if self.rfile is not None:
            self.rfile.close()
        if self.sock is not None:
            self.sock.close()
        self.sock = self.rfile = None

    def _head(self, method: str, path: str, headers: dict[str, str] | None, framing: str) -> bytes:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        return (
            f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode()
            + self.fixed
            + f"{extra}{framing}\r\n".encode()
        )

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Iterable[bytes] | None = None,
        headers: dict[str, str] | None = None,
        sink: Callable[[bytes], None] | None = None,
    ) -> Response:
        """One request; the body is kept unless `sink` is given (then it is handed over piecewise).

        A request on a connection the server closed since the last one is retried once on a
        new connection (keep-alive's usual race); any other failure raises.
        """
        for attempt in (0, 1):
            fresh = self.sock is None
            if fresh:
                self.connect()
            try:
                self._send(method, path, body, headers)
                return self._read_response(method, sink)
            except (ConnectionError, BrokenPipeError, EmptyReply):
                self.close()
                if fresh or attempt or not isinstance(body, bytes | None):
                    raise
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    def _send(self, method, path, body, headers) -> None:
        assert self.sock is not None
        if body is None:
            framing = "Content-Length: 0\r\n" if method in ("POST", "PUT") else ""
            self.sock.sendall(self._head(method, path, headers, framing))
        elif isinstance(body, bytes | bytearray | memoryview):
            self.sock.sendall(self._head(method, path, headers, f"Content-Length: {len(body)}\r\n"))
            self.sock.sendall(body)
        else:
            self.sock.sendall(self._head(method, path, headers, "Transfer-Encoding: chunked\r\n"))
            for piece in body:
                if piece:
                    self.sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            self.sock.sendall(b"0\r\n\r\n")

    def _read_head(self) -> tuple[int, dict[str, str], bool]:
        assert self.rfile is not None
        line = self.rfile.readline(65537)
        if not line:
            raise EmptyReply("the server closed the connection without answering")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise BenchError(f"not an HTTP status line: {line[:100]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        while True:
            h = self.rfile.readline(65537)
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        close = parts[0] == b"HTTP/1.0" or headers.get("connection", "").lower() == "close"
        return status, headers, close

    def _read_response(self, method: str, sink) -> Response:
        assert self.rfile is not None
        status, headers, close = self._read_head()
        while 100 <= status < 200 and status != 101:  # 100 Continue and friends: the real answer follows
            status, headers, close = self._read_head()
        resp = Response(status, headers)
        pieces: list[bytes] = []

        def take(data: bytes) -> None:
            if not resp.length:
                resp.first_byte = perf_counter()
            resp.length += len(data)
            if sink is None:
                pieces.append(data)
            else:
                sink(data)

        rfile = self.rfile
        if method == "HEAD" or status in (204, 304):
            pass
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = rfile.readline(1026)
                if not size_line:
                    raise EmptyReply("connection closed inside a chunked body")
                size = int(size_line.split(b";", 1)[0], 16)
                if size == 0:
                    while rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                while size > 0:
                    data = rfile.read(min(size, READ_SIZE))
                    if not data:
                        raise EmptyReply("connection closed inside a chunk")
                    take(data)
                    size -= len(data)
                rfile.readline(3)
        elif "content-length" in headers:
            left = int(headers["content-length"])
            while left > 0:
                data = rfile.read(min(left, READ_SIZE))
                if not data:
                    raise EmptyReply(f"connection closed with {left} bytes of the body missing")
                take(data)
                left -= len(data)
        else:  # framed by the end of the connection
            close = True
            while data := rfile.read1(READ_SIZE):
                take(data)
        if sink is None:
            resp.body = b"".join(pieces)
        if close:
            self.close()
        return resp

    def hijack_open(self, path: str) -> Response:
        """Send an upgrading POST (attach) and read the answer's head; the stream follows."""
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        self.sock.sendall(
            self._head("POST", path, {"Connection": "Upgrade", "Upgrade": "tcp"}, "Content-Length: 0\r\n")
        )
        status, headers, _ = self._read_head()
        return Response(status, headers)

    def hijack_read(self, resp: Response, sink: Callable[[bytes], None] | None = None) -> Response:
        """Read the hijacked stream to its end (the daemon closes it when the container exits)."""
        assert self.rfile is not None
        while data := self.rfile.read1(READ_SIZE):
            if not resp.length:
                resp.first_byte = perf_counter()
            resp.length += len(data)
            if sink is not None:
                sink(data)
        self.close()
        return resp


class EmptyReply(ConnectionError):
    """The server closed the connection before or while answering."""
