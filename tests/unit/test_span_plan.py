"""The gateway's choices for spanning networks (gateway/services/spans.py, gateway/store/spans.py)
on a real store, SQLite and PostgreSQL: the MTU from the agents' underlay reports, and subnets
and VNIs that stay distinct when many creates choose at once; and the agent's underlay report
(agent/registration.py) on this machine's own interfaces."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from agent.registration import underlay
from gateway import config, store
from gateway.services import spans


@pytest.fixture
def settings(db_url):
    s = config.Settings(gateway=config.GatewaySettings(database=db_url))
    store.init(s.gateway.database)
    yield s
    store.database.obj.close()


def add_instance(uuid: str, mtu: int | None, project: str | None = None, daemon_down: bool = False):
    store.Instance.create(
        uuid=uuid,
        agent_url=f"tcp://198.18.7.{len(uuid)}:1",
        agent_secret="s",
        project=project,
        daemon_down=daemon_down,
    )
    spans.record_underlay(uuid, {"underlay": {"address": "198.18.7.9", "mtu": mtu}})


def test_the_mtu_is_the_smallest_underlay_minus_vxlan():
    assert spans.choose_mtu(1500, 1450, None) == 1450
    assert spans.choose_mtu(9000, 1450, "") == 8950
    assert spans.choose_mtu(None, 1450, None) == 1450  # no agent reported one: the setting
    assert spans.choose_mtu(1500, 1450, "1400") == 1400  # the tenant's own, when lower
    assert spans.choose_mtu(1500, 1450, "9000") == 1450  # never above the underlay's
    assert spans.choose_mtu(600, 1450, None) == 576


def test_the_floor_counts_the_instances_that_may_carry_the_project(settings):
    add_instance("i-own", 9000, project="pa")
    add_instance("i-free", 1500)
    add_instance("i-other", 1400, project="pb")
    add_instance("i-down", 1300, daemon_down=True)
    add_instance("i-silent", None)  # an agent that reports no MTU
    assert store.spans.mtu_floor("pa") == 1500  # its own and the free ones (dedicated)
    assert store.spans.mtu_floor(None) == 1400  # every live one (shared)
    row = store.Instance.get_by_id("i-own")
    assert (row.underlay_address, row.underlay_mtu) == ("198.18.7.9", 9000)
    spans.record_underlay("i-own", {"underlay": {"address": "not an address", "mtu": 10}})
    assert store.Instance.get_by_id("i-own").underlay_mtu == 9000  # nonsense is left out


def test_concurrent_creates_get_distinct_subnets_and_vnis(settings):
    """Many creates of many projects at once (shared tenancy: subnets unique across projects),
    each in its own transaction and connection, as replicas make them."""
    errors: list[BaseException] = []
    start = threading.Barrier(12)

    def create(i: int) -> None:
        try:
            start.wait()
            with store.write_transaction():
                store.spans.record(
                    f"n{i:02d}",
                    f"p{i % 4}",
                    "net",
                    f"net{i}",
                    subnet=None,
                    pool="198.19.128.0/17",
                    prefix=24,
                    mtu=1450,
                    spec={},
                    per_project=False,
                )
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)
        finally:
            store.database.obj.close()

    threads = [threading.Thread(target=create, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = list(store.Network.select())
    assert len(rows) == 12
    assert len({r.subnet for r in rows}) == 12 and len({r.vni for r in rows}) == 12


def _own_addresses() -> dict[str, str]:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True).stdout
    return {line.split()[3].split("/")[0]: line.split()[1] for line in out.splitlines()}


def test_the_agent_reports_its_underlay():
    own = {a: d for a, d in _own_addresses().items() if not a.startswith("127.")}
    if not own:
        pytest.skip("this machine has no IPv4 address besides loopback")
    address, device = next(iter(own.items()))
    with open(f"/sys/class/net/{device}/mtu") as fh:
        mtu = int(fh.read())
    # its advertised address, when it is one of its own
    assert underlay(f"tcp://{address}:2376", "http://198.18.255.1:8080") == {"address": address, "mtu": mtu}
    # else the source of its route to the gateway
    found = underlay("tcp://0.0.0.0:2376", f"http://{address}:8080")
    assert found.get("address") in _own_addresses()


def _network(project: str = "pa") -> store.Network:
    with store.write_transaction():
        return store.spans.record(
            "n" * 64, project, "mynet", "mynet-d", subnet=None, pool="198.19.0.0/16",
            prefix=24, mtu=1450, spec={}, per_project=True,
        )  # fmt: skip


def test_a_held_address_keeps_the_network_from_leaving(settings):
    add_instance("i-1", 1500, project="pa")
    network = _network()
    with store.write_transaction():
        store.spans.member_slot(network, "i-1")
        store.spans.take_address(network, ["198.19.0.2"], "c1", "i-1", ["c1"], [])
        assert store.spans.start_leaving(network, "i-1", 1.0) is None
    with store.write_transaction():
        store.spans.release("c1", network)
        joined = store.spans.start_leaving(network, "i-1", 1.0)
        assert joined and store.spans.start_leaving(network, "i-1", 2.0) is None  # one remover
    with store.write_transaction():
        assert store.spans.end_leaving(network, "i-1", joined) is False  # the copy stayed
    assert store.spans.members(network) and not store.spans.is_leaving(
        store.NetworkMember.get(store.NetworkMember.network == network.id)
    )


def test_a_create_waits_for_a_leave_and_then_makes_the_copy_again(settings, monkeypatch):
    """A create that takes its address while the network leaves the instance does not use the
    copy being removed: it waits for the leave to end and gets a new joining (so every
    worker's memory of the copy it made misses, and the copy is made again)."""
    add_instance("i-1", 1500, project="pa")
    network = _network()
    with store.write_transaction():
        before = str(store.spans.member_slot(network, "i-1").joined)
        joined = store.spans.start_leaving(network, "i-1", time.time())
    assert joined == before
    instance = store.Instance.get_by_id("i-1")
    got: list[store.NetworkMember] = []
    with store.write_transaction():
        store.spans.take_address(network, ["198.19.0.3"], "create-x", "i-1", ["c2"], [])
    waiter = threading.Thread(target=lambda: got.append(spans._member_once_left(network, instance)))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # waits while the copy is being removed
    with store.write_transaction():
        assert store.spans.end_leaving(network, "i-1", None) is False  # a create holds an address
    waiter.join(5)
    assert got and not store.spans.is_leaving(got[0]) and got[0].joined not in (before, None)


def test_a_leave_whose_remover_died_is_taken_over(settings, monkeypatch):
    add_instance("i-1", 1500, project="pa")
    network = _network()
    with store.write_transaction():
        store.spans.member_slot(network, "i-1")
        assert store.spans.start_leaving(network, "i-1", 1.0)  # long ago
    member = spans._member_once_left(network, store.Instance.get_by_id("i-1"))
    assert not store.spans.is_leaving(member)


def test_a_spanning_network_alone_keeps_no_instance_from_being_reaped(settings):
    """A spanning network's row is no instance's (its copies follow its containers), so an
    instance it reaches with no container left is empty to the reaper."""
    from gateway.placement import reaper

    add_instance("i-1", 1500, project="pa")
    network = _network()
    with store.write_transaction():
        store.spans.member_slot(network, "i-1")
    assert network.instance is None and not reaper.held("i-1")
    store.Container.create(id="c" * 64, project="pa", name="web", instance="i-1")
    assert reaper.held("i-1")
