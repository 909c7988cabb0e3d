"""The nova provider against a real Nova: instances come when every one is full, and go when empty.

A 3rd container in a --nova --capacity 2 stack with no instance yet
boots two instances through Nova, the agents register from user-data, and removing the containers
deletes both instances after the grace period.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import http.client
import json
import re
import time
import urllib.parse

import pytest

from tests.nova.conftest import CAPACITY, GRACE

pytestmark = pytest.mark.nova

GONE_WITHIN = GRACE + 60  # the grace, a reaper pass, Nova's delete, the watcher's teardown


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wait_until(what: str, check, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout:g} s")
        time.sleep(interval)


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"
    return proc.stdout.strip()


def test_third_container_boots_a_second_instance_and_empty_ones_go(stack):
    assert stack.hosts() == [], "a --nova stack starts with no instance host"
    assert stack.env["MOORAGE_INSTANCES"] == "" and stack.env["MOORAGE_DIRECT_HOSTS"] == ""
    assert stack.pool_servers() == []
    since = now_iso()
    time.sleep(1)
    # a server of the service project the pool did not create: it must survive every reaper pass
    flavor = stack.nova_service.flavors.find(name=stack.nova_rc["MOORAGE_NOVA_FLAVOR"])
    foreign = stack.nova_service.servers.create(
        "foreign-not-moorage",
        None,
        flavor,
        nics="none",
        block_device_mapping_v2=[
            {
                "source_type": "blank",
                "destination_type": "local",
                "boot_index": 0,
                "volume_size": 1,
                "delete_on_termination": True,
            }
        ],
    )
    try:
        t0 = time.monotonic()
        ok(stack.docker("run", "-d", "--name", "first", "busybox", "sleep", "600"))
        first_create = time.monotonic() - t0
        print(f"\n[nova lane] first create (boot, host, agent registration): {first_create:.1f} s")
        assert len(stack.hosts()) == 1
        ok(stack.docker("run", "-d", "--name", "second", "busybox", "sleep", "600"))
        assert len(stack.hosts()) == 1, "the instance had room: nothing may be booted"
        t0 = time.monotonic()
        ok(stack.docker("run", "-d", "--name", "third", "busybox", "sleep", "600", tenant="beta"))
        print(f"[nova lane] third create (second boot): {time.monotonic() - t0:.1f} s")

        hosts = stack.hosts()
        assert len(hosts) == 2
        servers = {s.id: s for s in stack.pool_servers()}
        assert set(servers) == {uid for uid, _ in hosts}, "every host is a server of the pool, and back"
        assert all(s.status == "ACTIVE" for s in servers.values())
        rows = {r["uuid"]: r for r in stack.instances()}
        assert set(rows) == set(servers)
        assert all(
            r["provider"] == "nova" and r["state"] == "up" and r["capacity"] == CAPACITY
            for r in rows.values()
        )
        assert sorted(r["containers"] for r in rows.values()) == [1, 2]
        # the agent registered under the server's UUID from what the gateway wrote into user-data
        for uid in servers:
            script = stack.user_data(uid)
            assert "--bootstrap-secret-file" in script and "moorage" in script
        # the containers run where the map says, and answer through the gateway
        assert ok(stack.docker("exec", "first", "echo", "hello")) == "hello"
        assert ok(stack.docker("ps", "-a", "--format", "{{.Names}}")).split() == ["second", "first"]
        assert ok(stack.docker("ps", "-a", "--format", "{{.Names}}", tenant="beta")).split() == ["third"]
        # the bootstrap secret is spent: a second registration with it is refused
        secret = re.search(r"^BOOTSTRAP_SECRET='?([^'\n]+)'?$", stack.user_data(hosts[0][0]), re.M).group(1)
        status = register(stack, secret)
        assert status == 401

        ok(stack.docker("rm", "-f", "first", "second"))
        ok(stack.docker("rm", "-f", "third", tenant="beta"))
        t0 = time.monotonic()
        wait_until(
            "both instances deleted", lambda: not stack.hosts() and not stack.pool_servers(), GONE_WITHIN
        )
        gone_after = time.monotonic() - t0
        print(f"[nova lane] instances gone {gone_after:.1f} s after the last container (grace {GRACE} s)")
        assert gone_after >= GRACE - 1
        assert stack.instances() == []
        boots = stack.boots_since(since)
        assert len(boots) == 2, f"Nova saw {len(boots)} boots: {[b.name for b in boots]}"
        assert all(b.status == "DELETED" for b in boots)
        assert stack.nova_service.servers.get(foreign.id).status in ("ACTIVE", "BUILD"), (
            "a server the pool did not create was touched"
        )
    finally:
        foreign.delete()


def test_concurrent_creates_wait_for_the_booting_instance(stack):
    """Four creates at once with capacity 2: Nova sees two boots, not four."""
    wait_until("an empty pool", lambda: not stack.hosts(), GONE_WITHIN)
    since = now_iso()
    time.sleep(1)
    names = [f"burst{i}" for i in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        results = list(
            ex.map(lambda n: stack.docker("create", "--name", n, "busybox", "sleep", "600"), names)
        )
    for proc in results:
        ok(proc)
    assert len(stack.hosts()) == 2
    assert len(stack.boots_since(since)) == 2
    rows = stack.instances()
    assert sorted(r["containers"] for r in rows) == [2, 2]
    ok(stack.docker("rm", "-f", *names))
    wait_until("both instances deleted", lambda: not stack.hosts() and not stack.pool_servers(), GONE_WITHIN)


def register(stack, secret: str) -> int:
    parts = urllib.parse.urlsplit(stack.env["DOCKER_HOST"].replace("tcp://", "http://"))
    conn = http.client.HTTPConnection(parts.netloc, timeout=15)
    try:
        body = json.dumps({"uuid": "intruder", "agent_url": "tcp://198.18.0.66:2376"})
        conn.request(
            "POST",
            "/moorage/v1/agents",
            body=body,
            headers={"Content-Type": "application/json", "X-Moorage-Bootstrap-Secret": secret},
        )
        return conn.getresponse().status
    finally:
        conn.close()
