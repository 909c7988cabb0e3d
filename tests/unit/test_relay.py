"""The relay's HTTP client and splice, against real sockets."""

import socket
import threading

import pytest

from relay import Endpoint, UpstreamError, request, splice


def serve_once(handler):
    """A one-shot TCP server on loopback; returns its endpoint."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def run():
        conn, _ = listener.accept()
        try:
            handler(conn)
        finally:
            conn.close()
            listener.close()

    threading.Thread(target=run, daemon=True).start()
    return Endpoint.parse(f"tcp://127.0.0.1:{listener.getsockname()[1]}")


def read_request(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    return data


def test_endpoint_parsing():
    assert Endpoint.parse("unix:///run/x.sock").address == "/run/x.sock"
    assert Endpoint.parse("tcp://1.2.3.4:5").address == ("1.2.3.4", 5)
    assert Endpoint.parse("http://h:7").address == ("h", 7)
    with pytest.raises(ValueError):
        Endpoint.parse("ftp://x:1")


def test_chunked_body_is_decoded_and_streamed():
    def handler(conn):
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        conn.sendall(b"6\r\n world\r\n0\r\n\r\n")

    resp = request(serve_once(handler), "GET", "/x", [])
    assert resp.status == 200 and resp.chunked
    assert b"".join(resp.iter_body()) == b"hello world"


def test_content_length_body_and_request_body_sent_chunked():
    seen = {}

    def handler(conn):
        data = read_request(conn)
        while not data.endswith(b"0\r\n\r\n"):
            data += conn.recv(65536)
        seen["request"] = data
        conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")

    resp = request(serve_once(handler), "POST", "/build", [("X-A", "b")], body=iter([b"ab", b"cd"]))
    assert resp.read() == b"ok" and resp.status == 201
    assert b"Transfer-Encoding: chunked" in seen["request"]
    assert seen["request"].endswith(b"2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n")


def test_hijack_answer_is_recognised_and_leftover_kept():
    def handler(conn):
        read_request(conn)
        conn.sendall(
            b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\n"
            b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\nearly-bytes"
        )

    resp = request(serve_once(handler), "POST", "/containers/x/attach", [])
    assert resp.is_raw_stream
    assert resp.reader.take_buffer() in (b"early-bytes", b"")


def test_unreachable_upstream_fails_fast():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(UpstreamError):
        request(Endpoint.parse(f"tcp://127.0.0.1:{port}"), "GET", "/", [], connect_timeout=1)


def test_splice_half_closes_both_ways():
    """stdin EOF reaches the upstream; upstream EOF ends the session for the client.

    Runs under gevent, as it does in the gateway and the agent."""
    import gevent
    from gevent import socket as gsocket

    client_side, client_gw = gsocket.socketpair()
    upstream_gw, upstream_side = gsocket.socketpair()
    got = {}

    def upstream():
        data = b""
        while True:
            chunk = upstream_side.recv(100)
            if not chunk:
                break
            data += chunk
        got["stdin"] = data
        upstream_side.sendall(b"echo:" + data)
        upstream_side.close()

    def client():
        client_side.sendall(b"input")
        client_side.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            chunk = client_side.recv(100)
            if not chunk:
                break
            out += chunk
        return out

    jobs = [
        gevent.spawn(upstream),
        gevent.spawn(splice, client_gw, upstream_gw, from_upstream=b"hdr;"),
        gevent.spawn(client),
    ]
    # The hub's clock is the loop's, cached when it last ran: after other tests ran for over 30 s
    # without it, a 30 s timeout would already have passed.
    gevent.get_hub().loop.update_now()
    gevent.joinall(jobs, timeout=30, raise_error=True)  # a guard against a hang, not a timing
    assert all(job.ready() for job in jobs)
    assert got["stdin"] == b"input"
    assert jobs[2].value == b"hdr;echo:input"


def test_a_failing_body_aborts_the_request_so_the_daemon_sees_the_body_end_early():
    """A client body that fails mid-way (malformed, short, gone) closes the upstream
    connection: the daemon reads EOF before its Content-Length and releases what it holds."""
    seen = []

    def handler(conn):
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        seen.append(data)

    endpoint = serve_once(handler)

    def body():
        yield b"abc"
        raise RuntimeError("the client body broke")

    with pytest.raises(RuntimeError):
        request(endpoint, "PUT", "/x", [], body(), content_length=100, timeout=5)
    deadline = threading.Event()
    for _ in range(50):
        if seen:
            break
        deadline.wait(0.1)
    assert seen and seen[0].endswith(b"abc")
