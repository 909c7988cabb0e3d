"""The hosts' name resolution: a resolver with no upstream that refuses every query at once.

No name outside the stack resolves here, and the machine's own nameserver is out of the hosts'
reach: left to it, every lookup (a pull of an unknown registry, a container's `wget` of a name)
waits ~20 s for a timeout. So each host's dockerd sees its own resolv.conf naming this resolver
on the stack's bridge address, and hands the same nameserver to its containers. The resolver
answers REFUSED rather than staying silent: dockerd 20.10's embedded DNS (127.0.0.11, on
user-defined networks) sends its client nothing when the upstream is unreachable, so the client
would wait out its own timeout (5 s); a REFUSED answer is passed on at once. Names of containers
on a user-defined network are answered by the embedded DNS itself and never reach this resolver.
"""

from __future__ import annotations

import os
import socket
import sys

from .. import REPO
from .common import DNS_PORT, Fail, say
from .state import Stack

REFUSED = 5


def refusal(query: bytes) -> bytes | None:
    """The REFUSED answer to a DNS query (same ID, opcode, RD and question; no records), or None
    for what is not a query."""
    if len(query) < 12 or query[2] & 0x80:
        return None
    flags = bytes([0x80 | (query[2] & 0x79), 0x80 | REFUSED])  # QR, opcode, RD; RA, RCODE
    return query[:2] + flags + query[4:6] + b"\0\0\0\0\0\0" + query[12:]


def serve(address: str, port: int = DNS_PORT) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    print(f"refusing DNS queries on {address}:{port}", flush=True)
    while True:
        query, peer = sock.recvfrom(4096)
        answer = refusal(query)
        if answer is not None:
            sock.sendto(answer, peer)


def resolver_argv(st: Stack) -> list[str]:
    return [
        sys.executable,
        os.path.join(REPO, "scripts", "devstack"),
        "dns-refuse",
        st.gw_ip,
        "--stack",
        st.dir,
    ]


def start_resolver(st: Stack) -> None:
    if st.alive("resolver"):
        return
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((st.gw_ip, DNS_PORT))
    except OSError as exc:
        raise Fail(f"{st.gw_ip}:{DNS_PORT}/udp is taken ({exc}); the hosts' resolver needs it") from None
    finally:
        probe.close()
    say(f"starting the hosts' resolver (it refuses every name) on {st.gw_ip}:{DNS_PORT}/udp")
    st.spawn("resolver", resolver_argv(st), st.path("resolver.log"))


def write_resolv_conf(st: Stack, i: int) -> str:
    """Host i's resolv.conf: the stack's refusing resolver, no search domains."""
    path = os.path.join(st.host_dir(i), "resolv.conf")
    with open(path, "w") as fh:
        fh.write(
            f"# written by scripts/devstack: names outside the stack fail at once\nnameserver {st.gw_ip}\n"
        )
    return path
