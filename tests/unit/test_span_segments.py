"""The agent's segment checks and DNS answers (agent/segments.py), and the gateway's address
plan of a spanning network (gateway/services/spans.py), on real DNS wire bytes."""

from __future__ import annotations

import socket
import struct

import pytest

from agent.segments import SegmentError, Segments, build_reply, parse_query, validate
from gateway import store
from gateway.services import spans


def query(name: str, qtype: int = 1, qid: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p)
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, 1)


def answers(reply: bytes) -> tuple[int, list[str]]:
    """(rcode, A addresses) of a reply to a one-question query."""
    rcode, count = struct.unpack("!H", reply[2:4])[0] & 0xF, struct.unpack("!H", reply[6:8])[0]
    pos = 12
    while reply[pos]:
        pos += reply[pos] + 1
    pos += 5
    found = []
    for _ in range(count):
        length = struct.unpack("!H", reply[pos + 10 : pos + 12])[0]
        found.append(socket.inet_ntoa(reply[pos + 12 : pos + 12 + length]))
        pos += 12 + length
    return rcode, found


def segment(vni: int, gateway: str, endpoints: list[dict]) -> dict:
    return {
        "vni": vni,
        "mtu": 1450,
        "bridge": f"msp{vni}",
        "gateway": gateway,
        "peers": ["198.18.1.12"],
        "endpoints": endpoints,
    }


@pytest.fixture
def segments():
    s = Segments()
    s.specs[4096] = validate(
        segment(
            4096,
            "198.19.128.254",
            [
                {"container": "c-db", "address": "198.19.128.1", "names": ["db", "store"]},
                {"container": "c-app", "address": "198.19.128.2", "names": ["app"]},
            ],
        )
    )
    s.specs[4097] = validate(
        segment(
            4097,
            "198.19.129.254",
            [
                {"container": "c-app", "address": "198.19.129.1", "names": ["app"]},
                {"container": "c-cache", "address": "198.19.129.2", "names": ["cache"]},
            ],
        )
    )
    return s


def test_names_of_the_askers_networks(segments):
    # app is on both networks: it resolves db on one and cache on the other
    assert answers(segments.answer(4096, query("db"), "198.19.128.2")) == (0, ["198.19.128.1"])
    assert answers(segments.answer(4096, query("STORE."), "198.19.128.2")) == (0, ["198.19.128.1"])
    assert answers(segments.answer(4096, query("cache"), "198.19.128.2")) == (0, ["198.19.129.2"])
    # db is not on the second network: cache is no name of its
    assert answers(segments.answer(4096, query("cache"), "198.19.128.1")) == (3, [])
    # an unknown single-label name: NXDOMAIN at once
    assert answers(segments.answer(4096, query("nosuch"), "198.19.128.2")) == (3, [])
    # a known name asked for AAAA: no error, no address (so resolvers use the A answer)
    assert answers(segments.answer(4096, query("db", qtype=28), "198.19.128.2")) == (0, [])


def test_qualified_names_go_upstream_and_fail_fast_without_one(segments):
    # the asker's own DNS servers: none answers on this address, so SERVFAIL (not a hang)
    segments.specs[4096]["endpoints"][1]["dns"] = ["127.0.0.9"]
    reply = segments.answer(4096, query("example.org"), "198.19.128.2")
    assert answers(reply)[0] == 2


def test_malformed_queries_get_no_answer():
    assert parse_query(b"\x00\x01") is None
    assert parse_query(query("db")[:-3]) is None
    reply = bytearray(query("db"))
    reply[2] |= 0x80  # a response, not a query
    assert parse_query(bytes(reply)) is None
    assert build_reply(1, 0x0100, query("db")[12:], 0, ["198.19.128.1"])[:2] == b"\x00\x01"


@pytest.mark.parametrize(
    "change",
    [
        {"bridge": "docker0"},
        {"bridge": "msp1; rm -rf /"},
        {"vni": 0},
        {"vni": 1 << 24},
        {"mtu": 100},
        {"gateway": "not-an-address"},
        {"peers": ["198.18.1.12", "eth0"]},
    ],
)
def test_segments_out_of_bounds_are_refused(change):
    with pytest.raises(SegmentError) as caught:
        validate({**segment(4096, "198.19.128.254", []), **change})
    assert caught.value.status == 400


def test_address_plan():
    network = store.Network(name="n", subnet="198.19.128.0/24", vni=4096)
    # each instance's gateway from the top, containers from the bottom, never the same
    assert [spans.gateway_address(network, slot) for slot in range(3)] == [
        "198.19.128.254",
        "198.19.128.253",
        "198.19.128.252",
    ]
    _, free = spans._container_addresses(network)
    assert free[0] == "198.19.128.1" and free[-1] == "198.19.128.190"
    assert not {spans.gateway_address(network, s) for s in range(64)} & set(free)
    with pytest.raises(Exception) as caught:
        spans.gateway_address(network, 64)
    assert "larger --subnet" in str(caught.value)


def test_the_instances_responder_answers_its_containers_only(segments):
    # app (on both networks) asks the instance's own responder: the names of both networks
    assert answers(segments.answer(0, query("db"), "198.19.128.2")) == (0, ["198.19.128.1"])
    assert answers(segments.answer(0, query("cache"), "198.19.129.1")) == (0, ["198.19.129.2"])
    assert answers(segments.answer(0, query("nosuch"), "198.19.128.2")) == (3, [])
    # an address that is no container of this instance (no dockerd to ask here): no answer,
    # the underlay is not an open resolver
    assert segments.answer(0, query("db"), "198.18.1.12") is None
    assert segments.answer(0, query("example.org"), "198.18.1.12") is None
