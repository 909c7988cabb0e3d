"""Hostile request bodies against a live stack, over raw sockets (hand-written HTTP/1.1), so that
nothing between the test and the gateway repairs what is sent: a well-formed chunked create, bad
chunk sizes, an archive upload that lies about its length and then half-closes, a body that
stalls, and a number beyond 64 bits. Each is answered in Docker's shape, never hangs, and leaves
the daemon free: no container lock held by a request that will never finish (issue 18)."""

from __future__ import annotations

import io
import json
import shlex
import socket
import subprocess
import tarfile
import time
from urllib.parse import quote

import pytest

# How long a raw exchange may take before the test calls it a hang.
ANSWER_TIMEOUT = 30
# How long the daemon may take to answer rm/prune once the broken upload is over.
PROMPT = 15
# The idle time of the second gateway the stall test runs against.
IDLE = 3


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, seconds: float):
        self.status, self.headers, self.body, self.seconds = status, headers, body, seconds

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} after {self.seconds:.2f}s: {self.body[:300]!r}>"


def _address(docker_host: str) -> tuple[str, int]:
    host, _, port = docker_host.replace("tcp://", "").replace("http://", "").partition(":")
    return host, int(port)


def _open(docker_host: str) -> socket.socket:
    sock = socket.create_connection(_address(docker_host), timeout=ANSWER_TIMEOUT)
    sock.settimeout(ANSWER_TIMEOUT)
    return sock


def _send_head(sock: socket.socket, method: str, path: str, headers: dict[str, str]) -> None:
    lines = [f"{method} {path} HTTP/1.1", "Host: docker", *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


def _chunked(*pieces: bytes, end: bool = True) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    return out + (b"0\r\n\r\n" if end else b"")


class _Reader:
    def __init__(self, sock: socket.socket, started: float, what: str):
        self.sock, self.buf, self.started, self.what = sock, b"", started, what

    def _more(self) -> bytes:
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            pytest.fail(
                f"{self.what}: no answer within {ANSWER_TIMEOUT} s (the gateway hangs); "
                f"read so far: {self.buf[:300]!r}"
            )
        self.buf += data
        return data

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._more():
                raise EOFError
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._more():
                raise EOFError
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def rest(self) -> bytes:
        while self._more():
            pass
        data, self.buf = self.buf, b""
        return data


def _read_answer(
    sock: socket.socket, started: float, what: str, reader: _Reader | None = None
) -> Answer | None:
    """The response on ``sock``, or None if the gateway closed the connection without one;
    answers to requests sent one behind the other are read with one ``reader``."""
    reader = reader or _Reader(sock, started, what)
    try:
        status_line = reader.line()
        headers = {}
        while line := reader.line():
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(status_line.split()[1])
        if status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while size := int(reader.line().split(b";")[0], 16):
                body += reader.exactly(size)
                reader.line()
            while reader.line():  # trailers
                pass
        elif "content-length" in headers:
            body = reader.exactly(int(headers["content-length"]))
        else:
            body = reader.rest()
    except EOFError:
        return None
    except ConnectionResetError:
        return None
    return Answer(status, headers, body, time.monotonic() - started)


def exchange(
    docker_host: str,
    headers: dict[str, str],
    method: str,
    path: str,
    body: bytes = b"",
    *,
    extra: dict[str, str] | None = None,
    half_close: bool = False,
) -> Answer | None:
    """One request written by hand: ``extra`` headers as given (no Content-Length added unless
    the body is sent whole without one), then ``body`` as is; the answer, or None if the
    connection was closed without one."""
    extra = dict(extra or {})
    names = {k.lower() for k in extra}
    if "content-length" not in names and "transfer-encoding" not in names:
        extra["Content-Length"] = str(len(body))
    with _open(docker_host) as sock:
        started = time.monotonic()
        _send_head(sock, method, path, {**headers, **extra})
        if body:
            sock.sendall(body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return _read_answer(sock, started, f"{method} {path}")


def _ping_ok(docker_host: str, headers: dict[str, str]) -> None:
    answer = exchange(docker_host, headers, "GET", "/_ping")
    assert answer is not None and (answer.status, answer.body) == (200, b"OK"), answer


def _timed(call) -> tuple[float, object]:
    started = time.monotonic()
    result = call()
    return time.monotonic() - started, result


def _archive(size: int = 256 * 1024) -> bytes:
    """A tar of one file of ``size`` bytes: cut short, the daemon is inside the file's data."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("hostile.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(b"x" * size))
    return out.getvalue()


@pytest.fixture
def running(stack, unique):
    """A running container of alpha's, removed after the test."""
    created = stack.docker("run", "-d", "--name", unique, "busybox:latest", "sleep", "600")
    assert created.returncode == 0, created.stderr
    yield created.stdout.decode().strip()
    stack.docker("rm", "-f", unique)


def _daemon_is_free(stack, container: str) -> None:
    """The daemon answers prune and rm -f at once: no request still holds the container's lock.

    Prune looks at every container on the instance (taking each one's lock), so a prune
    straight at the daemon, filtered to a label nothing has, is the plainest probe; then the
    tenant's own prune and rm -f through the gateway."""
    nothing = quote(json.dumps({"label": ["moorage.test.hostile-nothing=1"]}))
    seconds, direct = _timed(
        lambda: stack.direct_http("POST", f"/v1.41/containers/prune?filters={nothing}", timeout=PROMPT)
    )
    assert direct.status_code == 200 and seconds < PROMPT, (direct.status_code, direct.text, seconds)
    seconds, prune = _timed(lambda: stack.docker("container", "prune", "-f", timeout=PROMPT + 30))
    assert prune.returncode == 0 and seconds < PROMPT, (prune.stderr, seconds)
    seconds, removed = _timed(lambda: stack.docker("rm", "-f", container, timeout=PROMPT + 30))
    assert removed.returncode == 0 and seconds < PROMPT, (removed.stderr, seconds)
    assert stack.docker("inspect", container).returncode != 0


# 1. A well-formed chunked body is read whole.


def test_chunked_create_creates_a_container_that_starts_and_is_removed(stack, unique):
    gateway, headers = stack.env["DOCKER_HOST"], stack.headers()
    raw = json.dumps({"Image": "busybox:latest", "Cmd": ["sleep", "600"], "Labels": {"it": unique}}).encode()
    body = _chunked(raw[:7], raw[7:20], raw[20:41], raw[41:])
    created = exchange(
        gateway,
        headers,
        "POST",
        f"/v1.41/containers/create?name={unique}",
        body,
        extra={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
    )
    assert created is not None and created.status == 201, created
    cid = created.json()["Id"]
    try:
        inspect = stack.docker("inspect", "--format", "{{json .Config.Labels}} {{.Name}}", unique)
        assert inspect.returncode == 0, inspect.stderr
        assert inspect.stdout.decode().strip() == f'{{"it":"{unique}"}} /{unique}'
        started = exchange(gateway, headers, "POST", f"/v1.41/containers/{cid}/start")
        assert started is not None and started.status == 204, started
        state = stack.docker("inspect", "--format", "{{.State.Running}}", cid)
        assert state.stdout.strip() == b"true", state.stderr
        removed = exchange(gateway, headers, "DELETE", f"/v1.41/containers/{cid}?force=1")
        assert removed is not None and removed.status == 204, removed
    finally:
        stack.docker("rm", "-f", cid)
    assert stack.docker("inspect", cid).returncode != 0


# 2. A bad chunk size is the client's error, and the gateway keeps serving.


@pytest.mark.parametrize(
    "method,path,ctype",
    [
        ("POST", "/v1.41/containers/create", "application/json"),
        ("PUT", "/v1.41/containers/{id}/archive?path=/tmp", "application/x-tar"),
        ("POST", "/v1.41/images/load", "application/x-tar"),
    ],
    ids=["create", "archive", "load"],
)
def test_bad_chunk_size_is_a_400_in_dockers_shape(stack, running, method, path, ctype):
    gateway, headers = stack.env["DOCKER_HOST"], stack.headers()
    before = {c["Id"] for c in stack.http("GET", "/v1.41/containers/json?all=1").json()}
    answer = exchange(
        gateway,
        headers,
        method,
        path.format(id=running),
        b"zz\r\n",
        extra={"Content-Type": ctype, "Transfer-Encoding": "chunked"},
    )
    assert answer is not None, "the gateway closed the connection without an answer"
    assert answer.status == 400, answer
    assert answer.headers["content-type"] == "application/json"
    payload = answer.json()
    assert list(payload) == ["message"] and "chunk" in payload["message"].lower(), payload
    assert "Traceback" not in payload["message"]
    _ping_ok(gateway, headers)
    after = {c["Id"] for c in stack.http("GET", "/v1.41/containers/json?all=1").json()}
    assert after - before == set()
    # The archive's container is not left locked by the aborted upload.
    _daemon_is_free(stack, running)


# 3. A body that ends early (the client half-closes) or stalls is answered, and releases the daemon.


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_short_archive_upload_then_half_close_is_answered_and_frees_the_container(stack, running, framing):
    gateway, headers = stack.env["DOCKER_HOST"], stack.headers()
    archive = _archive()
    sent = archive[: 64 * 1024]  # the tar's header and a quarter of its one file
    if framing == "content-length":
        extra = {"Content-Type": "application/x-tar", "Content-Length": str(len(archive))}
        body = sent
    else:  # well-formed chunks, but never the last one
        extra = {"Content-Type": "application/x-tar", "Transfer-Encoding": "chunked"}
        body = _chunked(sent[:1000], sent[1000:], end=False)
    with _open(gateway) as sock:
        started = time.monotonic()
        _send_head(sock, "PUT", f"/v1.41/containers/{running}/archive?path=/tmp", {**headers, **extra})
        sock.sendall(body)
        time.sleep(0.5)  # the upload is under way on the daemon before the client stops
        sock.shutdown(socket.SHUT_WR)
        answer = _read_answer(sock, started, "the short archive upload")
    elapsed = time.monotonic() - started - 0.5
    assert elapsed < 10, f"answered only after {elapsed:.1f} s"
    if answer is not None:  # else: closed at once, which is as good
        assert answer.status == 400, answer
        assert answer.json()["message"], answer
    _ping_ok(gateway, headers)
    _daemon_is_free(stack, running)


@pytest.fixture(scope="module")
def idle_gateway(stack, tmp_path_factory):
    """DOCKER_HOST of a second gateway on the stack's store, with body_idle_timeout = IDLE (the
    stack's own keeps the default, 120 s)."""
    tmp = tmp_path_factory.mktemp("idle")
    admin = shlex.split(stack.env["MOORAGE_ADMIN"])
    config_at = admin.index("--config") + 1
    with open(admin[config_at]) as fh:
        config = fh.read()
    assert "[gateway]\n" in config
    config = config.replace("[gateway]\n", f"[gateway]\nbody_idle_timeout = {IDLE}\n", 1)
    (tmp / "moorage.toml").write_text(config)
    admin[config_at] = str(tmp / "moorage.toml")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = tmp / "gateway.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                *admin,
                "serve",
                "--bind",
                f"tcp://127.0.0.1:{port}",
                "--workers",
                "1",
                "--log-file",
                str(log_path),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the second gateway does not listen"
                time.sleep(0.2)
        yield f"tcp://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_stalled_archive_upload_is_answered_after_the_idle_time(stack, idle_gateway, running):
    headers = stack.headers()
    archive = _archive()
    with _open(idle_gateway) as sock:
        _send_head(
            sock,
            "PUT",
            f"/v1.41/containers/{running}/archive?path=/tmp",
            {**headers, "Content-Type": "application/x-tar", "Content-Length": str(len(archive))},
        )
        sock.sendall(archive[: 64 * 1024])
        started = time.monotonic()  # from here on the client says nothing, and keeps its socket open
        answer = _read_answer(sock, started, "the stalled archive upload")
    assert answer is not None, "the gateway closed the connection without an answer"
    assert answer.status == 400 and "timed out" in answer.json()["message"], answer
    assert IDLE - 0.5 <= answer.seconds < IDLE + 10, answer
    _ping_ok(idle_gateway, headers)
    _daemon_is_free(stack, running)


# 4. A number beyond 64 bits is the daemon's to judge, and creates nothing.


@pytest.mark.parametrize("memory", ["1e30", "1000000000000000000000000000000"])
def test_memory_beyond_64_bits_gets_the_daemons_answer_and_creates_nothing(stack, memory):
    raw = b'{"Image":"busybox:latest","Cmd":["true"],"HostConfig":{"Memory":%s}}' % memory.encode()
    before = {c["Id"] for c in stack.http("GET", "/v1.41/containers/json?all=1").json()}
    daemon_before = {c["Id"] for c in stack.direct_http("GET", "/v1.41/containers/json?all=1").json()}
    ours = exchange(
        stack.env["DOCKER_HOST"],
        stack.headers(),
        "POST",
        "/v1.41/containers/create",
        raw,
        extra={"Content-Type": "application/json"},
    )
    theirs = stack.direct_http(
        "POST", "/v1.41/containers/create", data=raw, headers={"Content-Type": "application/json"}
    )
    assert ours is not None
    assert (ours.status, ours.json()) == (theirs.status_code, theirs.json()), (ours, theirs.text)
    assert "Memory" in ours.json()["message"]
    after = {c["Id"] for c in stack.http("GET", "/v1.41/containers/json?all=1").json()}
    daemon_after = {c["Id"] for c in stack.direct_http("GET", "/v1.41/containers/json?all=1").json()}
    assert after - before == set()
    assert daemon_after - daemon_before == set()


# 4. A body the gateway reads from the client's socket itself (issue 19: not through gunicorn's
#    readers) ends exactly where it ends: the request after it on the same connection is served.


def _archive_of(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_upload_and_the_request_after_it_on_one_connection(stack, running, framing):
    gateway, headers = stack.env["DOCKER_HOST"], stack.headers()
    data = bytes(range(256)) * 4099  # about 1 MB, no two pieces alike
    archive = _archive_of("pipelined.bin", data)
    if framing == "chunked":
        pieces = [archive[i : i + 70_001] for i in range(0, len(archive), 70_001)]
        body = b"".join(b"%x;piece=1\r\n%s\r\n" % (len(p), p) for p in pieces)
        body += b"0\r\nX-Trailer: ignored\r\n\r\n"
        extra = {"Transfer-Encoding": "chunked"}
    else:
        body, extra = archive, {"Content-Length": str(len(archive))}
    ping = b"GET /_ping HTTP/1.1\r\nHost: docker\r\n" + b"".join(
        f"{k}: {v}\r\n".encode() for k, v in headers.items()
    )
    with _open(gateway) as sock:
        started = time.monotonic()
        extra["Content-Type"] = "application/x-tar"
        _send_head(sock, "PUT", f"/v1.41/containers/{running}/archive?path=/tmp", {**headers, **extra})
        sock.sendall(body + ping + b"\r\n")  # the next request right behind the body
        reader = _Reader(sock, started, "pipelined")
        answers = [_read_answer(sock, started, "pipelined", reader) for _ in range(2)]
    assert [(a.status, a.body) if a else None for a in answers] == [(200, b""), (200, b"OK")], answers
    # And the file is what was sent: read back through the gateway (an archive's answer is
    # passed on framed as it came), compared byte for byte.
    got = stack.http("GET", f"/v1.41/containers/{running}/archive?path=/tmp/pipelined.bin")
    assert got.status_code == 200, got.text
    with tarfile.open(fileobj=io.BytesIO(got.content)) as tar:
        member = tar.extractfile("pipelined.bin")
        assert member is not None and member.read() == data


@pytest.mark.parametrize(
    "body",
    [b"3\r\nabcXY0\r\n\r\n", b"0x3\r\nabc\r\n0\r\n\r\n", b"3\nabc\r\n0\r\n\r\n"],
    ids=["no-crlf-after-data", "0x-size", "bare-lf"],
)
def test_a_chunked_body_framed_loosely_is_a_400_and_ends_the_connection(stack, running, body):
    """Framing that another reader could end elsewhere is refused, and nothing after it on the
    connection is taken for a request."""
    gateway, headers = stack.env["DOCKER_HOST"], stack.headers()
    with _open(gateway) as sock:
        started = time.monotonic()
        extra = {"Content-Type": "application/x-tar", "Transfer-Encoding": "chunked"}
        _send_head(sock, "PUT", f"/v1.41/containers/{running}/archive?path=/tmp", {**headers, **extra})
        sock.sendall(body + b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
        answer = _read_answer(sock, started, "loose chunks")
        assert answer is not None and answer.status == 400, answer
        assert "chunk" in answer.json()["message"].lower(), answer
        assert _read_answer(sock, started, "after loose chunks") is None  # closed, nothing more
    _ping_ok(gateway, headers)
    _daemon_is_free(stack, running)
