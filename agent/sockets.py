"""Tenant sockets: a unix socket per container that asked for the Docker socket, speaking the
Docker API as that container's project.

The gateway opens one (``PUT AGENT_SOCKETS_PATH/ID`` with the credential it issued, under the
agent's own secret) before it creates the container, whose bind it points at
``DIRECTORY/ID/docker.sock``, and closes it when the container is removed (``DELETE``). Each
connection to the socket carries one request to the gateway: the container's own credentials
headers are dropped, the socket's credential is added, ``Connection: close`` (one request per
connection, so no later request rides on it), then the relay splices both ways, which also
carries attach, exec and ``logs -f``. Paths under /moorage/ (the gateway's agent and certificate
APIs) are refused: the socket is the Docker API only.

A socket no container mounts any more (its container removed by the daemon, ``--rm``) is
closed by ``sweep``, which the agent runs every few seconds. Sockets live in memory: an agent
that restarts starts with none, and containers that had one must be recreated.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import socket
import time
import urllib.parse

from gevent.server import StreamServer

from gateway.wire import (
    AGENT_SECRET_HEADER,
    ALL_PROJECTS_HEADER,
    PROJECT_HEADER,
    SOCKET_CREDENTIAL_HEADER,
    TOKEN_HEADER,
)
from relay.pump import splice
from relay.upstream import Endpoint, SocketReader, UpstreamError, request

log = logging.getLogger("moorage.agent")

SOCKET_NAME = "docker.sock"
# A socket opened for a container that no container mounts yet (its create in flight) is kept
# this long before the sweep closes it.
GRACE = 120.0
_DROPPED = {
    h.lower()
    for h in (
        "connection",
        "keep-alive",
        "proxy-connection",
        AGENT_SECRET_HEADER,
        ALL_PROJECTS_HEADER,
        PROJECT_HEADER,
        SOCKET_CREDENTIAL_HEADER,
        TOKEN_HEADER,
    )
}


def answer(sock: socket.socket, status: int, reason: str, payload: dict) -> None:
    body = json.dumps(payload).encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with contextlib.suppress(OSError):
        sock.sendall(head + body)


class TenantSockets:
    def __init__(self, directory: str, gateway_url: str):
        self.directory = os.path.abspath(directory)
        self.gateway: Endpoint | None = None
        try:
            self.gateway = Endpoint.parse(gateway_url)
        except ValueError as exc:
            # (relay.upstream speaks plain HTTP: a gateway behind https:// gets no tenant sockets.)
            log.warning(
                "no tenant sockets: the gateway's URL %s cannot be reached by them (%s)", gateway_url, exc
            )
        self._open: dict[str, tuple[StreamServer, str, float]] = {}

    @property
    def available(self) -> bool:
        return self.gateway is not None

    def prepare(self) -> None:
        """The directory, emptied of an earlier run's sockets (their credentials were in memory)."""
        os.makedirs(self.directory, mode=0o711, exist_ok=True)
        for name in os.listdir(self.directory):
            shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    # -- the gateway's calls ---------------------------------------------------------------------
    def control(self, client: socket.socket, method: str, target: str, headers: dict[str, str]) -> None:
        """PUT or DELETE AGENT_SOCKETS_PATH/ID, already authenticated by the agent's secret."""
        socket_id = urllib.parse.urlsplit(target).path.rstrip("/").rpartition("/")[2]
        if not socket_id.isalnum() or len(socket_id) > 32 or not socket_id.isascii():
            answer(client, 400, "Bad Request", {"message": f"not a tenant socket ID: {socket_id!r}"})
            return
        if method == "DELETE":
            self.close(socket_id)
            answer(client, 200, "OK", {"Id": socket_id})
            return
        credential = headers.get(SOCKET_CREDENTIAL_HEADER.lower(), "")
        if method != "PUT" or not credential:
            answer(client, 400, "Bad Request", {"message": "PUT with the socket's credential, or DELETE"})
            return
        if not self.available:
            answer(client, 503, "Service Unavailable", {"message": "this agent serves no tenant sockets"})
            return
        try:
            path = self.open(socket_id, credential)
        except OSError as exc:
            log.warning("tenant socket %s: cannot open: %s", socket_id, exc)
            answer(client, 500, "Internal Server Error", {"message": f"cannot open the socket: {exc}"})
            return
        answer(client, 201, "Created", {"Id": socket_id, "Path": path})

    def open(self, socket_id: str, credential: str) -> str:
        if socket_id in self._open:
            self.close(socket_id)
        directory = os.path.join(self.directory, socket_id)
        os.makedirs(directory, mode=0o700, exist_ok=True)  # dockerd (root) binds the socket itself
        path = os.path.join(directory, SOCKET_NAME)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        os.chmod(path, 0o666)  # whatever user the container runs as
        listener.listen(128)
        server = StreamServer(listener, functools.partial(self.handle, credential))
        server.start()
        self._open[socket_id] = (server, path, time.monotonic())
        log.info("tenant socket %s open at %s", socket_id, path)
        return path

    def close(self, socket_id: str) -> None:
        entry = self._open.pop(socket_id, None)
        if entry is not None:
            with contextlib.suppress(Exception):
                entry[0].stop(timeout=0)
            log.info("tenant socket %s closed", socket_id)
        shutil.rmtree(os.path.join(self.directory, socket_id), ignore_errors=True)

    def sweep(self, docker: Endpoint) -> None:
        """Close the sockets that no container on the daemon mounts (after GRACE)."""
        if not self._open:
            return
        try:
            resp = request(docker, "GET", "/containers/json?all=1", [], connect_timeout=3, timeout=30)
            containers = json.loads(resp.read()) if resp.status == 200 else None
        except (UpstreamError, OSError, ValueError):
            containers = None
        if not isinstance(containers, list):
            return  # the daemon cannot say: keep every socket
        mounted = {
            str(m.get("Source"))
            for c in containers
            if isinstance(c, dict)
            for m in c.get("Mounts") or []
            if isinstance(m, dict)
        }
        now = time.monotonic()
        for socket_id, (_, path, opened) in list(self._open.items()):
            if path not in mounted and now - opened > GRACE:
                self.close(socket_id)

    # -- the container's requests ----------------------------------------------------------------
    def handle(self, credential: str, client: socket.socket, address) -> None:
        try:
            self._handle(credential, client)
        finally:
            with contextlib.suppress(OSError):
                client.close()

    def _handle(self, credential: str, client: socket.socket) -> None:
        reader = SocketReader(client)
        client.settimeout(60)
        try:
            head = reader.read_head()
        except (UpstreamError, OSError):
            return
        client.settimeout(None)
        lines = head.decode("latin-1").split("\r\n")
        request_line, header_lines = lines[0], [line for line in lines[1:] if line]
        target = request_line.split(" ")[1] if request_line.count(" ") >= 2 else ""
        if urllib.parse.urlsplit(target).path.startswith("/moorage/"):
            answer(
                client,
                403,
                "Forbidden",
                {"message": "a container's Docker socket serves the Docker API only"},
            )
            return
        upgrade = False
        kept = []
        for line in header_lines:
            name = line.partition(":")[0].strip().lower()
            upgrade = upgrade or name == "upgrade"
            if name not in _DROPPED:
                kept.append(line)
        kept.append(f"{SOCKET_CREDENTIAL_HEADER}: {credential}")
        kept.append("Connection: Upgrade" if upgrade else "Connection: close")
        assert self.gateway is not None
        try:
            upstream = self.gateway.connect(timeout=5)
        except OSError as exc:
            answer(
                client,
                503,
                "Service Unavailable",
                {
                    "message": f"the Moorage gateway is not answering ({exc.strerror or exc}); "
                    "try again shortly"
                },
            )
            return
        upstream.settimeout(None)
        upstream.sendall(("\r\n".join([request_line, *kept]) + "\r\n\r\n").encode("latin-1"))
        splice(client, upstream, from_client=reader.take_buffer())
