"""Splice two sockets both ways with half-close: the heart of attach, exec and `run -it`.

client → upstream: bytes as they come; at the client's EOF (stdin closed) the upstream's
write side is shut, so the process in the container sees EOF on its stdin.
upstream → client: bytes as they come; at the upstream's EOF (the process exited, or the
daemon detached) the client's write side is shut and the session ends, whatever the other
direction is doing, so nothing hangs waiting for a client that has nothing more to say.
"""

from __future__ import annotations

import contextlib
import socket

import gevent

from relay.upstream import YIELD_EVERY, relay_buffer


def _shut_write(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


def _copy(src: socket.socket, dst: socket.socket, first: bytes = b"") -> None:
    try:
        if first:
            dst.sendall(first)
        since = 0
        # Received into one buffer used again and again (SocketReader.read_into says why).
        with relay_buffer() as buf, memoryview(buf) as view:
            while True:
                n = src.recv_into(buf)
                if not n:
                    break
                dst.sendall(view[:n])
                since += n
                if since >= YIELD_EVERY:  # a stream that never waits lets the others run (see there)
                    since = 0
                    gevent.sleep(0)
    except OSError:
        pass
    finally:
        _shut_write(dst)


def splice(
    client: socket.socket, upstream: socket.socket, *, from_upstream: bytes = b"", from_client: bytes = b""
) -> None:
    """Pump until the upstream has finished sending. ``from_*`` are bytes already read."""
    upward = gevent.spawn(_copy, client, upstream, from_client)
    try:
        _copy(upstream, client, from_upstream)
    finally:
        # The output is over: give stdin a moment to drain what is in flight, then stop it.
        upward.join(timeout=0.2)
        upward.kill(block=True, timeout=1)
        with contextlib.suppress(OSError):
            upstream.close()
