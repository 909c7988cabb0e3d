"""Ports for the services the dev scripts start on loopback (scripts/devstack, keystone, nova).

A port from bind(("127.0.0.1", 0)) comes from the kernel's ephemeral range, the same range
outgoing connections take their local ports from: between choosing it and the service binding
it, a client connection on loopback (to MariaDB, Keystone, a daemon...) can take it, and the
service then fails with "Address already in use" (seen in the nova lane: placement's port).
So ports are chosen below that range, where no outgoing connection lands.
"""

from __future__ import annotations

import random
import socket

EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
SPAN = 12000  # how far below the ephemeral range to look


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Could a server (SO_REUSEADDR, as they all set it) listen on host:port?"""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def _ephemeral_low() -> int:
    try:
        with open(EPHEMERAL_RANGE) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A free loopback port below the ephemeral range (else, rarely, one from it)."""
    low = _ephemeral_low()
    first = max(1024, low - SPAN)
    for _ in range(200):
        port = random.randint(first, low - 1)
        if port_free(port):
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
