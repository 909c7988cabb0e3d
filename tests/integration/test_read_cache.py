"""The read cache (gateway/services/readcache.py): ps and inspect from a daemon's recent answer,
never stale after a write through the gateway, whichever worker answers, and a container that
exits by itself seen as exited within a bound (its event changes the generation)."""

import json
import os
import re
import time
import uuid
from urllib.parse import quote

import pytest
import requests

# How late, after dockerd's own ps shows a container exited, a ps through the gateway may still
# show it running: the event's way to the recorder (about 30 ms here) plus a poll, under the
# load of a shared machine. A cache that only waited for its answers' age (readcache.MAX_AGE,
# 0.5 s) would miss it often.
EXIT_SEEN_WITHIN = 0.25


def worker_of(stack, rid: str) -> str:
    """The pid of the gunicorn worker that answered the request (its access-log line)."""
    pattern = re.compile(rf"\[(\d+)\] \S+ moorage\.access \[{rid}\]")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(os.path.join(stack.dir, "gateway-1.log")) as fh:
            for line in fh:
                found = pattern.search(line)
                if found:
                    return found.group(1)
        time.sleep(0.05)
    pytest.fail(f"request {rid} is not in the gateway's log")


def fresh(stack, method: str, path: str, **kw) -> tuple[requests.Response, str]:
    """One request on a connection of its own (gunicorn hands it to any worker)."""
    rid = f"it-readcache-{uuid.uuid4().hex[:12]}"
    headers = {**stack.headers(), "X-Request-Id": rid, "Connection": "close"}
    resp = requests.request(method, stack.gateway + path, headers=headers, timeout=30, **kw)
    return resp, rid


def on_every_worker(stack, method: str, path: str, check) -> None:
    """The request on fresh connections until two workers answered it, every answer checked."""
    workers = set()
    for _ in range(80):
        resp, rid = fresh(stack, method, path)
        check(resp)
        workers.add(worker_of(stack, rid))
        if len(workers) >= 2:
            return
    pytest.fail(f"only worker(s) {workers} answered; devstack runs two")


def listed(resp, name: str) -> dict | None:
    assert resp.status_code == 200, resp.text
    return next((c for c in resp.json() if f"/{name}" in c["Names"]), None)


def test_a_read_after_a_write_sees_it_whichever_worker_answers(stack, cached, unique):
    name, renamed = unique, f"{unique}-b"
    made = stack.docker("create", "--name", name, "busybox", "sleep", "300")
    assert made.returncode == 0, made.stderr
    ps = "/containers/json?all=1"
    try:

        def state_is(want: str, as_name: str):
            def check_ps(resp):
                row = listed(resp, as_name)
                assert row is not None and row["State"] == want, row

            def check_inspect(resp):
                assert resp.status_code == 200, resp.text
                assert resp.json()["State"]["Status"] == want
                assert resp.json()["Name"] == f"/{as_name}"

            return check_ps, check_inspect

        def write_then_read(method: str, path: str, want: str, as_name: str):
            # both workers hold answers from before the write...
            check_ps, check_inspect = state_is(*before)
            on_every_worker(stack, "GET", ps, check_ps)
            on_every_worker(stack, "GET", f"/containers/{before[1]}/json", check_inspect)
            resp, _ = fresh(stack, method, path)
            assert resp.status_code < 300, resp.text
            # ...and neither answers with them after it
            check_ps, check_inspect = state_is(want, as_name)
            on_every_worker(stack, "GET", ps, check_ps)
            on_every_worker(stack, "GET", f"/containers/{as_name}/json", check_inspect)

        before = ("created", name)
        write_then_read("POST", f"/containers/{name}/start", "running", name)
        before = ("running", name)
        write_then_read("POST", f"/containers/{name}/rename?name={renamed}", "running", renamed)
        before = ("running", renamed)
        write_then_read("POST", f"/containers/{renamed}/kill", "exited", renamed)

        # a removal: gone from the list and from inspect on every worker
        on_every_worker(stack, "GET", ps, lambda r: listed(r, renamed))
        resp, _ = fresh(stack, "DELETE", f"/containers/{renamed}")
        assert resp.status_code == 204, resp.text
        on_every_worker(
            stack, "GET", ps, lambda r: (listed(r, renamed) is None) or pytest.fail("still listed")
        )
        on_every_worker(
            stack, "GET", f"/containers/{renamed}/json", lambda r: r.status_code == 404 or pytest.fail(r.text)
        )
    finally:
        stack.docker("rm", "-f", name, renamed)


def test_a_container_that_exits_by_itself_is_seen_exited_at_once(stack, cached, unique):
    """ps through the gateway and straight at dockerd, in turn: the gateway shows each container
    exited no later than EXIT_SEEN_WITHIN after dockerd first does."""
    import requests_unixsocket

    names = [f"{unique}-{i}" for i in range(6)]
    direct = requests_unixsocket.Session()
    direct_base = "http+unix://" + stack.direct[len("unix://") :].replace("/", "%2F")
    gateway = requests.Session()  # keep-alive: the polls are cheap and their answers cached
    try:
        ids = []
        for i, name in enumerate(names):
            run = stack.docker("run", "-d", "--name", name, "busybox", "sh", "-c", f"sleep {1 + 0.3 * i}")
            assert run.returncode == 0, run.stderr
            ids.append(run.stdout.decode().strip())
        query = "/containers/json?all=1&filters=" + quote(json.dumps({"id": ids}))
        exited: dict[str, dict[str, float]] = {"direct": {}, "gateway": {}}
        deadline = time.monotonic() + 30
        while any(len(seen) < len(ids) for seen in exited.values()):
            assert time.monotonic() < deadline, f"not exited after 30 s: {exited}"
            for side, resp in (
                ("direct", direct.get(direct_base + query, timeout=30)),
                ("gateway", gateway.get(stack.gateway + query, headers=stack.headers(), timeout=30)),
            ):
                assert resp.status_code == 200, resp.text
                now = time.monotonic()
                for row in resp.json():
                    if row["State"] == "exited":
                        exited[side].setdefault(row["Id"], now)
            time.sleep(0.005)
        for cid, name in zip(ids, names, strict=True):
            late = exited["gateway"][cid] - exited["direct"][cid]
            assert late < EXIT_SEEN_WITHIN, (
                f"{name} shown running {late:.3f} s after dockerd showed it exited"
            )
    finally:
        stack.docker("rm", "-f", *names)
