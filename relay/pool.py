"""Idle keep-alive connections, by endpoint, for one process.

Opening a connection for every request cost more than the request: on a proxied `docker ps`,
the gateway's connect to the agent and the agent's to dockerd (which spends about 280 µs on a
request over a fresh connection against 165 µs over a kept one) were a third of the time the
gateway added. Each gateway worker keeps the connections it has finished with to each agent,
and each agent those to its dockerd, and takes the most recently used one for the next request.

A kept connection can be closed by the other side while it waits (an agent restarted, an idle
timeout): ``take`` drops any connection that is readable, which an idle HTTP connection is only
when its peer has closed it (or broken the protocol), and any kept longer than ``idle_seconds``,
shorter than the agent's own idle timeout (agent/server.py). A request that still meets a dead
connection is sent again on a fresh one by its caller, when nothing of the answer had come.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Hashable


def is_stale(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: its peer's close, or bytes it
    should not have sent. Either way it cannot carry another request."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class Pool:
    def __init__(self, per_endpoint: int = 16, idle_seconds: float = 20.0):
        self.per_endpoint = per_endpoint
        self.idle_seconds = idle_seconds
        self._idle: dict[Hashable, list[tuple[socket.socket, float]]] = {}
        self._pid = os.getpid()

    def _forked(self) -> None:
        # A worker forked from a process that had kept connections must not share them: the
        # copies are dropped (not shut down, which would end the parent's too).
        if self._pid != os.getpid():
            self._idle = {}
            self._pid = os.getpid()

    def take(self, key: Hashable) -> socket.socket | None:
        """A kept connection to ``key`` that is still good, or None."""
        self._forked()
        kept = self._idle.get(key)
        now = time.monotonic()
        while kept:
            sock, since = kept.pop()
            if now - since < self.idle_seconds and not is_stale(sock):
                return sock
            with contextlib.suppress(OSError):
                sock.close()
        return None

    def give(self, key: Hashable, sock: socket.socket) -> None:
        """Keep ``sock``, finished with, for the next request to ``key``."""
        self._forked()
        kept = self._idle.setdefault(key, [])
        if len(kept) >= self.per_endpoint:
            with contextlib.suppress(OSError):
                sock.close()
            return
        kept.append((sock, time.monotonic()))

    def clear(self) -> None:
        """Close every kept connection (a process that stops)."""
        for kept in self._idle.values():
            for sock, _ in kept:
                with contextlib.suppress(OSError):
                    sock.close()
        self._idle = {}
