"""The routing mesh's listeners: a port at the gateway's address forwarded to an instance's.

``Mesh.apply`` takes the wanted state ({(protocol, port): (host, port)}) and opens, retargets
or closes listeners to match. TCP connections are spliced both ways with half-close
(relay/pump.py), a buffer at a time; UDP datagrams are relayed one by one, each client address
with a socket of its own towards the instance (so the instance's answers find their way
back), forgotten after ``udp_idle`` seconds without traffic, as docker-proxy does.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time

from gevent.pool import Group

from relay.pump import splice

log = logging.getLogger("moorage.mesh")

CONNECT_TIMEOUT = 5.0
DATAGRAM = 65535

Target = tuple[str, int]


class _Listener:
    def __init__(self, protocol: str, bind: str, port: int, target: Target, udp_idle: float):
        self.protocol, self.port, self.target, self.udp_idle = protocol, port, target, udp_idle
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
        self.sock = socket.socket(family, kind)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((bind, port))
            if protocol == "tcp":
                self.sock.listen(128)
        except OSError:
            self.sock.close()
            raise
        self.group = Group()  # the accept (or receive) loop and every connection's greenlets
        self.sessions: dict[tuple, list] = {}  # udp: client address -> [socket, last seen]
        self.group.spawn(self._accept if protocol == "tcp" else self._receive)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        self.group.kill(block=False)
        for upstream, _ in self.sessions.values():
            with contextlib.suppress(OSError):
                upstream.close()
        self.sessions.clear()

    # -- tcp -------------------------------------------------------------------------------
    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.group.spawn(self._connect, client)

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            log.info("mesh %s/%s: %s:%s does not answer: %s", self.port, "tcp", *self.target, exc)
            client.close()
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            splice(client, upstream)
        finally:
            with contextlib.suppress(OSError):
                client.close()

    # -- udp -------------------------------------------------------------------------------
    def _receive(self) -> None:
        while True:
            try:
                data, client = self.sock.recvfrom(DATAGRAM)
            except OSError:
                return
            session = self.sessions.get(client)
            if session is None:
                upstream = socket.socket(self.sock.family, socket.SOCK_DGRAM)
                try:
                    upstream.connect(self.target)
                except OSError:
                    upstream.close()
                    continue
                session = self.sessions[client] = [upstream, time.monotonic()]
                self.group.spawn(self._answers, client, upstream)
            session[1] = time.monotonic()
            with contextlib.suppress(OSError):
                session[0].send(data)

    def _answers(self, client: tuple, upstream: socket.socket) -> None:
        """The instance's datagrams back to one client, until the session idles out."""
        try:
            while True:
                upstream.settimeout(self.udp_idle)
                try:
                    data = upstream.recv(DATAGRAM)
                except TimeoutError:
                    session = self.sessions.get(client)
                    if session is None or time.monotonic() - session[1] >= self.udp_idle:
                        return
                    continue
                except OSError:
                    return  # (an ICMP unreachable: nothing listens there any more)
                self.sessions.get(client, [None, 0])[1] = time.monotonic()
                self.sock.sendto(data, client)
        except OSError:
            return
        finally:
            self.sessions.pop(client, None)
            with contextlib.suppress(OSError):
                upstream.close()


class Mesh:
    """The listeners of one address."""

    def __init__(self, bind: str, udp_idle: float = 60.0):
        self.bind, self.udp_idle = bind, udp_idle
        self.listeners: dict[tuple[str, int], _Listener] = {}
        self.failed: set[tuple[str, int]] = set()  # logged once, retried on every apply

    def apply(self, wanted: dict[tuple[str, int], Target]) -> None:
        for key in [k for k in self.listeners if k not in wanted]:
            self.listeners.pop(key).close()
            log.info("mesh: closed %s/%s", key[1], key[0])
        for key, target in wanted.items():
            current = self.listeners.get(key)
            if current is not None:
                current.target = target  # new connections go to the new place
                continue
            try:
                self.listeners[key] = _Listener(key[0], self.bind, key[1], target, self.udp_idle)
            except OSError as exc:
                if key not in self.failed:
                    log.error("mesh: cannot listen on %s:%s/%s: %s", self.bind, key[1], key[0], exc)
                    self.failed.add(key)
                continue
            self.failed.discard(key)
            log.info("mesh: %s:%s/%s -> %s:%s", self.bind, key[1], key[0], *target)
        self.failed &= set(wanted)

    def close(self) -> None:
        self.apply({})
