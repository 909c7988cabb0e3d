"""The nova provider against a real Nova: instances come when every one is full, and go when empty.

A 3rd container in a --nova --capacity 2 stack with no instance yet
boots two instances through Nova, the agents register from user-data, and removing the containers
deletes both instances after the grace period. With dedicated tenancy (devstack's default) each
server is created in its tenant's own project, as that tenant's user, through a Keystone trust
the tenant's token delegated to the gateway's service user, and deleted through it.
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
        # dedicated: each server is in its tenant's own project and is that user's (the trust
        # impersonates), made through one Keystone trust per tenant to the service user
        (alpha_project, alpha_user), (beta_project, beta_user) = stack.ids("alpha"), stack.ids("beta")
        by_project = {s.tenant_id: s for s in servers.values()}
        assert set(by_project) == {alpha_project, beta_project}
        assert by_project[alpha_project].user_id == alpha_user
        assert by_project[beta_project].user_id == beta_user
        assert {r["uuid"]: r["project"] for r in rows.values()} == {
            s.id: s.tenant_id for s in servers.values()
        }
        # ... so they show in the tenants' own `openstack server list` (and count in their quota)
        assert [s.id for s in stack.tenant("alpha").servers.list()] == [by_project[alpha_project].id]
        assert [s.id for s in stack.tenant("beta").servers.list()] == [by_project[beta_project].id]
        service_user = stack.nova_service.client.session.get_user_id()
        for tenant, project in (("alpha", alpha_project), ("beta", beta_project)):
            trusts = stack.trusts(tenant)
            assert len(trusts) == 1, trusts
            trust = trusts[0]
            assert (trust["project_id"], trust["trustee_user_id"], trust["impersonation"]) == (
                project,
                service_user,
                True,
            )
            assert sorted(r["name"] for r in trust["roles"]) == ["member"]
        print(f"[nova lane] servers in alpha's and beta's projects through trusts {stack.trust_ids()}")
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
    # both in alpha's project, through alpha's one trust, made at its first boot and reused
    alpha_project, _ = stack.ids("alpha")
    assert {s.tenant_id for s in stack.pool_servers()} == {alpha_project}
    assert len(stack.trusts("alpha")) == 1
    ok(stack.docker("rm", "-f", *names))
    wait_until("both instances deleted", lambda: not stack.hosts() and not stack.pool_servers(), GONE_WITHIN)


def test_a_nova_quota_refusal_reaches_the_tenant_naming_its_project(stack):
    wait_until("an empty pool", lambda: not stack.hosts(), GONE_WITHIN)
    beta_project, _ = stack.ids("beta")
    stack.nova_admin.quotas.update(beta_project, instances=0)
    try:
        proc = stack.docker("run", "-d", "--name", "over", "busybox", "sleep", "600", tenant="beta")
        assert proc.returncode != 0
        assert f"Nova quota exceeded for project beta ({beta_project}): Quota exceeded for instances" in (
            proc.stderr
        ), proc.stderr
        print(f"[nova lane] over quota: {proc.stderr.strip()}")
        assert stack.tenant("beta").servers.list() == []
    finally:
        stack.nova_admin.quotas.delete(beta_project)  # back to the defaults
    ok(stack.docker("run", "-d", "--name", "fits", "busybox", "sleep", "600", tenant="beta"))
    assert len(stack.trusts("beta")) == 1, "the project's trust is reused"
    ok(stack.docker("rm", "-f", "fits", tenant="beta"))
    wait_until("the instance deleted", lambda: not stack.hosts() and not stack.pool_servers(), GONE_WITHIN)


def test_a_revoked_trust_is_replaced_by_the_next_create_that_boots(stack):
    """Deleting the trust in Keystone stops Moorage's use of it; the next create that needs an
    instance makes a new one from its caller's token, as the project's first did."""
    wait_until("an empty pool", lambda: not stack.hosts(), GONE_WITHIN)
    (old,) = stack.trusts("alpha")
    sess = stack.tenant("alpha").client.session
    url = stack.nova_rc["MOORAGE_NOVA_AUTH_URL"].rstrip("/") + f"/OS-TRUST/trusts/{old['id']}"
    assert sess.delete(url).status_code == 204
    ok(stack.docker("run", "-d", "--name", "again", "busybox", "sleep", "600"))
    (new,) = stack.trusts("alpha")
    assert new["id"] != old["id"]
    alpha_project, _ = stack.ids("alpha")
    assert [s.tenant_id for s in stack.pool_servers()] == [alpha_project]
    ok(stack.docker("rm", "-f", "again"))
    wait_until("the instance deleted", lambda: not stack.hosts() and not stack.pool_servers(), GONE_WITHIN)


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
