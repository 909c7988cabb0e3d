"""Networks that span a project's instances, end to end on a stack of their own
(`scripts/devstack up DIR --hosts N --capacity 1`, N from MOORAGE_SPAN_HOSTS, 2 by default;
3 adds the other project's checks): with one container per instance, every pair of
containers on a network is a pair across instances.

MOORAGE_SPAN_ENV=/path/to/DIR/env reuses a running stack of that shape instead."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from tests.integration.conftest import Stack, own_stack, read_env

HOSTS = int(os.environ.get("MOORAGE_SPAN_HOSTS", "2"))
COMPOSE = shutil.which("docker-compose")


@pytest.fixture(scope="module")
def span():
    reuse = os.environ.get("MOORAGE_SPAN_ENV")
    if reuse:
        stack = Stack(read_env(reuse), os.path.dirname(reuse))
        yield stack
        return
    with own_stack("moorage-span-it-", "--hosts", str(HOSTS), "--capacity", "1") as stack:
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


def no_segments_left(stack: Stack) -> None:
    for namespace in host_namespaces(stack):
        links = in_host(namespace, "ip", "-o", "link", "show")
        assert "msp" not in links and "mvx" not in links, (namespace, links)


def test_one_network_across_instances(clean):
    stack = clean
    ok(stack.docker("network", "create", "mynet"))
    ok(
        stack.docker(
            "run",
            "-d",
            "--name",
            "db",
            "--network",
            "mynet",
            "--network-alias",
            "store",
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/etc",
        )
    )
    db_host = ok(stack.docker("exec", "db", "hostname"))
    # the issue's own words: a client on the other instance reaches db by name
    assert (
        ok(
            stack.docker(
                "run",
                "--rm",
                "--network",
                "mynet",
                "busybox",
                "wget",
                "-qO-",
                "http://db/hostname",
                timeout=90,
            )
        )
        == db_host
    )
    ok(
        stack.docker(
            "run",
            "-d",
            "--name",
            "app",
            "--network",
            "mynet",
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/etc",
        )
    )
    placed = where(stack)
    assert placed["db"] != placed["app"], placed
    app_host = ok(stack.docker("exec", "app", "hostname"))
    # by name and by alias, both ways
    assert ok(stack.docker("exec", "app", "wget", "-qO-", "http://db/hostname")) == db_host
    assert ok(stack.docker("exec", "app", "wget", "-qO-", "http://store/hostname")) == db_host
    assert ok(stack.docker("exec", "db", "wget", "-qO-", "http://app/hostname")) == app_host
    # an unknown single-label name fails at once (NXDOMAIN), not after resolver timeouts
    started = time.monotonic()
    assert stack.docker("exec", "app", "nslookup", "nosuchname").returncode != 0
    assert time.monotonic() - started < 4
    # MTU: the underlay's minus VXLAN's 50; a full-size packet crosses unfragmented
    assert ok(stack.docker("exec", "app", "cat", "/sys/class/net/eth0/mtu")) == "1450"
    db_ip = ok(
        stack.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "db")
    )
    ok(stack.docker("exec", "app", "ping", "-c", "2", "-W", "3", "-s", "1422", db_ip))
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
    ok(stack.docker("network", "rm", "mynet"))
    assert ok(stack.docker("network", "ls", "--filter", "name=mynet", "-q")) == ""
    no_segments_left(stack)


def test_connect_disconnect_and_addresses(clean):
    stack = clean
    ok(stack.docker("network", "create", "links"))
    ok(
        stack.docker(
            "run",
            "-d",
            "--name",
            "db",
            "--network",
            "links",
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/etc",
        )
    )
    db_ip = ok(
        stack.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "db")
    )
    # an address in use is refused before anything runs
    taken = stack.docker("run", "--rm", "--network", "links", "--ip", db_ip, "busybox", "true")
    assert taken.returncode != 0 and b"Address already in use" in taken.stderr, taken.stderr
    # a container made elsewhere (on its default bridge), then connected
    ok(stack.docker("run", "-d", "--name", "late", "busybox", "sleep", "300"))
    assert where(stack)["late"] != where(stack)["db"]
    ok(stack.docker("network", "connect", "--alias", "newcomer", "links", "late"))
    db_host = ok(stack.docker("exec", "db", "hostname"))
    assert ok(stack.docker("exec", "late", "wget", "-qO-", f"http://{db_ip}/hostname")) == db_host
    assert ok(stack.docker("exec", "db", "ping", "-c", "1", "-W", "3", "newcomer"))
    shown = json.loads(ok(stack.docker("network", "inspect", "links")))[0]
    assert sorted(c["Name"] for c in shown["Containers"].values()) == ["db", "late"]
    ok(stack.docker("network", "disconnect", "links", "late"))
    shown = json.loads(ok(stack.docker("network", "inspect", "links")))[0]
    assert [c["Name"] for c in shown["Containers"].values()] == ["db"]
    assert stack.docker("exec", "db", "ping", "-c", "1", "-W", "2", "newcomer").returncode != 0
    # a removed container's name answers nowhere (every instance was told)
    ok(stack.docker("rm", "-f", "db", "late"))
    ok(stack.docker("run", "-d", "--name", "keeper", "--network", "links", "busybox", "sleep", "300"))
    gone = stack.docker("run", "--rm", "--network", "links", "busybox", "nslookup", "db", timeout=90)
    assert gone.returncode != 0, gone.stdout


@pytest.mark.skipif(COMPOSE is None, reason="docker-compose v1 is not installed")
def test_compose_project_across_instances(clean):
    stack = clean
    project = tempfile.mkdtemp(prefix="span-compose-")
    with open(os.path.join(project, "docker-compose.yml"), "w") as fh:
        fh.write(
            "version: '2.4'\nservices:\n"
            "  db:\n    image: busybox\n    command: httpd -f -p 80 -h /etc\n"
            "  app:\n    image: busybox\n    command: sleep 300\n"
        )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")},
        "DOCKER_HOST": stack.env["DOCKER_HOST"],
        "DOCKER_CONFIG": stack.env["MOORAGE_CONFIG_alpha"],
        "COMPOSE_PROJECT_NAME": "spanproj",
    }

    def compose(*args: str) -> str:
        proc = subprocess.run([COMPOSE, *args], cwd=project, env=env, capture_output=True, timeout=180)
        assert proc.returncode == 0, (proc.stdout + proc.stderr).decode(errors="replace")
        return proc.stdout.decode()

    compose("up", "-d")
    try:
        _compose_checks(stack, compose)
    finally:
        compose("down")
        shutil.rmtree(project, ignore_errors=True)
    assert ok(stack.docker("ps", "-aq")) == ""
    assert ok(stack.docker("network", "ls", "-q", "--filter", "type=custom")) == ""
    no_segments_left(stack)


def _compose_checks(stack: Stack, compose) -> None:
    placed = where(stack)
    db = next(n for n in placed if n.startswith("spanproj_db"))
    app = next(n for n in placed if n.startswith("spanproj_app"))
    assert placed[db] != placed[app], placed
    compose("exec", "-T", "app", "ping", "-c", "1", "-W", "3", "db")
    db_host = compose("exec", "-T", "db", "hostname").strip()
    assert compose("exec", "-T", "app", "wget", "-qO-", "http://db/hostname").strip() == db_host


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
    ok(
        stack.docker(
            "run",
            "-d",
            "--name",
            "db",
            "--network",
            "mynet",
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/etc",
        )
    )
    ok(stack.docker("run", "-d", "--name", "app", "--network", "mynet", "busybox", "sleep", "300"))
    placed = where(stack)
    db_ns, app_ns = namespace_of(stack, placed["db"]), namespace_of(stack, placed["app"])
    db_host = ok(stack.docker("exec", "db", "hostname"))
    db_ip = ok(
        stack.docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "db")
    )
    vni = int(
        next(w for w in in_host(db_ns, "ip", "-o", "link", "show").split() if w.startswith("mvx"))[3:]
        .rstrip(":@")
        .split("@")[0]
    )
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
    def learned(mac: str) -> bool:
        return mac in in_host(db_ns, "bridge", "fdb", "show", "dev", f"mvx{vni}")

    forge(f"/var/run/netns/{app_ns}", underlay, "02:5a:00:00:00:01", vni)
    time.sleep(0.5)
    assert learned("02:5a:00:00:00:01")
    pid = subprocess.run(["pgrep", "-f", "sleep 3007"], capture_output=True, text=True).stdout.split()[0]
    forge(f"/proc/{pid}/ns/net", underlay, "02:5a:00:00:00:02", vni)
    time.sleep(0.5)
    assert not learned("02:5a:00:00:00:02")


def test_segment_comes_back_after_a_host_restarts(clean):
    stack = clean
    ok(stack.docker("network", "create", "mynet"))
    ok(
        stack.docker(
            "run",
            "-d",
            "--name",
            "db",
            "--network",
            "mynet",
            "busybox",
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/etc",
        )
    )
    db_host = ok(stack.docker("exec", "db", "hostname"))
    ok(stack.docker("run", "-d", "--name", "app", "--network", "mynet", "busybox", "sleep", "300"))
    app_uuid = where(stack)["app"]
    index = stack.env["MOORAGE_INSTANCES"].split().index(app_uuid) + 1
    ok(stack.docker("rm", "-f", "app"))
    # dockerd keeps its copy of the network and makes its bridge again, without the VXLAN
    # port: the agent puts it back from the gateway's registration answer
    for step in ("stop-host", "start-host"):
        done = stack.devstack(step, str(index))
        assert done.returncode == 0, done.stderr
    out = ok(
        stack.docker(
            "run",
            "--rm",
            "--label",
            f"org.openstack.nova.instance={app_uuid}",
            "--network",
            "mynet",
            "busybox",
            "wget",
            "-qO-",
            "http://db/hostname",
            timeout=120,
        )
    )
    assert out == db_host


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
