"""The fault lane: Keystone stopped for 30 s under a steady stream of calls.

Its own small stack (`scripts/devstack up DIR --hosts 1 --keystone`: tests/faults/conftest.py),
where the gateway trusts a token Keystone validated for devstack's cache_ttl (5 s; 60 by
default). While Keystone is down:
- a token the gateway validated moments before keeps working until its cache entry expires;
- a token it has not seen yet (issued before the stop, first sent during it), an expired
  cache entry and a garbage token get 503 (or 401) in Docker's shape, naming the identity
  service, never a 500 and never after more than 10 s;
- /readyz answers 503 naming Keystone;
and once it is back every token works again, /readyz is 200, and alpha's container is there.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import requests

from tests.integration.conftest import Stack
from tests.keystone.conftest import http, read_exports, token_of

pytestmark = pytest.mark.faults

OUTAGE = 30.0  # seconds Keystone stays down
ANSWER_WITHIN = 10.0  # seconds: every call answers within this, whatever Keystone does
CACHE_TTL = 5.0  # devstack's [identity] cache_ttl (scripts/moorage_scripts/devstack/identity.py)
READY_CACHE = 10.0  # gateway/tenancy/keystone.py: a readiness answer is reused this long


def fresh_token(stack: Stack, tenant: str = "alpha") -> str:
    """A new project-scoped token from Keystone (none of the gateway's workers has seen it)."""
    return token_of(read_exports(stack.env[f"MOORAGE_OPENRC_{tenant}"]))[0]


def headers(stack: Stack, token: str, tenant: str = "alpha") -> dict[str, str]:
    return {"X-Auth-Token": token, "X-Auth-Project-Id": stack.env[f"MOORAGE_PROJECT_{tenant}"]}


def call(stack: Stack, token: str, path: str = "/v1.41/containers/json") -> tuple[int, str, float]:
    """(status, message, seconds) of one call on a new connection (any worker may take it)."""
    t0 = time.monotonic()
    try:
        status, _, body = http(stack.gateway, "GET", path, headers=headers(stack, token), timeout=30)
    except OSError as exc:
        return 0, f"{type(exc).__name__}: {exc}", time.monotonic() - t0
    took = time.monotonic() - t0
    if status >= 400:
        doc = json.loads(body)
        assert set(doc) == {"message"}, (status, body[:300])  # Docker's error shape
        return status, doc["message"], took
    return status, "", took


def readyz(stack: Stack) -> tuple[int, str]:
    status, _, body = http(stack.gateway, "GET", "/readyz", timeout=30)
    return status, body.decode()


def wait_for(what: str, check, within: float):
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {within:g} s")
        time.sleep(0.5)


class Calls:
    """Calls on new connections every half second, with the tenant's token (as the docker CLI
    sends it), a token first seen meanwhile and a garbage one; every answer is recorded."""

    def __init__(self, stack: Stack, tokens: dict[str, str]):
        self.stack, self.tokens = stack, tokens
        self.seen: list[tuple[float, str, int, str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for kind, token in self.tokens.items():
                status, message, took = call(self.stack, token)
                self.seen.append((time.monotonic(), kind, status, message, took))
            self._stop.wait(0.5)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=60)


def stop_keystone(stack: Stack) -> None:
    """SIGKILL Keystone's gunicorn master and its worker (a crash: `scripts/keystone down`
    waits for the gateway's keep-alive connections to close first)."""
    with open(os.path.join(stack.dir, "keystone", "keystone.pid")) as fh:
        master = int(fh.read().split()[0])
    pids = [master]
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/stat") as fh:
                if name.isdigit() and int(fh.read().rpartition(")")[2].split()[1]) == master:
                    pids.append(int(name))
        except (OSError, ValueError, IndexError):
            continue
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        wait_for(f"Keystone's process {pid} gone", lambda p=pid: not os.path.exists(f"/proc/{p}"), 10)


def test_keystone_stopped_for_30_s(kstack):
    st = kstack
    ran = st.docker("run", "-d", "--name", "ks-fault-alpha", "busybox", "sleep", "3600")
    assert ran.returncode == 0, ran.stderr
    assert readyz(st)[0] == 200
    unseen = fresh_token(st)  # issued now, first sent while Keystone is down
    cached = fresh_token(st)
    garbage = "gAAAAAB" + "x" * 180
    try:
        outage(st, cached, unseen, garbage)
    except BaseException:
        st.devstack("up")  # Keystone back for whatever runs next
        raise
    # nothing lost: the container is there and the tenant runs containers again
    names = st.docker("ps", "--format", "{{.Names}}")
    assert names.returncode == 0 and "ks-fault-alpha" in names.stdout.decode().split(), names
    ran = st.docker("run", "--rm", "busybox", "echo", "back")
    assert ran.returncode == 0 and ran.stdout == b"back\n", ran
    assert st.docker("rm", "-f", "ks-fault-alpha").returncode == 0


def outage(st: Stack, cached: str, unseen: str, garbage: str) -> None:
    """Keystone down for OUTAGE seconds, then back; ``cached`` is validated just before."""
    with requests.Session() as session:  # one keep-alive connection: one worker, one cache
        resp = session.get(st.gateway + "/v1.41/containers/json", headers=headers(st, cached), timeout=30)
        assert resp.status_code == 200, resp.text
        validated = time.monotonic()
        with Calls(st, {"tenant": st.headers("alpha")["X-Auth-Token"], "garbage": garbage}) as calls:
            stop_keystone(st)
            down_at = time.monotonic()
            assert down_at - validated < CACHE_TTL - 1, "Keystone took too long to stop for this test"

            # the token validated moments ago still works, on the worker that validated it
            resp = session.get(st.gateway + "/v1.41/containers/json", headers=headers(st, cached), timeout=30)
            assert resp.status_code == 200, resp.text
            assert "ks-fault-alpha" in {n.lstrip("/") for c in resp.json() for n in c["Names"]}

            # a token no worker has seen: 503 in Docker's shape, at once
            status, message, took = call(st, unseen)
            assert status == 503 and took < ANSWER_WITHIN, (status, message, took)
            assert "identity service unavailable" in message and "Keystone" in message, message

            # readiness names it, within its cache's life
            status, text = wait_for(
                "/readyz reporting Keystone unreachable",
                lambda: (r := readyz(st))[0] == 503 and r,
                READY_CACHE + 5,
            )
            assert "identity: cannot reach Keystone" in text, text

            # the cached token's entry expires: then it too is 503, never a pass
            time.sleep(max(0.0, validated + CACHE_TTL + 0.5 - time.monotonic()))
            resp = session.get(st.gateway + "/v1.41/containers/json", headers=headers(st, cached), timeout=30)
            assert resp.status_code == 503, resp.text
            assert "identity service unavailable" in resp.json()["message"]
            # so is the tenant's own (validated by `docker run` above): the docker CLI prints the
            # message and returns
            ps = st.docker("ps", timeout=ANSWER_WITHIN + 20)
            assert ps.returncode != 0 and b"identity service unavailable" in ps.stderr, ps

            time.sleep(max(0.0, down_at + OUTAGE - time.monotonic()))
            up = st.devstack("up")  # starts Keystone again (scripts/keystone up), checks the rest
            assert up.returncode == 0, up.stderr
            back_at = time.monotonic()
            for token in (cached, unseen, st.headers("alpha")["X-Auth-Token"]):
                wait_for("a token working again", lambda t=token: call(st, t)[0] == 200, ANSWER_WITHIN)
            wait_for("/readyz ready again", lambda: readyz(st)[0] == 200, READY_CACHE + 5)
            recovered = time.monotonic()
            time.sleep(3)

    during = [s for s in calls.seen if down_at <= s[0] < back_at]
    assert len(during) >= 20, f"only {len(during)} calls while Keystone was down"
    assert all(s[2] in (401, 503) for s in during if s[1] == "garbage"), during
    assert all(s[2] in (200, 503) for s in during if s[1] == "tenant"), during
    assert all(s[4] < ANSWER_WITHIN for s in calls.seen), max(calls.seen, key=lambda s: s[4])
    assert not [s for s in calls.seen if s[2] >= 500 and s[2] != 503], calls.seen
    after = [s for s in calls.seen if s[0] > recovered]
    assert after and all(s[2] == (401 if s[1] == "garbage" else 200) for s in after), after
