"""Spanning networks on this instance: a VXLAN segment per network, its guard, its names.

The gateway sends each segment's desired state (``PUT`` under gateway/wire.py
AGENT_SEGMENTS_PATH, and the whole set in its registration answer); this module makes the
instance match it, idempotently, and again every few seconds (dockerd recreates a network's
bridge without the VXLAN port when it restarts):

- the segment: a VXLAN device (one VNI per network, unicast: an all-zero forwarding entry per
  peer instance, no multicast) made a port of the bridge dockerd made for the network
  (``com.docker.network.bridge.name``), with the network's MTU;
- the guard: VXLAN is admitted only from the instances that carry this instance's segments,
  each for the VNIs of the segments it carries (iptables chain MOORAGE-VXLAN on INPUT, the VNI
  read with xt_u32), and no container here may send VXLAN at all (a FORWARD drop), so no
  other tenant's container, nor another network's instance, can inject frames into a segment;
- the names: a small DNS responder on this instance's gateway address of each segment, where
  the gateway points its containers' DNS (HostConfig.Dns). Docker's embedded resolver answers
  the names of containers on its own daemon and forwards the rest here. The responder answers
  the names and aliases of the querying container's networks, NXDOMAIN at once for any other
  single-label name, and forwards qualified names to the container's own --dns, else to this
  instance's resolvers;
- the instance's own responder, on its underlay address (``serve_names_at``): where the gateway
  points the DNS of a container created on no spanning network (its project's default
  bridge), so that a network it is connected to later resolves too. It knows an asker by its
  address on any of this daemon's networks (asking dockerd for addresses it has not seen),
  answers as a segment's responder does, and answers nothing to anyone who is not a
  container here (the underlay is not an open resolver).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import socket
import struct
import subprocess
import threading
import time
from typing import Any, cast

import gevent
from gevent.server import DatagramServer

from relay.upstream import Endpoint, UpstreamError, request

log = logging.getLogger("moorage.agent")

GUARD_CHAIN = "MOORAGE-VXLAN"
BRIDGE_NAME = re.compile(r"^msp[0-9]{1,8}$")  # gateway/services/spans.py bridge_name
IP_FREEBIND = 15  # bind the responder before dockerd has put the address on the bridge
DNS_TTL = 5
HOST_RESPONDER = 0  # the key of the instance's own responder among the segments' (VNIs are > 0)
ASKERS_REFRESH = 0.5  # seconds between two reads of dockerd's container addresses


class SegmentError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _run(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, timeout=20, check=False)
    if check and proc.returncode != 0:
        raise SegmentError(500, f"{' '.join(argv)}: {proc.stderr.decode(errors='replace').strip()}")
    return proc


def _address(value) -> str:
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        raise SegmentError(400, f"not an IPv4 address: {value!r}") from None


def validate(spec) -> dict:
    """The segment as the gateway sent it, checked field by field (400 on anything odd)."""
    if not isinstance(spec, dict):
        raise SegmentError(400, "a segment is a JSON object")
    try:
        vni, mtu, port = int(spec["vni"]), int(spec["mtu"]), int(spec.get("port", 4789))
        bridge = str(spec["bridge"])
        endpoints = [
            {
                "container": str(e["container"]),
                "address": _address(e["address"]),
                "names": [str(n).lower() for n in e.get("names") or []],
                "dns": [_address(d) for d in e.get("dns") or []],
            }
            for e in spec.get("endpoints") or []
        ]
        clean = {
            "vni": vni,
            "mtu": mtu,
            "port": port,
            "bridge": bridge,
            "gateway": _address(spec["gateway"]),
            "peers": sorted({_address(p) for p in spec.get("peers") or []}),
            "endpoints": endpoints,
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise SegmentError(400, f"malformed segment: {exc}") from None
    if not (0 < vni < 1 << 24 and 576 <= mtu <= 9000 and 0 < port < 65536 and BRIDGE_NAME.match(bridge)):
        raise SegmentError(400, f"segment out of range: vni {vni}, mtu {mtu}, port {port}, bridge {bridge}")
    return clean


def vxlan_name(vni: int) -> str:
    return f"mvx{vni}"


def _link_exists(name: str) -> bool:
    return _run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def _fdb(device: str) -> list[tuple[str, str]]:
    """(MAC, peer address) of every forwarding entry of a VXLAN port that names a peer: the
    all-zero one per peer, and the MACs learnt from each."""
    out = _run(["bridge", "fdb", "show", "dev", device], check=False).stdout.decode()
    found = []
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 3 and words[1] == "dst":
            found.append((words[0], words[2]))
    return found


class Segments:
    def __init__(self, docker: Endpoint | None = None):
        self.specs: dict[int, dict] = {}
        self.responders: dict[int, tuple[str, DatagramServer]] = {}
        self._lock = threading.RLock()
        self.docker = docker  # asked which container holds an address (the instance's responder)
        self.host_address = ""  # where the instance's own responder answers (serve_names_at)
        self._host_failure = ""
        self._askers: dict[str, str] = {}  # address -> container ID, as dockerd last listed them
        self._askers_read = 0.0

    def serve_names_at(self, address: str) -> None:
        """Answer names on ``address`` (the underlay's, agent/registration.py underlay) for every
        container of this instance; again every reconcile, so a failed bind is retried."""
        self.host_address = address
        self._start_host_responder()

    def _start_host_responder(self) -> None:
        if not self.host_address:
            return
        try:
            self._start_responder({"vni": HOST_RESPONDER, "gateway": self.host_address})
        except OSError as exc:
            if str(exc) != self._host_failure:  # once, not every reconcile
                log.warning(
                    "no name responder on %s:53 (tried again every reconcile): %s", self.host_address, exc
                )
            self._host_failure = str(exc)
        else:
            self._host_failure = ""

    # -- the gateway's requests ------------------------------------------------------------------
    def put(self, spec) -> dict:
        clean = validate(spec)
        with self._lock:
            self.specs[clean["vni"]] = clean
            self._apply(clean)
            self._guard()
        return {"vni": clean["vni"], "peers": clean["peers"], "endpoints": len(clean["endpoints"])}

    def delete(self, vni: int) -> None:
        with self._lock:
            self.specs.pop(vni, None)
            self._stop_responder(vni)
            if _link_exists(vxlan_name(vni)):
                _run(["ip", "link", "del", vxlan_name(vni)], check=False)
            self._guard()

    def replace_all(self, specs) -> None:
        """The whole desired set (the gateway's registration answer)."""
        wanted = {}
        for spec in specs or []:
            try:
                clean = validate(spec)
            except SegmentError as exc:
                log.warning("segment from the gateway refused: %s", exc)
                continue
            wanted[clean["vni"]] = clean
        with self._lock:
            for vni in set(self.specs) - set(wanted):
                self.delete(vni)
            self.specs.update(wanted)
        self.reconcile()

    def reconcile(self) -> None:
        with self._lock:
            self._start_host_responder()
            for spec in list(self.specs.values()):
                try:
                    self._apply(spec)
                except SegmentError as exc:
                    log.warning("segment %s: %s", spec["vni"], exc)
            if self.specs:
                try:
                    self._guard()
                except SegmentError as exc:
                    log.warning("VXLAN guard: %s", exc)

    def reconcile_forever(self, interval: float = 5.0) -> None:
        while True:
            gevent.sleep(interval)
            self.reconcile()

    # -- the instance's side ---------------------------------------------------------------------
    def _apply(self, spec: dict) -> None:
        bridge, vx = spec["bridge"], vxlan_name(spec["vni"])
        if not _link_exists(bridge):
            raise SegmentError(
                409, f"the network's bridge {bridge} is not on this instance: create the network first"
            )
        if not _link_exists(vx):
            _run(
                [
                    "ip",
                    "link",
                    "add",
                    vx,
                    "type",
                    "vxlan",
                    "id",
                    str(spec["vni"]),
                    "dstport",
                    str(spec["port"]),
                ]
            )
        _run(["ip", "link", "set", vx, "mtu", str(spec["mtu"]), "master", bridge, "up"])
        entries, want = _fdb(vx), set(spec["peers"])
        have = {peer for mac, peer in entries if mac == "00:00:00:00:00:00"}
        for peer in sorted(want - have):
            _run(["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", vx, "dst", peer])
        # A peer that left (its last member there went): its entry, and what was learnt from it.
        for mac, peer in entries:
            if peer not in want:
                _run(["bridge", "fdb", "del", mac, "dev", vx, "dst", peer], check=False)
        self._start_responder(spec)

    def _guard(self) -> None:
        ports = sorted({s["port"] for s in self.specs.values()})
        ipt = ["iptables", "-w", "10"]
        _run([*ipt, "-N", GUARD_CHAIN], check=False)
        # A peer's datagram is admitted for the segments that peer carries only (the VNI read
        # from the VXLAN header): in shared tenancy an instance carries other projects'
        # networks, and what one of them sends must not reach a segment it does not carry.
        rules = [
            ["-s", p, "-m", "u32", "--u32", _vni_match(s["vni"]), "-j", "RETURN"]
            for s in sorted(self.specs.values(), key=lambda s: s["vni"])
            for p in s["peers"]
        ] + [["-j", "DROP"]]
        listed = _run([*ipt, "-S", GUARD_CHAIN]).stdout.decode().split("\n")
        now = [line.split()[2:] for line in listed if line.startswith(f"-A {GUARD_CHAIN} ")]
        if now != [_normal(r) for r in rules]:
            _run([*ipt, "-F", GUARD_CHAIN])
            for rule in rules:
                _run([*ipt, "-A", GUARD_CHAIN, *rule])
        for port in ports:
            for chain, target in (("INPUT", GUARD_CHAIN), ("FORWARD", "DROP")):
                rule = [chain, "-p", "udp", "--dport", str(port), "-j", target]
                if _run([*ipt, "-C", *rule], check=False).returncode != 0:
                    _run([*ipt, "-I", chain, "1", *rule[1:]])

    # -- names -----------------------------------------------------------------------------------
    def _start_responder(self, spec: dict) -> None:
        vni, gateway = spec["vni"], spec["gateway"]
        running = self.responders.get(vni)
        if running and running[0] == gateway:
            return
        self._stop_responder(vni)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((gateway, 53))

        def handle(data, source) -> None:
            self._serve(server, vni, data, source)

        server = DatagramServer(sock, cast(Any, handle))
        server.start()
        self.responders[vni] = (gateway, server)
        log.info("segment %s: answering names on %s:53", vni, gateway)

    def _stop_responder(self, vni: int) -> None:
        running = self.responders.pop(vni, None)
        if running:
            running[1].stop()

    def _serve(self, server: DatagramServer, vni: int, data: bytes, source) -> None:
        try:
            reply = self.answer(vni, data, source[0])
        except Exception:  # a malformed query must not stop the responder
            log.exception("segment %s: DNS query from %s", vni, source[0])
            return
        if reply:
            server.sendto(reply, source)

    def lookup(self, vni: int, source: str, name: str) -> tuple[bool, list[str], list[str]]:
        """(known, its addresses, the asker's own DNS servers) for ``name`` asked from
        ``source`` on segment ``vni``: the names of every network the asker is on here."""
        spec = self.specs.get(vni)
        if spec is None:
            return False, [], []
        asker = next((e for e in spec["endpoints"] if e["address"] == source), None)
        networks = [spec] if asker is None else self._networks_of(asker["container"])
        found = [e["address"] for s in networks for e in s["endpoints"] if name in e["names"]]
        return bool(found), found, asker["dns"] if asker else []

    def _networks_of(self, container: str) -> list[dict]:
        return [s for s in self.specs.values() if any(e["container"] == container for e in s["endpoints"])]

    def lookup_host(self, source: str, name: str) -> tuple[bool, list[str], list[str]] | None:
        """As ``lookup``, for the instance's own responder: None when ``source`` is no
        container of this instance (no answer at all)."""
        container = next(
            (e["container"] for s in self.specs.values() for e in s["endpoints"] if e["address"] == source),
            None,
        )
        networks = self._networks_of(container) if container else []
        if not networks:
            # By its address on another network (its default bridge): dockerd says whose it
            # is; an address seen before may be another container's now, so it is asked again.
            container = self.container_at(source)
            if container is None:
                return None
            networks = self._networks_of(container)
        found = [e["address"] for s in networks for e in s["endpoints"] if name in e["names"]]
        dns = next((e["dns"] for s in networks for e in s["endpoints"] if e["container"] == container), [])
        return bool(found), found, dns

    def container_at(self, address: str) -> str | None:
        """The container of this daemon holding ``address`` on any of its networks: dockerd's
        list, read anew for each asker that is on no segment, at most every ASKERS_REFRESH
        seconds (an asker waits for the next read rather than get an answer from an old one)."""
        asked = time.monotonic()
        wait = self._askers_read + ASKERS_REFRESH - asked
        if wait > 0:
            gevent.sleep(wait)
        if self._askers_read < asked:  # no read began since this asker came
            self._askers_read = time.monotonic()
            self._askers = self._read_askers()
        return self._askers.get(address)

    def _read_askers(self) -> dict[str, str]:
        if self.docker is None:
            return {}
        try:
            resp = request(self.docker, "GET", "/containers/json", [], connect_timeout=3, timeout=10)
            listed = json.loads(resp.read()) if resp.status == 200 else []
        except (UpstreamError, OSError, ValueError) as exc:
            log.warning("name responder: dockerd's container list: %s", exc)
            return self._askers
        found = {}
        for container in listed if isinstance(listed, list) else []:
            networks = ((container.get("NetworkSettings") or {}).get("Networks")) or {}
            for endpoint in networks.values():
                if isinstance(endpoint, dict) and endpoint.get("IPAddress"):
                    found[str(endpoint["IPAddress"])] = str(container.get("Id"))
        return found

    def answer(self, vni: int, data: bytes, source: str) -> bytes | None:
        query = parse_query(data)
        if query is None:
            return None
        qid, flags, name, qtype, question = query
        if vni == HOST_RESPONDER:
            looked = self.lookup_host(source, name.rstrip(".").lower())
            if looked is None:
                return None  # no container of this instance
            known, found, dns = looked
        else:
            known, found, dns = self.lookup(vni, source, name.rstrip(".").lower())
        if known:
            records = found if qtype in (1, 255) else []
            return build_reply(qid, flags, question, 0, records)
        if "." not in name.rstrip("."):
            return build_reply(qid, flags, question, 3, [])  # NXDOMAIN: no such single-label name
        return forward(data, dns or instance_resolvers()) or build_reply(qid, flags, question, 2, [])


def parse_query(data: bytes):
    """(id, flags, name, qtype, question bytes) of a one-question query, or None."""
    if len(data) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    labels, pos = [], 12
    while True:
        if pos >= len(data):
            return None
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0 or pos + 1 + length > len(data):
            return None
        labels.append(data[pos + 1 : pos + 1 + length].decode("ascii", "replace"))
        pos += 1 + length
    if pos + 4 > len(data):
        return None
    qtype = struct.unpack("!H", data[pos : pos + 2])[0]
    return qid, flags, ".".join(labels), qtype, data[12 : pos + 4]


def build_reply(qid: int, flags: int, question: bytes, rcode: int, addresses: list[str]) -> bytes:
    # QR, the query's opcode and RD, RA; authoritative for the segment's own names.
    out_flags = 0x8000 | (flags & 0x7900) | 0x0080 | (0x0400 if rcode == 0 else 0) | rcode
    head = struct.pack("!HHHHHH", qid, out_flags, 1, len(addresses), 0, 0)
    answers = b"".join(
        struct.pack("!HHHIH", 0xC00C, 1, 1, DNS_TTL, 4) + socket.inet_aton(a) for a in addresses
    )
    return head + question + answers


def instance_resolvers() -> list[str]:
    try:
        with open("/etc/resolv.conf") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                found.append(str(ipaddress.IPv4Address(parts[1])))
            except ValueError:
                continue
    return found


def forward(data: bytes, servers: list[str], timeout: float = 2.0) -> bytes | None:
    """The first answer of ``servers`` to the query, or None."""
    for server in servers[:3]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.settimeout(timeout)
            sock.sendto(data, (server, 53))
            reply, _ = sock.recvfrom(4096)
            if reply[:2] == data[:2]:
                return reply
        except OSError:
            continue
        finally:
            sock.close()
    return None


def _vni_match(vni: int) -> str:
    """An xt_u32 test that the VXLAN header's VNI is ``vni``: the 4 bytes at 12 past the IP
    header (8 of UDP, 4 into VXLAN's) shifted right by 8, as ``iptables -S`` prints it back."""
    return f"0x0>>0x16&0x3c@0xc>>0x8={vni:#x}"


def _normal(rule: list[str]) -> list[str]:
    """A rule as ``iptables -S`` prints it back (addresses with their /32, u32 tests quoted)."""
    out = []
    for i, part in enumerate(rule):
        before = rule[i - 1] if i else ""
        if before == "-s" and "/" not in part:
            part = f"{part}/32"
        elif before == "--u32":
            part = f'"{part}"'
        out.append(part)
    return out
