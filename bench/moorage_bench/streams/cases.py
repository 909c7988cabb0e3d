"""The streams of bench/streams: each moves SIZE bytes through the gateway and returns the
bytes that crossed it. Containers and images they make carry the bench's label or name and
are removed by the caller's cleanup (Streams.made)."""

from __future__ import annotations

import socket
import urllib.parse

import requests

from ..run.client import Side, create, expect, start, tar_stream, wait
from ..run.common import BENCH_LABEL, REQUEST_TIMEOUT, BenchError

CHUNK = 1 << 20
BIG_IMAGE = "moorage-bench-big"


def writer(size: int, delay: float = 0.0) -> list[str]:
    """A command writing ``size`` bytes of 'a' to stdout (one long line: the json-file driver
    stores it in 16 KB entries), after ``delay`` seconds."""
    pre = f"sleep {delay:g}; " if delay else ""
    return ["sh", "-c", f"{pre}head -c {size} /dev/zero | tr '\\0' a"]


def read_all(resp: requests.Response) -> int:
    total = 0
    for chunk in resp.raw.stream(CHUNK, decode_content=False):
        total += len(chunk)
    return total


def get_stream(side: Side, s: requests.Session, path: str, params: dict) -> int:
    # identity: dockerd gzips archives for clients that accept gzip (see bench/README.md)
    with s.get(
        side.url(path),
        params=params,
        stream=True,
        timeout=REQUEST_TIMEOUT,
        headers={"Accept-Encoding": "identity"},
    ) as r:
        expect(r, 200)
        if r.headers.get("Content-Encoding", "identity") != "identity":
            raise BenchError(f"GET {path} came {r.headers['Content-Encoding']}-encoded")
        return read_all(r)


class Hijacked:
    """A hijacked attach on a raw socket, as the docker CLI holds it: the request, the
    101 UPGRADED answer, then bytes both ways until EOF."""

    def __init__(self, side: Side, path: str, query: dict):
        parts = urllib.parse.urlsplit(side.base)
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout=REQUEST_TIMEOUT)
        target = side.url(path)[len(side.base) :] + "?" + urllib.parse.urlencode(query)
        head = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}"]
        head += [f"{k}: {v}" for k, v in side.headers.items()]
        head += ["Connection: Upgrade", "Upgrade: tcp", "Content-Length: 0", "", ""]
        self.sock.sendall("\r\n".join(head).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            got = self.sock.recv(65536)
            if not got:
                raise BenchError(f"attach: the connection closed before an answer ({buf[:200]!r})")
            buf += got
        head_block, _, rest = buf.partition(b"\r\n\r\n")
        status = head_block.split(b"\r\n")[0]
        if b" 101 " not in status and b" 200 " not in status:
            raise BenchError(f"attach answered {status!r}")
        self.leftover = rest

    def read_to_end(self) -> int:
        total = len(self.leftover)
        while True:
            got = self.sock.recv(CHUNK)
            if not got:
                return total
            total += len(got)

    def close(self) -> None:
        self.sock.close()


def demux_payload(raw: bytes) -> bytes:
    """The payload of Docker's multiplexed frames (8-byte header: stream, 0, 0, 0, size)."""
    out, i = b"", 0
    while i + 8 <= len(raw):
        size = int.from_bytes(raw[i + 4 : i + 8], "big")
        out += raw[i + 8 : i + 8 + size]
        i += 8 + size
    return out


class Cases:
    """One method per stream; each returns the bytes that crossed the gateway."""

    def __init__(self, side: Side, session: requests.Session, size: int, made: dict[str, list[str]]):
        self.side, self.s, self.size, self.made = side, session, size, made

    def container(self, cmd: list[str], **extra) -> str:
        cid = create(self.side, self.s, cmd, **extra)
        self.made["containers"].append(cid)
        return cid

    def logs_follow(self) -> int:
        """`docker logs -f` of a container writing SIZE bytes, from its start to its end."""
        cid = self.container(writer(self.size, delay=0.5))
        start(self.side, self.s, cid)
        params = {"follow": "1", "stdout": "1", "stderr": "1"}
        return get_stream(self.side, self.s, f"/containers/{cid}/logs", params)

    def attach_out(self) -> int:
        """`docker attach` (or `run` in the foreground): SIZE bytes of the container's stdout
        through the hijacked connection."""
        cid = self.container(writer(self.size, delay=0.5), AttachStdout=True, AttachStderr=True)
        conn = Hijacked(self.side, f"/containers/{cid}/attach", {"stream": 1, "stdout": 1, "stderr": 1})
        try:
            start(self.side, self.s, cid)
            return int(conn.read_to_end())
        finally:
            conn.close()

    def attach_in(self) -> int:
        """`docker run -i ... wc -c < FILE`: SIZE bytes into the container's stdin through the
        hijacked connection, half-closed at the end; the container counts them."""
        cid = self.container(
            ["wc", "-c"],
            AttachStdin=True,
            AttachStdout=True,
            OpenStdin=True,
            StdinOnce=True,
        )
        conn = Hijacked(self.side, f"/containers/{cid}/attach", {"stream": 1, "stdin": 1, "stdout": 1})
        try:
            start(self.side, self.s, cid)
            block = b"a" * CHUNK
            left = self.size
            while left > 0:
                n = min(left, CHUNK)
                conn.sock.sendall(block if n == CHUNK else block[:n])
                left -= n
            conn.sock.shutdown(socket.SHUT_WR)
            raw = conn.leftover
            while True:
                got = conn.sock.recv(65536)
                if not got:
                    break
                raw += got
        finally:
            conn.close()
        counted = demux_payload(raw).strip()
        if counted != str(self.size).encode():
            raise BenchError(f"attach in: the container counted {counted[:100]!r}, not {self.size}")
        return self.size

    # prepare_NAME, where there is one, runs before NAME's measure: what it does (a file
    # written in a container, a commit) is not a stream through the gateway.
    big = ""

    def prepare_cp_out(self) -> None:
        if not self.big:
            cid = self.container(["sh", "-c", f"head -c {self.size} /dev/zero > /big"])
            start(self.side, self.s, cid)
            if wait(self.side, self.s, cid, timeout=600) != 0:
                raise BenchError("writing the big file failed")
            self.big = cid

    def cp_out(self) -> int:
        """`docker cp CONTAINER:/big .` of a SIZE-byte file."""
        return get_stream(self.side, self.s, f"/containers/{self.big}/archive", {"path": "/big"})

    def cp_in(self) -> int:
        """`docker cp FILE CONTAINER:/tmp` of a SIZE-byte file, sent chunked as it is made."""
        cid = self.container(["true"])
        r = self.s.put(
            self.side.url(f"/containers/{cid}/archive"),
            params={"path": "/tmp"},
            data=tar_stream(self.size),
            timeout=REQUEST_TIMEOUT,
            headers={"Content-Type": "application/x-tar"},
        )
        expect(r, 200)
        return self.size

    def prepare_save(self) -> None:
        self.prepare_cp_out()
        r = self.s.post(
            self.side.url("/commit"),
            params={"container": self.big, "repo": BIG_IMAGE, "tag": "latest"},
            json={"Labels": {BENCH_LABEL: "1"}},
            timeout=600,
        )
        expect(r, 201)
        self.made["images"].append(f"{BIG_IMAGE}:latest")

    def save(self) -> int:
        """`docker save` of an image holding the SIZE-byte file (committed from cp's container)."""
        total = get_stream(self.side, self.s, "/images/get", {"names": f"{BIG_IMAGE}:latest"})
        if total < self.size:
            raise BenchError(f"save: {total} bytes, fewer than the image's file")
        return total
