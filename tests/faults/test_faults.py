"""The fault lane: faults injected into a running stack during a steady workload.

One stack (`scripts/devstack up DIR --hosts 3 --postgres --replicas 2 --host-disk-mb 300`,
dedicated tenancy): alpha's containers are on host 1, beta's on host 2. Each fault hits host 1
(or a replica, or the database) while beta's workload (create, start, exec, logs, remove, in a loop) runs on
host 2, and checks:
- beta's calls keep succeeding (a healthy instance is untouched by another's fault);
- alpha's calls about its container answer within 10 s, in Docker's shape, naming the
  instance and its state (no hang);
- after recovery alpha's container answers again, `ps` lists it, and the store's map of
  alpha's containers equals what host 1's daemon holds (nothing lost, nothing doubled).
docs/operations.md has the table of faults and outcomes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import threading
import time

import pytest
import requests

from tests.integration.conftest import Stack

pytestmark = pytest.mark.faults

ANSWER_WITHIN = 10.0  # seconds: an answer (an error, not a hang) for the failed instance
RECOVER_WITHIN = 60.0


class Workload:
    """Beta's steady loop through one gateway: create, start, exec, logs, remove."""

    def __init__(self, stack: Stack, tenant: str = "beta"):
        self.stack = stack
        self.tenant = tenant
        self.gateway = stack.gateway
        self.failures: list[tuple[float, str, int, str]] = []
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _call(self, method: str, path: str, **kw) -> requests.Response | None:
        headers = self.stack.headers(self.tenant)
        try:
            resp = requests.request(method, self.gateway + path, headers=headers, timeout=30, **kw)
        except requests.RequestException as exc:
            self.failures.append((time.monotonic(), f"{method} {path}", 0, str(exc)[:200]))
            return None
        if resp.status_code >= 400:
            self.failures.append((time.monotonic(), f"{method} {path}", resp.status_code, resp.text[:200]))
            return None
        return resp

    def _run(self) -> None:
        while not self._stop.is_set():
            created = self._call(
                "POST", "/v1.41/containers/create", json={"Image": "busybox", "Cmd": ["sleep", "30"]}
            )
            if created is None:
                time.sleep(0.5)
                continue
            cid = created.json()["Id"]
            try:
                if self._call("POST", f"/v1.41/containers/{cid}/start") is None:
                    continue
                ex = self._call(
                    "POST",
                    f"/v1.41/containers/{cid}/exec",
                    json={"Cmd": ["echo", "x" * 100], "AttachStdout": True},
                )
                if ex is not None:
                    self._call("POST", f"/v1.41/exec/{ex.json()['Id']}/start", json={"Detach": False})
                self._call("GET", f"/v1.41/containers/{cid}/logs?stdout=1")
            finally:
                self._call("DELETE", f"/v1.41/containers/{cid}?force=1")
            self.rounds += 1

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=60)

    def failures_since(self, t0: float) -> list:
        return [f for f in self.failures if f[0] >= t0]


def state(stack: Stack) -> dict:
    with open(os.path.join(stack.dir, "state.json")) as fh:
        return json.load(fh)


def instances(stack: Stack) -> list[str]:
    return stack.env["MOORAGE_INSTANCES"].split()


def probe(stack: Stack, container: str, tenant: str = "alpha") -> tuple[int, str, float]:
    """(status, message, seconds) of alpha's inspect of its container."""
    t0 = time.monotonic()
    try:
        resp = stack.http("GET", f"/v1.41/containers/{container}/json", tenant=tenant, timeout=30)
    except requests.RequestException as exc:
        return 0, str(exc), time.monotonic() - t0
    message = resp.json().get("message", "") if resp.status_code >= 400 else ""
    return resp.status_code, message, time.monotonic() - t0


def wait_answer(stack: Stack, container: str, *, ok: bool, within: float) -> tuple[int, str]:
    deadline = time.monotonic() + within
    while True:
        status, message, _ = probe(stack, container)
        if (status == 200) == ok:
            return status, message
        if time.monotonic() > deadline:
            pytest.fail(f"inspect of {container} still {status} {message!r} after {within:g} s")
        time.sleep(0.5)


def map_matches_daemon(stack: Stack, endpoint: str) -> None:
    """alpha's rows in the store are exactly the alpha-labelled containers on host 1's daemon."""
    import requests_unixsocket

    alpha = stack.env["MOORAGE_PROJECT_alpha"]
    rows = json.loads(stack.admin("containers", "list", "--project", alpha, "--format", "json").stdout)
    mapped = sorted(r["id"] for r in rows)
    sock = endpoint[len("unix://") :].replace("/", "%2F")
    flt = json.dumps({"label": [f"org.openstack.moorage.project={alpha}"]})
    with requests_unixsocket.Session() as session:
        on_daemon = session.get(
            f"http+unix://{sock}/containers/json", params={"all": 1, "filters": flt}
        ).json()
    assert mapped == sorted(c["Id"][:12] for c in on_daemon) or mapped == sorted(c["Id"] for c in on_daemon)


def check_fault(stack: Stack, alpha_container: str, inject, recover, expect: tuple[str, ...]) -> None:
    """Inject a fault on host 1 during beta's workload on host 2, then recover from it."""
    uuid = instances(stack)[0]
    with Workload(stack) as work:
        time.sleep(2)  # the workload is in its stride
        t0 = time.monotonic()
        inject()
        status, message = wait_answer(stack, alpha_container, ok=False, within=ANSWER_WITHIN)
        assert status in (502, 503, 504), (status, message)
        assert uuid in message and any(word in message for word in expect), message
        status, message, took = probe(stack, alpha_container)  # every call answers at once
        assert took < ANSWER_WITHIN and status >= 500, (status, message, took)
        time.sleep(3)
        recover()
        wait_answer(stack, alpha_container, ok=True, within=RECOVER_WITHIN)
        rounds = work.rounds
        time.sleep(3)
        assert work.rounds > rounds, "beta's workload stalled"
    assert work.failures_since(t0) == [], work.failures_since(t0)[:5]
    # the merged view is whole again once the instance is back in it (its next heartbeat)
    deadline = time.monotonic() + RECOVER_WITHIN
    while "fault-alpha" not in stack.docker("ps", "-a", "--format", "{{.Names}}").stdout.decode().split():
        assert time.monotonic() < deadline, "alpha's container is missing from `docker ps -a`"
        time.sleep(1)
    map_matches_daemon(stack, stack.env["MOORAGE_DIRECT_HOSTS"].split()[0])


@pytest.fixture(scope="module")
def alpha_container(fstack):
    done = fstack.docker(
        "run", "-d", "--name", "fault-alpha", "busybox", "sh", "-c", "while :; do echo tick; sleep 1; done"
    )
    assert done.returncode == 0, done.stderr
    cid = done.stdout.decode().strip()
    where = json.loads(fstack.admin("containers", "list", "--format", "json").stdout)
    assert {r["name"]: r["instance"] for r in where}["fault-alpha"] == instances(fstack)[0]
    # beta claims host 2 before any fault
    warm = fstack.docker("run", "--rm", "busybox", "true", tenant="beta")
    assert warm.returncode == 0, warm.stderr
    return cid


def kill(pid: int, sig=signal.SIGTERM) -> None:
    os.kill(pid, sig)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def test_agent_stopped_then_restarted(fstack, alpha_container):
    pid = state(fstack)["procs"]["agent-1"]["pid"]
    check_fault(
        fstack,
        alpha_container,
        lambda: kill(pid),
        lambda: fstack.devstack("start-host", "1"),
        ("not answering",),
    )


def test_dockerd_stopped_then_restarted(fstack, alpha_container):
    pid = state(fstack)["procs"]["dockerd-1"]["pid"]
    check_fault(
        fstack,
        alpha_container,
        lambda: kill(pid),
        lambda: fstack.devstack("start-host", "1"),
        ("down", "not answering", "daemon"),
    )
    # the container was stopped with its daemon: start it again for the next faults
    assert fstack.docker("start", "fault-alpha").returncode == 0


def test_link_cut_then_restored(fstack, alpha_container):
    veth = f"mrg{state(fstack)['hash']}h1"
    check_fault(
        fstack,
        alpha_container,
        lambda: subprocess.run(["ip", "link", "set", veth, "down"], check=True),
        lambda: subprocess.run(["ip", "link", "set", veth, "up"], check=True),
        ("not answering",),
    )


def fill(path: str) -> int:
    """Write zeros to ``path`` until its filesystem is full (1 MiB blocks, then 4 KiB ones for
    the last room); the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as fh:
        for block in (b"\0" * (1 << 20), b"\0" * 4096):
            while True:
                try:
                    written += fh.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        with contextlib.suppress(OSError):
            os.fsync(fh.fileno())
    return written


def containers_in_use(stack: Stack, tenant: str = "alpha") -> int:
    """The store's count of the project's containers, reservations included (its quota usage)."""
    project = stack.env[f"MOORAGE_PROJECT_{tenant}"]
    shown = stack.admin("quota", "show", project, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)["quotas"]["containers"]["in_use"]


def test_disk_full_then_freed(fstack, alpha_container):
    """Host 1's dockerd data-root (a 300 MB filesystem of its own: devstack --host-disk-mb) is
    filled: alpha's creates on host 1 get dockerd's own error naming the cause within 10 s, its
    reads still answer, beta on host 2 loses no call; once the space is freed alpha runs
    containers on host 1 again, and ps, images, events, the map and the quota usage are whole."""
    data_root = os.path.join(fstack.dir, "hosts", "1", "docker")
    assert os.path.ismount(data_root), "the fault stack needs `devstack up --host-disk-mb`"
    filler = os.path.join(data_root, "moorage-fault-fill")
    in_use = containers_in_use(fstack)
    since = int(time.time())
    with Workload(fstack) as work:
        time.sleep(2)
        t0 = time.monotonic()
        try:
            assert fill(filler) > 0
            assert os.statvfs(data_root).f_bavail * os.statvfs(data_root).f_frsize < (1 << 20)
            # a create placed on host 1: an answer within 10 s, in Docker's shape, naming the cause
            for _ in range(3):
                started = time.monotonic()
                resp = fstack.http(
                    "POST",
                    "/v1.41/containers/create",
                    json={"Image": "busybox", "Cmd": ["true"]},
                    timeout=ANSWER_WITHIN + 20,
                )
                took = time.monotonic() - started
                assert took < ANSWER_WITHIN, f"create took {took:.1f} s"
                assert resp.status_code >= 400, resp.text
                assert set(resp.json()) == {"message"}, resp.text
                assert "no space left on device" in resp.json()["message"], resp.text
            # the docker CLI prints it
            ran = fstack.docker("run", "--rm", "busybox", "true", timeout=ANSWER_WITHIN + 20)
            assert ran.returncode != 0 and b"no space left on device" in ran.stderr, ran
            # what only reads the daemon still answers
            status, message, took = probe(fstack, alpha_container)
            assert status == 200 and took < ANSWER_WITHIN, (status, message, took)
            listed = fstack.http("GET", "/v1.41/containers/json?all=1")
            assert listed.status_code == 200 and alpha_container in {c["Id"] for c in listed.json()}
        finally:
            os.unlink(filler)
        ran = fstack.docker("run", "--name", "fault-disk-back", "busybox", "echo", "back", timeout=60)
        assert ran.returncode == 0 and ran.stdout == b"back\n", ran
        rounds = work.rounds
        time.sleep(3)
        assert work.rounds > rounds, "beta's workload stalled"
    assert work.failures_since(t0) == [], work.failures_since(t0)[:5]
    # whole again: ps, images, events, the map, the quota usage
    names = fstack.docker("ps", "-a", "--format", "{{.Names}}").stdout.decode().split()
    assert "fault-alpha" in names and "fault-disk-back" in names, names
    images = fstack.docker("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert "busybox:latest" in images.stdout.decode().split(), images
    events = fstack.http("GET", f"/v1.41/events?since={since}&until={int(time.time()) + 1}", timeout=30)
    assert events.status_code == 200, events.text
    seen = [json.loads(line) for line in events.text.splitlines() if line.strip()]
    back = [e for e in seen if e.get("Actor", {}).get("Attributes", {}).get("name") == "fault-disk-back"]
    assert {"create", "start", "die"} <= {e.get("Action") for e in back}, seen[-10:]
    map_matches_daemon(fstack, fstack.env["MOORAGE_DIRECT_HOSTS"].split()[0])
    assert containers_in_use(fstack) == in_use + 1  # fault-disk-back; no failed create left a slot
    assert fstack.docker("rm", "fault-disk-back").returncode == 0
    assert containers_in_use(fstack) == in_use


def test_replica_killed_and_replica_drained(fstack, alpha_container):
    """SIGKILL on replica 2: replica 1 serves on. SIGTERM on replica 1 with a `logs -f` open:
    the stream ends cleanly, new calls are refused at once, replica 2 serves on."""
    gateways = fstack.env["MOORAGE_GATEWAYS"].split()
    assert len(gateways) == 2
    procs = state(fstack)["procs"]
    with Workload(fstack) as work:
        time.sleep(2)
        t0 = time.monotonic()
        kill(procs["gateway-2"]["pid"], signal.SIGKILL)
        time.sleep(3)
        assert probe(fstack, alpha_container)[0] == 200
        assert work.failures_since(t0) == []
    up = fstack.devstack("up")  # repairs: replica 2 again
    assert up.returncode == 0, up.stderr

    second = Stack({**fstack.env, "DOCKER_HOST": gateways[1]}, fstack.dir)
    with Workload(second) as work:
        time.sleep(2)
        follow = requests.get(
            fstack.gateway + f"/v1.41/containers/{alpha_container}/logs?stdout=1&follow=1&tail=0",
            headers=fstack.headers("alpha"),
            stream=True,
            timeout=60,
        )
        assert follow.status_code == 200
        chunks = follow.iter_content(chunk_size=None)
        assert next(chunks)  # ticking
        t0 = time.monotonic()
        kill(state(fstack)["procs"]["gateway-1"]["pid"], signal.SIGTERM)
        for _ in chunks:  # the stream ends, without an error
            if time.monotonic() - t0 > 60:
                pytest.fail("the log stream did not end within 60 s of SIGTERM")
        with pytest.raises(requests.ConnectionError):
            requests.get(fstack.gateway + "/_ping", timeout=5)
        time.sleep(2)
        assert work.failures_since(t0) == [], work.failures_since(t0)[:5]
    up = fstack.devstack("up")
    assert up.returncode == 0, up.stderr
    assert probe(fstack, alpha_container)[0] == 200


def test_postgres_restarted(fstack, alpha_container):
    """The store restarts under the workload: calls made meanwhile get 503 in Docker's shape
    (never a 500 of the gateway's own), and everything answers again once it is back."""
    with Workload(fstack) as work:
        time.sleep(2)
        t0 = time.monotonic()
        kill(state(fstack)["procs"]["postgres"]["pid"], signal.SIGINT)
        up = fstack.devstack("up")
        assert up.returncode == 0, up.stderr
        deadline = time.monotonic() + RECOVER_WITHIN
        while probe(fstack, alpha_container)[0] != 200:
            assert time.monotonic() < deadline, "not answering again after PostgreSQL came back"
            time.sleep(0.5)
        settled = time.monotonic()
        time.sleep(5)
    during = work.failures_since(t0)
    assert all(status in (0, 503) for _, _, status, _ in during), during[:5]
    assert [f for f in during if f[0] > settled + 1] == []
    map_matches_daemon(fstack, fstack.env["MOORAGE_DIRECT_HOSTS"].split()[0])


def test_instance_vanishes_then_is_rebuilt(fstack, alpha_container):
    """Host 1's namespace and every process in it gone: alpha's calls answer naming the
    instance; rebuilt (same UUID, its disk kept), the container is back."""
    st = state(fstack)
    netns = f"mrg-{st['hash']}-h1"

    def vanish():
        fstack.devstack("stop-host", "1")
        subprocess.run(["ip", "netns", "del", netns], check=False)

    check_fault(
        fstack, alpha_container, vanish, lambda: fstack.devstack("start-host", "1"), ("not answering",)
    )
