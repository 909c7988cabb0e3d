"""The stack's network: a bridge on 198.18.X.0/24 and, per host, a namespace on a veth."""

from __future__ import annotations

import fcntl
import ipaddress
import os
import shutil

from .common import NET_PREFIX, NETNS_DIR, REFERENCE, RUN_BASE, Fail, run, say
from .state import Stack


def link_exists(name: str, netns: str | None = None) -> bool:
    argv = ["ip"] + (["-n", netns] if netns else []) + ["link", "show", "dev", name]
    return run(argv, check=False, timeout=10).returncode == 0


def used_subnets() -> dict[int, str]:
    """The X of every 198.18.X.0/24 that overlaps an address of the root namespace: {X: dev}."""
    out = run(["ip", "-o", "-4", "addr", "show"], timeout=10).stdout.decode()
    used = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[2] != "inet":
            continue
        try:
            net = ipaddress.ip_interface(parts[3]).network
        except ValueError:
            continue
        for x in range(1, 255):
            if x not in used and net.overlaps(ipaddress.ip_network(f"{NET_PREFIX}.{x}.0/24")):
                used[x] = parts[1]
    return used


def setup_network(st: Stack) -> None:
    os.makedirs(RUN_BASE, exist_ok=True)
    with open(f"{RUN_BASE}/.net.lock", "w") as lockfh:
        fcntl.flock(lockfh, fcntl.LOCK_EX)  # serialises subnet choice between stacks
        used = used_subnets()
        mine = [x for x, dev in used.items() if dev == st.bridge]
        if mine:
            x = mine[0]
        else:
            x = st.state.get("subnet") or int(st.hash, 16) % 254 + 1
            tries = 0
            while x in used:
                x = x % 254 + 1
                tries += 1
                if tries > 254:
                    raise Fail(f"every {NET_PREFIX}.X.0/24 subnet is in use")
        if st.state.get("subnet") != x:
            st.state["subnet"] = x
            st.save()
        if not link_exists(st.bridge):
            run(["ip", "link", "add", st.bridge, "type", "bridge"])
        run(["ip", "addr", "replace", f"{st.gw_ip}/24", "dev", st.bridge])
        run(["ip", "link", "set", st.bridge, "up"])
    allow_bridge_forwarding(st)
    if not st.external:
        for i in (REFERENCE, *range(1, st.nhosts + 1)):
            setup_host_net(st, i)


def setup_host_net(st: Stack, i: int) -> None:
    ns, veth, peer = st.netns(i), st.veth(i), st.peer(i)
    if not os.path.exists(st.netns_path(i)):
        run(["ip", "netns", "add", ns])
    if not link_exists(veth):
        if link_exists(peer):
            run(["ip", "link", "del", peer])
        if link_exists("eth0", ns):
            run(["ip", "-n", ns, "link", "del", "eth0"])
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", peer])
        run(["ip", "link", "set", peer, "netns", ns])
        run(["ip", "-n", ns, "link", "set", peer, "name", "eth0"])
    run(["ip", "link", "set", veth, "master", st.bridge])
    run(["ip", "link", "set", veth, "up"])
    run(["ip", "-n", ns, "addr", "replace", f"{st.host_ip(i)}/24", "dev", "eth0"])
    run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "-n", ns, "route", "replace", "default", "via", st.gw_ip])


def _fwd_rule(st: Stack) -> list[str]:
    return [
        "FORWARD",
        "-i",
        st.bridge,
        "-o",
        st.bridge,
        "-j",
        "ACCEPT",
        "-m",
        "comment",
        "--comment",
        f"moorage devstack {st.hash}",
    ]


def allow_bridge_forwarding(st: Stack) -> None:
    """Hosts reach each other across the bridge even where FORWARD's policy is DROP
    (a root-namespace dockerd sets it, and br_netfilter sends bridged frames through it)."""
    if not shutil.which("iptables"):
        return
    if run(["iptables", "-w", "5", "-C", *_fwd_rule(st)], check=False, timeout=15).returncode != 0:
        proc = run(["iptables", "-w", "5", "-I", *_fwd_rule(st)], check=False, timeout=15)
        if proc.returncode != 0:
            say(
                f"warning: could not add an iptables FORWARD rule for {st.bridge}: "
                f"{proc.stderr.decode().strip()}"
            )


def teardown_network(st: Stack) -> None:
    if shutil.which("iptables"):
        for _ in range(10):
            if run(["iptables", "-w", "5", "-D", *_fwd_rule(st)], check=False, timeout=15).returncode:
                break
    prefix = f"mrg{st.hash}"
    out = run(["ip", "-o", "link", "show"], timeout=10).stdout.decode()
    for line in out.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(prefix) and name != st.bridge:
            run(["ip", "link", "del", name], check=False, timeout=10)
    try:
        names = [n for n in os.listdir(NETNS_DIR) if n.startswith(f"mrg-{st.hash}-h")]
    except FileNotFoundError:
        names = []
    for name in names:
        run(["ip", "netns", "del", name], check=False, timeout=10)
        if os.path.exists(f"{NETNS_DIR}/{name}"):
            say(f"warning: could not delete network namespace {name}")
    if link_exists(st.bridge):
        run(["ip", "link", "del", st.bridge], timeout=10)
