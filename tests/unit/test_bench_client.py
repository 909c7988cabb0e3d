"""bench/run's raw keep-alive client (bench/moorage_bench/run/raw.py) against a real HTTP/1.1
server on a unix socket: the framings Docker's API answers with, keep-alive reuse, uploads sent
chunked, and the retry when the server closed an idle connection.
"""

import itertools
import os
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))

from moorage_bench.run.raw import Conn


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def address_string(self):
        return "unix"

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding") == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self):
        self.server.seen.append((self.path, self.client_address_id()))
        if self.path == "/length":
            self._send(200, {"Content-Length": "5"}, b"hello")
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"a" * 108, b"b" * 70000, b"c"):
                self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/eof":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"x" * 3000)
            self.close_connection = True
        elif self.path == "/empty":
            self._send(204, {}, b"")
        elif self.path == "/bye":
            self._send(200, {"Content-Length": "2"}, b"ok")
            self.close_connection = True  # without saying so: the client finds out next time

    def do_PUT(self):
        body = self._body()
        self._send(200, {"Content-Length": str(len(body))}, body)

    def setup(self):
        super().setup()
        # One handler per connection: number them (ids of dead sockets get reused).
        self.conn_no = next(self.server.connections)

    def client_address_id(self):
        return self.conn_no

    def _send(self, status, headers, body):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def server(tmp_path):
    path = str(tmp_path / "http.sock")
    srv = Server(path, Handler)
    srv.seen = []
    srv.connections = itertools.count()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, f"unix://{path}"
    srv.shutdown()
    srv.server_close()


def test_framings_on_one_kept_alive_connection(server):
    srv, endpoint = server
    conn = Conn(endpoint, {"X-Auth-Token": "t"})
    assert conn.request("GET", "/length").body == b"hello"
    r = conn.request("GET", "/chunked")
    assert r.body == b"a" * 108 + b"b" * 70000 + b"c" and r.length == 70109
    assert conn.request("GET", "/empty").status == 204
    assert conn.request("GET", "/length").body == b"hello"
    assert len({c for _, c in srv.seen}) == 1  # four requests, one connection


def test_body_up_to_the_close_and_a_counting_sink(server):
    _, endpoint = server
    conn = Conn(endpoint)
    got = []
    r = conn.request("GET", "/eof", sink=got.append)
    assert r.length == 3000 and r.body == b"" and sum(map(len, got)) == 3000
    assert conn.sock is None  # the server closed it; the next request opens a new one
    assert conn.request("GET", "/length").body == b"hello"


def test_uploads_with_length_and_chunked(server):
    _, endpoint = server
    conn = Conn(endpoint)
    assert conn.request("PUT", "/x", body=b"z" * 100000).body == b"z" * 100000
    pieces = [b"p" * 1000, b"", b"q" * 5]
    assert conn.request("PUT", "/x", body=iter(pieces)).body == b"p" * 1000 + b"q" * 5


def test_a_request_after_the_server_dropped_the_connection_is_retried_once(server):
    srv, endpoint = server
    conn = Conn(endpoint)
    assert conn.request("GET", "/bye").body == b"ok"
    assert conn.request("GET", "/length").body == b"hello"
    assert len({c for _, c in srv.seen}) == 2


def test_a_closed_endpoint_fails_plainly(tmp_path):
    conn = Conn(f"unix://{tmp_path}/nothing.sock")
    with pytest.raises((FileNotFoundError, ConnectionRefusedError, socket.error)):
        conn.request("GET", "/_ping")
