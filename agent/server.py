"""The agent: runs beside dockerd on an instance and fronts its API for the gateway only.

Every request must carry the per-agent secret the gateway issued at registration
(``X-Moorage-Agent-Secret``); anything else gets 401 and never reaches dockerd. An accepted
request is passed to the daemon's socket with the secret removed and ``Connection: close``
(one request per connection, so no later request can ride on an authenticated one), then
the two sockets are spliced by the relay, which also carries hijacked attach/exec sessions.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import socket

from gevent.server import StreamServer

from agent.segments import SegmentError, Segments
from gateway.wire import AGENT_SECRET_HEADER, AGENT_SEGMENTS_PATH, REQUEST_ID_HEADER
from relay.pump import splice
from relay.upstream import Endpoint, SocketReader, UpstreamError

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


class AgentProxy:
    def __init__(self, docker: Endpoint, instance_uuid: str):
        self.docker = docker
        self.instance_uuid = instance_uuid
        self.secret: str | None = None  # set once registered
        self.segments = Segments()  # spanning networks on this instance (agent/segments.py)

    def handle(self, client: socket.socket, address) -> None:
        try:
            self._handle(client)
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def _handle(self, client: socket.socket) -> None:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = SocketReader(client)
        client.settimeout(30)
        try:
            head = reader.read_head()
        except (UpstreamError, OSError):
            return
        client.settimeout(None)
        lines = head.decode("latin-1").split("\r\n")
        request_line, header_lines = lines[0], [line for line in lines[1:] if line]
        presented = ""
        request_id = "-"  # the gateway's ID of the client's request (gateway/logs.py)
        upgrade = False
        kept = []
        for line in header_lines:
            name, _, value = line.partition(":")
            lname = name.strip().lower()
            if lname == SECRET_HEADER:
                presented = value.strip()
            if lname == REQUEST_ID:
                request_id = value.strip()[:128]
            if lname == "upgrade":
                upgrade = True
            if lname not in _HOP_BY_HOP:
                kept.append(line)
        if not self.secret or not hmac.compare_digest(presented.encode(), self.secret.encode()):
            log.warning("request %s refused: wrong or missing agent secret", request_id)
            _answer(
                client,
                401,
                "Unauthorized",
                "this agent serves its registered Moorage gateway only: "
                "send Docker API requests to the gateway",
            )
            return
        method, _, rest = request_line.partition(" ")
        target = rest.rpartition(" ")[0]
        if target == AGENT_SEGMENTS_PATH or target.startswith(AGENT_SEGMENTS_PATH + "/"):
            self._segment_request(client, reader, method, target, header_lines)
            return
        kept.append("Connection: Upgrade" if upgrade else "Connection: close")
        try:
            daemon = self.docker.connect(timeout=3)
        except OSError as exc:
            log.warning("request %s: dockerd at %s is not answering: %s", request_id, self.docker, exc)
            _answer(
                client,
                503,
                "Service Unavailable",
                # The daemon's address stays out of the answer (it is the instance's, not the
                # tenant's business); the agent's log has it.
                f"instance {self.instance_uuid}: its dockerd is not answering "
                f"({exc.strerror or exc}); try again shortly, or ask the operator to check the "
                "daemon on that instance",
            )
            return
        log.debug("request %s: %s", request_id, request_line)
        daemon.sendall(("\r\n".join([request_line, *kept]) + "\r\n\r\n").encode("latin-1"))
        splice(client, daemon, from_client=reader.take_buffer())

    def _segment_request(self, client, reader: SocketReader, method: str, target: str, headers) -> None:
        """The gateway's segment requests: PUT {path}/{vni} with the segment's desired state,
        DELETE {path}/{vni}."""
        length = 0
        for line in headers:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length" and value.strip().isdigit():
                length = int(value.strip())
        if length > 1 << 22:
            _answer(client, 413, "Payload Too Large", "segment too large")
            return
        body = bytearray(reader.take_buffer())
        while len(body) < length:
            chunk = client.recv(65536)
            if not chunk:
                return
            body += chunk
        vni = target[len(AGENT_SEGMENTS_PATH) + 1 :]
        try:
            if method == "PUT" and vni.isdigit():
                result = self.segments.put(json.loads(bytes(body[:length]) or b"null"))
            elif method == "DELETE" and vni.isdigit():
                self.segments.delete(int(vni))
                result = {}
            else:
                raise SegmentError(404, f"no such segment route: {method} {target}")
        except ValueError as exc:
            _answer(client, 400, "Bad Request", f"segment is not JSON: {exc}")
            return
        except SegmentError as exc:
            log.warning("segment request %s %s refused: %s", method, target, exc)
            _answer(client, exc.status, "Segment Refused", str(exc))
            return
        payload = json.dumps(result).encode() + b"\n"
        with contextlib.suppress(OSError):
            client.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )


def serve(listen: tuple[str, int], proxy: AgentProxy) -> StreamServer:
    server = StreamServer(listen, proxy.handle, backlog=1024)
    server.start()
    log.info("agent listening on %s:%s for the gateway", *listen)
    return server
