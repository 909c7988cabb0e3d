"""Networks that span a project's instances, end to end on a stack of their own
(`scripts/devstack up DIR --hosts N --capacity 1`, N = 2 then N = 3, or only the N of
MOORAGE_SPAN_HOSTS): with one container per instance, every pair of containers on a network
is a pair across instances.

MOORAGE_SPAN_ENV=/path/to/DIR/env reuses a running stack of that shape instead."""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from tests.integration.conftest import Stack, own_stack, read_env

# Every test on two hosts, then on three (the "Done when"), unless one is asked for.
# (A reused stack is one shape: its own.)
HOSTS = (
    [int(os.environ.get("MOORAGE_SPAN_HOSTS") or 0)]
    if os.environ.get("MOORAGE_SPAN_HOSTS") or os.environ.get("MOORAGE_SPAN_ENV")
    else [2, 3]
)
COMPOSE = shutil.which("docker-compose")
PIN = "org.openstack.nova.instance"  # a create's label that pins its instance
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module", params=HOSTS, ids=lambda n: f"{n}hosts" if n else "reused")
def span(request):
    reuse = os.environ.get("MOORAGE_SPAN_ENV")
    if reuse:
        stack = Stack(read_env(reuse), os.path.dirname(reuse))
        yield stack
        return
    with own_stack("moorage-span-it-", "--hosts", str(request.param), "--capacity", "1") as stack:
        yield stack


@pytest.fixture
def clean(span):
    yield span
    for tenant in ("alpha", "beta"):
        ids = span.docker("ps", "-aq", tenant=tenant).stdout.decode().split()
        if ids:
            span.docker("rm", "-f", *ids, tenant=tenant, timeout=120)
        for name in (
            span.docker("network", "ls", "-q", "--filter", "type=custom", tenant=tenant)
            .stdout.decode()
            .split()
        ):
            span.docker("network", "rm", name, tenant=tenant)


def ok(result) -> str:
    assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")
    return result.stdout.decode().strip()


def httpd(stack: Stack, name: str, network: str, *flags: str, tenant: str = "alpha") -> str:
    """A container serving its /etc over HTTP on ``network``: its hostname (its ID's start)."""
    ok(
        stack.docker(
            "run", "-d", "--name", name, "--network", network, *flags,
            "busybox", "httpd", "-f", "-p", "80", "-h", "/etc", tenant=tenant,
        )
    )  # fmt: skip
    return ok(stack.docker("exec", name, "hostname", tenant=tenant))


def sleeper(stack: Stack, name: str, *flags: str, tenant: str = "alpha") -> None:
    ok(stack.docker("run", "-d", "--name", name, *flags, "busybox", "sleep", "3000", tenant=tenant))


def address_of(stack: Stack, name: str) -> str:
    return ok(
        stack.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", name)
    ).split()[0]


def where(stack: Stack) -> dict[str, str]:
    """container name -> instance UUID, from the operator's map."""
    rows = json.loads(stack.admin("containers", "list", "--format", "json").stdout)
    return {row["name"]: row["instance"] for row in rows}


def host_namespaces(stack: Stack) -> list[str]:
    """The network namespaces of the stack's hosts (devstack's naming), booted ones included."""
    with open(os.path.join(stack.dir, "state.json")) as fh:
        prefix = f"mrg-{json.load(fh)['hash']}-h"
    return sorted(n for n in os.listdir("/var/run/netns") if n.startswith(prefix))


def in_host(namespace: str, *argv: str) -> str:
    proc = subprocess.run(
        ["nsenter", f"--net=/var/run/netns/{namespace}", *argv], capture_output=True, timeout=30
    )
    return proc.stdout.decode()


def links(namespace: str) -> str:
    return in_host(namespace, "ip", "-o", "link", "show")


def segment_vni(namespace: str) -> int:
    """The VNI of the one segment on a host (its VXLAN port is mvx<VNI>)."""
    word = next(w for w in links(namespace).split() if w.startswith("mvx"))
    return int(word[3:].split("@")[0].rstrip(":"))


def peers(namespace: str, vni: int) -> str:
    """The VXLAN forwarding entries of segment ``vni`` on a host (a peer's: its underlay)."""
    return in_host(namespace, "bridge", "fdb", "show", "dev", f"mvx{vni}")


def on_daemon(stack: Stack, uuid: str, *args: str) -> str:
    """The docker CLI straight at the daemon of instance ``uuid`` (one devstack started)."""
    index = stack.env["MOORAGE_INSTANCES"].split().index(uuid)
    host = stack.env["MOORAGE_DIRECT_HOSTS"].split()[index]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}, "DOCKER_HOST": host}
    proc = subprocess.run(["docker", *args], capture_output=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode()


def no_segments_left(stack: Stack) -> None:
    for namespace in host_namespaces(stack):
        found = links(namespace)
        assert "msp" not in found and "mvx" not in found, (namespace, found)


def test_one_network_across_instances(clean):
    stack = clean
    ok(stack.docker("network", "create", "mynet"))
    ok(stack.docker("network", "create", "other"))
    db_host = httpd(stack, "db", "mynet", "--network-alias", "store", "--network", "other")
    # the issue's own words: a client on the other instance reaches db by name
    out = stack.docker(
        "run", "--rm", "--network", "mynet", "busybox", "wget", "-qO-", "http://db/hostname", timeout=90
    )
    assert ok(out) == db_host
    app_host = httpd(stack, "app", "mynet")
    placed = where(stack)
    assert placed["db"] != placed["app"], placed
    # by name and by alias, both ways
    assert ok(stack.docker("exec", "app", "wget", "-qO-", "http://db/hostname")) == db_host
    assert ok(stack.docker("exec", "app", "wget", "-qO-", "http://store/hostname")) == db_host
    assert ok(stack.docker("exec", "db", "wget", "-qO-", "http://app/hostname")) == app_host
    # an unknown single-label name fails at once (NXDOMAIN), not after resolver timeouts
    started = time.monotonic()
    assert stack.docker("exec", "app", "nslookup", "nosuchname").returncode != 0
    assert time.monotonic() - started < 4
    # MTU: the hosts' underlay MTU (as their agents reported it) minus VXLAN's 50, on the
    # daemons' copies; a full-size packet crosses
    underlay = in_host(namespace_of(stack, placed["app"]), "cat", "/sys/class/net/eth0/mtu").strip()
    mtu = int(underlay) - 50
    assert ok(stack.docker("exec", "app", "cat", "/sys/class/net/eth0/mtu")) == str(mtu)
    ok(
        stack.docker(
            "exec", "app", "ping", "-c", "2", "-W", "3", "-s", str(mtu - 28), address_of(stack, "db")
        )
    )
    copy = on_daemon(stack, placed["app"], "network", "ls", "-q", "--filter", "name=mynet.").strip()
    options = on_daemon(stack, placed["app"], "network", "inspect", "-f", "{{json .Options}}", copy)
    assert json.loads(options)["com.docker.network.driver.mtu"] == str(mtu)
    # Docker's views: one row, one ID, the containers of every instance
    rows = ok(
        stack.docker("network", "ls", "--filter", "name=mynet", "--format", "{{.ID}} {{.Name}}")
    ).splitlines()
    assert len(rows) == 1, rows
    shown = json.loads(ok(stack.docker("network", "inspect", "mynet")))[0]
    assert shown["Id"].startswith(rows[0].split()[0])
    assert sorted(c["Name"] for c in shown["Containers"].values()) == ["app", "db"]
    assert shown["IPAM"]["Config"][0]["Subnet"].startswith("198.19.")
    # rm: refused while used, then gone everywhere
    assert stack.docker("network", "rm", "mynet").returncode != 0
    ok(stack.docker("rm", "-f", "db", "app"))
    ok(stack.docker("network", "rm", "mynet", "other"))
    assert ok(stack.docker("network", "ls", "--filter", "name=mynet", "-q")) == ""
    no_segments_left(stack)


def test_a_network_leaves_an_instance_with_its_last_member(clean):
    stack = clean
    ok(stack.docker("network", "create", "leaving"))
    db_host = httpd(stack, "db", "leaving")
    sleeper(stack, "app", "--network", "leaving")
    placed = where(stack)
    db_ns, app_ns = namespace_of(stack, placed["db"]), namespace_of(stack, placed["app"])
    app_underlay = underlay_of(stack, placed["app"])
    vni = segment_vni(db_ns)

    def carries(namespace: str) -> bool:
        found = links(namespace)
        return f"msp{vni}" in found or f"mvx{vni}" in found

    def copy_on(uuid: str) -> bool:
        return "leaving." in on_daemon(stack, uuid, "network", "ls", "--format", "{{.Name}}")

    assert carries(app_ns) and copy_on(placed["app"]) and app_underlay in peers(db_ns, vni)
    # rm of the last member there: bridge, VXLAN port, daemon's copy gone; db's host drops the peer
    ok(stack.docker("rm", "-f", "app"))
    assert not carries(app_ns) and not copy_on(placed["app"])
    assert app_underlay not in peers(db_ns, vni)
    assert carries(db_ns) and copy_on(placed["db"])
    # the network comes back to that instance for a new container, which reaches db; a --rm
    # one's end (the wait's) takes it away again, just after the client hears of it
    out = stack.docker(
        "run", "--rm", "--network", "leaving", "busybox", "wget", "-qO-", "http://db/hostname", timeout=90
    )
    assert ok(out) == db_host
    deadline = time.monotonic() + 10
    while (carries(app_ns) or copy_on(placed["app"])) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not carries(app_ns) and not copy_on(placed["app"])
    # runs one after the other, each creating there as the last one's end takes the network
    # away: a create waits for that leave to end and makes the copy again (a container
    # created against the copy being removed would never start: "network ... not found")
    for _ in range(6):
        ok(stack.docker("run", "--rm", "--network", "leaving", "busybox", "true", timeout=90))
    # disconnect of the last member there: a container made on its default bridge, connected
    sleeper(stack, "late")
    assert where(stack)["late"] == placed["app"]
    ok(stack.docker("network", "connect", "leaving", "late"))
    assert carries(app_ns) and app_underlay in peers(db_ns, vni)
    ok(stack.docker("network", "disconnect", "leaving", "late"))
    assert not carries(app_ns) and not copy_on(placed["app"])
    assert app_underlay not in peers(db_ns, vni)
    # db's instance still works, and the network's view is whole
    assert ok(stack.docker("exec", "db", "wget", "-qO-", "http://127.0.0.1/hostname")) == db_host
    shown = json.loads(ok(stack.docker("network", "inspect", "leaving")))[0]
    assert [c["Name"] for c in shown["Containers"].values()] == ["db"]


def test_connect_disconnect_and_addresses(clean):
    stack = clean
    ok(stack.docker("network", "create", "links"))
    db_host = httpd(stack, "db", "links")
    db_ip = address_of(stack, "db")
    # an address in use is refused before anything runs
    taken = stack.docker("run", "--rm", "--network", "links", "--ip", db_ip, "busybox", "true")
    assert taken.returncode != 0 and b"Address already in use" in taken.stderr, taken.stderr
    # a container made elsewhere (on its default bridge), then connected
    sleeper(stack, "late")
    assert where(stack)["late"] != where(stack)["db"]
    ok(stack.docker("network", "connect", "--alias", "newcomer", "links", "late"))
    assert ok(stack.docker("exec", "late", "wget", "-qO-", f"http://{db_ip}/hostname")) == db_host
    assert ok(stack.docker("exec", "db", "ping", "-c", "1", "-W", "3", "newcomer"))
    # ... resolves the names of the other instance too (its DNS is its instance's responder
    # since its create), and an unknown name fails at once; inspect shows the DNS it asked for
    assert ok(stack.docker("exec", "late", "wget", "-qO-", "http://db/hostname")) == db_host
    started = time.monotonic()
    assert stack.docker("exec", "late", "nslookup", "nosuchname").returncode != 0
    assert time.monotonic() - started < 4
    assert ok(stack.docker("inspect", "-f", "{{json .HostConfig.Dns}}", "late")) == "[]"
    shown = json.loads(ok(stack.docker("network", "inspect", "links")))[0]
    assert sorted(c["Name"] for c in shown["Containers"].values()) == ["db", "late"]
    ok(stack.docker("network", "disconnect", "links", "late"))
    shown = json.loads(ok(stack.docker("network", "inspect", "links")))[0]
    assert [c["Name"] for c in shown["Containers"].values()] == ["db"]
    assert stack.docker("exec", "db", "ping", "-c", "1", "-W", "2", "newcomer").returncode != 0
    assert stack.docker("exec", "late", "nslookup", "db").returncode != 0
    # a removed container's name answers nowhere (every instance was told)
    ok(stack.docker("rm", "-f", "db", "late"))
    sleeper(stack, "keeper", "--network", "links")
    gone = stack.docker("run", "--rm", "--network", "links", "busybox", "nslookup", "db", timeout=90)
    assert gone.returncode != 0, gone.stdout


@pytest.fixture(scope="module")
def wide():
    """A second stack, of shared tenancy with five containers a host (two hosts, no more)."""
    with own_stack(
        "moorage-spanwide-it-", "--tenancy", "shared", "--hosts", "2", "--capacity", "5", "--max-hosts", "2"
    ) as stack:
        yield stack


def test_ten_containers_over_two_instances(wide):
    """Ten containers on one network over two instances (five a host): ten distinct
    addresses, each reaches the others by name, an --ip in use is refused."""
    stack = wide
    ok(stack.docker("network", "create", "ten"))
    for i in range(10):
        sleeper(stack, f"c{i}", "--network", "ten")
    placed = where(stack)
    assert sorted(collections.Counter(placed[f"c{i}"] for i in range(10)).values()) == [5, 5], placed
    addresses = [address_of(stack, f"c{i}") for i in range(10)]
    assert len(set(addresses)) == 10, addresses
    assert all(a.startswith("198.19.") for a in addresses)
    # the first and the last are on different instances: each reaches the other by name
    assert placed["c0"] != placed["c9"]
    ok(stack.docker("exec", "c0", "ping", "-c", "1", "-W", "3", "c9"))
    ok(stack.docker("exec", "c9", "ping", "-c", "1", "-W", "3", "c0"))
    # an --ip another container holds: refused, and the container keeps none
    ok(stack.docker("network", "disconnect", "ten", "c3"))
    refused = stack.docker("network", "connect", "--ip", addresses[7], "ten", "c3")
    assert refused.returncode != 0 and b"Address already in use" in refused.stderr, refused.stderr
    assert ok(stack.docker("inspect", "-f", "{{len .NetworkSettings.Networks}}", "c3")) == "0"
    ok(stack.docker("rm", "-f", *(f"c{i}" for i in range(10)), timeout=120))
    ok(stack.docker("network", "rm", "ten"))
    no_segments_left(stack)


def _compose_project(stack: Stack, binary: str, version: str):
    """A two-service project (db serves HTTP, app sleeps) on one network, run by ``binary``."""
    project = tempfile.mkdtemp(prefix="span-compose-")
    with open(os.path.join(project, "docker-compose.yml"), "w") as fh:
        fh.write(
            (f"version: '{version}'\n" if version else "")
            + "services:\n"
            + "  db:\n    image: busybox\n    command: httpd -f -p 80 -h /etc\n"
            + "  app:\n    image: busybox\n    command: sleep 300\n"
        )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")},
        "DOCKER_HOST": stack.env["DOCKER_HOST"],
        "DOCKER_CONFIG": stack.env["MOORAGE_CONFIG_alpha"],
        "COMPOSE_PROJECT_NAME": "spanproj",
    }

    def compose(*args: str) -> str:
        proc = subprocess.run([binary, *args], cwd=project, env=env, capture_output=True, timeout=180)
        assert proc.returncode == 0, (proc.stdout + proc.stderr).decode(errors="replace")
        return proc.stdout.decode()

    compose("up", "-d")
    try:
        placed = where(stack)
        db = next(n for n in placed if n.startswith("spanproj") and "db" in n)
        app = next(n for n in placed if n.startswith("spanproj") and "app" in n)
        assert placed[db] != placed[app], placed
        compose("exec", "-T", "app", "ping", "-c", "1", "-W", "3", "db")
        db_host = compose("exec", "-T", "db", "hostname").strip()
        assert compose("exec", "-T", "app", "wget", "-qO-", "http://db/hostname").strip() == db_host
    finally:
        compose("down")
        shutil.rmtree(project, ignore_errors=True)
    # nothing left on any host
    assert ok(stack.docker("ps", "-aq")) == ""
    assert ok(stack.docker("network", "ls", "-q", "--filter", "type=custom")) == ""
    no_segments_left(stack)
    for uuid in stack.env["MOORAGE_INSTANCES"].split():
        assert "spanproj" not in on_daemon(stack, uuid, "network", "ls", "--format", "{{.Name}}")


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose v1 is not installed")
def test_compose_v1_project_across_instances(clean):
    _compose_project(clean, str(COMPOSE), "2.4")


def test_compose_v5_project_across_instances(clean):
    sys.path.insert(0, os.path.join(ROOT, "compat-tests"))
    from compat import tools  # the compat suite's installer and its cache (compat-tests/compat/tools.py)

    why = tools.install("compose-v5")
    if why:
        pytest.skip(why)
    _compose_project(clean, tools.PATHS["compose-v5"], "")


def namespace_of(stack: Stack, uuid: str) -> str:
    """The host namespace of instance ``uuid``: devstack's host I listens on 198.18.X.(10+I)."""
    rows = json.loads(stack.admin("instances", "list", "--format", "json").stdout)
    url = next(r["agent"] for r in rows if r["uuid"] == uuid)
    octet = int(url.split("//")[1].split(":")[0].rsplit(".", 1)[1])
    return next(n for n in host_namespaces(stack) if n.endswith(f"-h{octet - 10}"))


def underlay_of(stack: Stack, uuid: str) -> str:
    rows = json.loads(stack.admin("instances", "list", "--format", "json").stdout)
    return next(r["agent"] for r in rows if r["uuid"] == uuid).split("//")[1].split(":")[0]


# A VXLAN datagram (flags, VNI) carrying an Ethernet broadcast from MAC, sent to HOST:4789.
FORGE = (
    "import socket,sys;vni=int(sys.argv[3]);mac=bytes.fromhex(sys.argv[2].replace(':',''));"
    "frame=b'\\xff'*6+mac+b'\\x08\\x06'+bytes(28);"
    "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
    "[s.sendto(b'\\x08\\0\\0\\0'+vni.to_bytes(3,'big')+b'\\0'+frame,(sys.argv[1],4789)) for _ in range(3)]"
)


def forge(netns_path: str, host: str, mac: str, vni: int) -> None:
    subprocess.run(
        ["nsenter", f"--net={netns_path}", "python3", "-c", FORGE, host, mac, str(vni)],
        check=True,
        timeout=30,
    )


def test_other_project_is_kept_out(clean):
    stack = clean
    ok(stack.docker("network", "create", "mynet"))
    db_host = httpd(stack, "db", "mynet")
    sleeper(stack, "app", "--network", "mynet")
    placed = where(stack)
    db_ns, app_ns = namespace_of(stack, placed["db"]), namespace_of(stack, placed["app"])
    db_ip = address_of(stack, "db")
    vni = segment_vni(db_ns)
    underlay = underlay_of(stack, placed["db"])

    # beta's network of the same name is its own, and its containers cannot reach alpha's
    ok(stack.docker("network", "create", "mynet", tenant="beta"))
    ok(
        stack.docker(
            "run", "-d", "--name", "intruder", "--network", "mynet", "busybox", "sleep", "3007", tenant="beta"
        )
    )
    beta_id = json.loads(ok(stack.docker("network", "inspect", "mynet", tenant="beta")))[0]["Id"]
    alpha_id = json.loads(ok(stack.docker("network", "inspect", "mynet")))[0]["Id"]
    assert beta_id != alpha_id
    reached = stack.docker(
        "exec", "intruder", "wget", "-qO-", "-T", "3", f"http://{db_ip}/hostname", tenant="beta"
    )
    assert reached.stdout.decode().strip() != db_host
    assert stack.docker("exec", "intruder", "nslookup", "db", tenant="beta").returncode != 0

    # a forged VXLAN datagram: learned when a peer instance sends it (the control), not when
    # beta's container does
    forge(f"/var/run/netns/{app_ns}", underlay, "02:5a:00:00:00:01", vni)
    time.sleep(0.5)
    assert "02:5a:00:00:00:01" in peers(db_ns, vni)
    pid = subprocess.run(["pgrep", "-f", "sleep 3007"], capture_output=True, text=True).stdout.split()[0]
    forge(f"/proc/{pid}/ns/net", underlay, "02:5a:00:00:00:02", vni)
    time.sleep(0.5)
    assert "02:5a:00:00:00:02" not in peers(db_ns, vni)


def test_segment_comes_back_after_a_host_restarts(clean):
    stack = clean
    ok(stack.docker("network", "create", "mynet"))
    db_host = httpd(stack, "db", "mynet")
    sleeper(stack, "app", "--network", "mynet")
    index = stack.env["MOORAGE_INSTANCES"].split().index(where(stack)["app"]) + 1
    # dockerd keeps its copy of the network (app, stopped, is still on it) and makes its bridge
    # again, without the VXLAN port: the agent puts it back from the gateway's registration answer
    for step in ("stop-host", "start-host"):
        done = stack.devstack(step, str(index))
        assert done.returncode == 0, done.stderr
    ok(stack.docker("start", "app", timeout=120))
    assert ok(stack.docker("exec", "app", "wget", "-qO-", "http://db/hostname")) == db_host


def test_shared_tenancy_keeps_each_network_to_its_instances(wide):
    """Shared tenancy: an instance carries several projects' networks; each network's VXLAN is
    admitted only from the instances that carry that network."""
    stack = wide
    first, second = stack.env["MOORAGE_INSTANCES"].split()[:2]
    ok(stack.docker("network", "create", "mynet"))
    ok(stack.docker("network", "create", "mynet", tenant="beta"))
    db_host = httpd(stack, "a1", "mynet", "--label", f"{PIN}={first}")
    sleeper(stack, "a2", "--network", "mynet", "--label", f"{PIN}={second}")
    sleeper(stack, "b1", "--network", "mynet", "--label", f"{PIN}={first}", tenant="beta")
    try:
        subnets = {
            json.loads(ok(stack.docker("network", "inspect", "mynet", tenant=t)))[0]["IPAM"]["Config"][0][
                "Subnet"
            ]
            for t in ("alpha", "beta")
        }
        assert len(subnets) == 2, subnets  # unique across projects
        assert ok(stack.docker("exec", "a2", "wget", "-qO-", "http://a1/hostname")) == db_host
        reached = stack.docker(
            "exec",
            "b1",
            "wget",
            "-qO-",
            "-T",
            "3",
            f"http://{address_of(stack, 'a1')}/hostname",
            tenant="beta",
        )
        assert reached.stdout.decode().strip() != db_host
        first_ns, second_ns = namespace_of(stack, first), namespace_of(stack, second)
        vnis = [int(w[3:].split("@")[0].rstrip(":")) for w in links(first_ns).split() if w.startswith("mvx")]
        second_underlay, first_underlay = underlay_of(stack, second), underlay_of(stack, first)
        alpha_vni = next(v for v in vnis if second_underlay in peers(first_ns, v))
        beta_vni = next(v for v in vnis if v != alpha_vni)
        # the second instance carries alpha's network: its datagrams for alpha's VNI are
        # admitted (the control), those for beta's (which it does not carry) are not
        forge(f"/var/run/netns/{second_ns}", first_underlay, "02:5a:00:00:00:03", alpha_vni)
        forge(f"/var/run/netns/{second_ns}", first_underlay, "02:5a:00:00:00:04", beta_vni)
        time.sleep(0.5)
        assert "02:5a:00:00:00:03" in peers(first_ns, alpha_vni)
        assert "02:5a:00:00:00:04" not in peers(first_ns, beta_vni)
    finally:
        stack.docker("rm", "-f", "b1", tenant="beta")
        stack.docker("rm", "-f", "a1", "a2")
        stack.docker("network", "rm", "mynet", tenant="beta")
        stack.docker("network", "rm", "mynet")
    no_segments_left(stack)


def test_containers_joining_a_new_network_at_once(stack, unique):
    """compose starts a project's services together: their creates race to make the network's
    copy on the instance, and dockerd's duplicate check is not atomic (the loser got "Pool
    overlaps", and compose v5 projects with a service on two networks failed now and then)."""
    import concurrent.futures

    net = f"{unique}-race"
    ok(stack.docker("network", "create", net))
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            runs = list(
                pool.map(
                    lambda i: stack.docker(
                        "run", "-d", "--name", f"{unique}-{i}", "--network", net, "busybox", "sleep", "120"
                    ),
                    range(4),
                )
            )
        assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
        assert ok(stack.docker("exec", f"{unique}-0", "ping", "-c", "1", "-W", "3", f"{unique}-3"))
    finally:
        stack.docker("rm", "-f", *[f"{unique}-{i}" for i in range(4)])
        stack.docker("network", "rm", net)
