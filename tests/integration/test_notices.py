"""Instances booted and deleted for a project (dedicated tenancy, devstack's local provider:
`boot-host` / `delete-host`), as the project and OpenStack hear of them: its webhooks (signed,
retried after the receiver was down, never another project's), its `docker events` (the
gateway's own events in the journal, replayed with --since and streamed live), and the
compute.container_instance.* notifications on the stack's RabbitMQ (with --notifications).

Runs on the session's stack (`scripts/devstack up DIR --hosts 2 --notifications`): alpha and beta
hold the two hosts, so gamma, added here, gets one booted for it; it is deleted once empty, after
the stack's --release-grace."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from tests.integration.conftest import DOCKER, stack_tenancy
from tests.integration.test_dedicated import add_tenants
from tests.integration.test_notifications import Listener, _restart_gateway, data

pytestmark = pytest.mark.timeout(420)

GONE_WITHIN = 240  # the stack's release grace (60 s by default), a reaper pass, delete-host


class Receiver:
    """A webhook on loopback that records every POST (headers and body) and answers 204;
    ``start`` may come after the gateway first tried it (the port is reserved meanwhile)."""

    def __init__(self):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.got: list[tuple[dict, bytes]] = []
        self.cond = threading.Condition()
        self.server: http.server.HTTPServer | None = None

    def start(self) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.cond:
                    outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    outer.cond.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def notices(self) -> list[dict]:
        with self.cond:
            return [json.loads(body) for _, body in self.got]

    def wait_for(self, what: str, predicate, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [json.loads(body) for _, body in self.got]
                if predicate(found):
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"webhook: {what} not within {timeout:g} s; got {found}")
                self.cond.wait(left)


@pytest.fixture(scope="module")
def tenants(stack):
    if stack_tenancy(stack.dir) != "dedicated":
        pytest.skip("instances are booted for one project with dedicated tenancy only")
    add_tenants(stack)
    return stack


def subscribe(stack, tenant: str, url: str, *events: str) -> dict:
    argv = ["notices", "subscribe", url, "--host", stack.env["DOCKER_HOST"], "--format", "json"]
    for event in events:
        argv += ["--event", event]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_CONFIG"] = stack.env[f"MOORAGE_CONFIG_{tenant}"]
    done = subprocess.run(
        [*stack.env["MOORAGE_ADMIN"].split()[:1], *argv], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def unsubscribe(stack, tenant: str, subscription: str) -> None:
    found = stack.http("DELETE", f"/moorage/v1/notices/{subscription}", tenant=tenant)
    assert found.status_code == 200, found.text


def ok(result) -> str:
    assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")
    return result.stdout.decode().strip()


def booted_for(stack, project: str) -> list[str]:
    rows = json.loads(stack.admin("instances", "list", "--format", "json").stdout)
    fixed = stack.env["MOORAGE_INSTANCES"].split()
    return [r["uuid"] for r in rows if r["project"] == project and r["uuid"] not in fixed]


def daemon_events_argv(since: float) -> list[str]:
    """`docker events` for the gateway's daemon events (an instance's lifecycle) from `since` to
    now, one JSON object a line (tests/nova/test_pool_notifications.py asks a Nova pool the same)."""
    return [
        "events",
        "--since",
        f"{since:.9f}",
        "--until",
        f"{time.time():.9f}",
        "--filter",
        "type=daemon",
        "--format",
        "{{json .}}",
    ]


def parse_daemon_events(shown: str) -> list[tuple[str, str, dict]]:
    events = [json.loads(line) for line in shown.splitlines() if line.strip()]
    return [(e["Action"], e["Actor"]["ID"], e["Actor"]["Attributes"]) for e in events]


def daemon_events(stack, tenant: str, since: float) -> list[tuple[str, str, dict]]:
    return parse_daemon_events(ok(stack.docker(*daemon_events_argv(since), tenant=tenant)))


def test_an_instance_booted_and_deleted_for_a_project_is_told(tenants, unique):
    stack = tenants
    gamma = stack.env["MOORAGE_PROJECT_gamma"]
    beta = stack.env["MOORAGE_PROJECT_beta"]
    url = stack.env.get("MOORAGE_TRANSPORT_URL")
    broker = Listener(url) if url else None
    mine, others = Receiver(), Receiver()  # gamma's webhook starts late: its first tries fail
    others.start()
    watcher = None
    try:
        sub = subscribe(stack, "gamma", mine.url)
        assert sub["events"] == ["instance.create", "instance.delete"] and len(sub["secret"]) >= 32
        everything = ["instance.create", "instance.delete", "container.create", "container.destroy"]
        subscribe(stack, "beta", others.url, *everything)
        listed = stack.http("GET", "/moorage/v1/notices", tenant="gamma").json()
        assert [s["id"] for s in listed] == [sub["id"]] and "secret" not in listed[0]
        # a destination in the operator's networks is refused
        refused = stack.http(
            "POST", "/moorage/v1/notices", tenant="gamma", json={"url": "http://198.18.0.1/"}
        )
        assert refused.status_code == 400 and "not a public address" in refused.json()["message"]

        since = time.time() - 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env.update(DOCKER_HOST=stack.env["DOCKER_HOST"], DOCKER_CONFIG=stack.env["MOORAGE_CONFIG_gamma"])
        watcher = subprocess.Popen(  # a live subscriber: the gateway's own events as they happen
            [DOCKER, "events", "--filter", "type=daemon", "--format", "{{.Action}} {{.Actor.ID}}"],
            stdout=subprocess.PIPE,
            env=env,
        )
        # alpha and beta hold the stack's two hosts: gamma's container needs one booted for it
        ok(stack.docker("run", "-d", "--name", f"{unique}-ka", "busybox", "sleep", "300"))
        ok(stack.docker("run", "-d", "--name", f"{unique}-kb", "busybox", "sleep", "300", tenant="beta"))
        ok(stack.docker("run", "-d", "--name", unique, "busybox", "sleep", "300", tenant="gamma"))
        (booted,) = booted_for(stack, gamma)
        time.sleep(4)  # gamma's webhook was down for its first tries
        mine.start()

        (created,) = mine.wait_for(
            "instance.create", lambda n: any(x["event"] == "instance.create" for x in n), 60
        )
        headers, body = mine.got[0]
        assert (
            headers["x-moorage-signature"]
            == "sha256=" + hmac.new(sub["secret"].encode(), body, hashlib.sha256).hexdigest()
        )
        assert (
            headers["x-moorage-event"] == "instance.create" and headers["x-moorage-delivery"] == created["id"]
        )
        assert created["project_id"] == gamma and created["data"]["instance_uuid"] == booted
        assert created["data"]["provider"] == "local"
        # the delivery is marked done once the receiver's answer is back, a moment after the
        # receiver has the body: the count is read until it is 0 (bounded)
        waiting = None
        for _ in range(50):
            waiting = stack.http("GET", "/moorage/v1/notices", tenant="gamma").json()
            if waiting[0]["waiting"] == 0:
                break
            time.sleep(0.1)
        assert waiting[0]["waiting"] == 0, waiting

        # docker events --since replays the gateway's own events, in the order they happened
        actions = [(a, i) for a, i, _ in daemon_events(stack, "gamma", since)]
        assert actions[:3] == [("create", booted), ("claim", booted), ("place", booted)], actions
        attributes = daemon_events(stack, "gamma", since)[2][2]
        assert attributes == {"container": unique, "instance": booted, "name": "moorage", "provider": "local"}
        assert all(a != "create" for a, _, _ in daemon_events(stack, "alpha", since))

        ok(stack.docker("rm", "-f", unique, tenant="gamma"))
        mine.wait_for(
            "instance.delete", lambda n: any(x["event"] == "instance.delete" for x in n), GONE_WITHIN
        )
        assert [n["event"] for n in mine.notices()] == ["instance.create", "instance.delete"]
        assert mine.notices()[1]["data"]["instance_uuid"] == booted
        assert ("destroy", booted) in [(a, i) for a, i, _ in daemon_events(stack, "gamma", since)]
        time.sleep(2)
        watcher.send_signal(signal.SIGINT)
        live, _ = watcher.communicate(timeout=30)
        watcher = None
        assert live.decode().split("\n")[:4] == [
            f"create {booted}",
            f"claim {booted}",
            f"place {booted}",
            f"destroy {booted}",
        ], live

        # the journal outlives the gateway: the same replay after a restart
        replayed = daemon_events(stack, "gamma", since)
        _restart_gateway(stack)
        assert daemon_events(stack, "gamma", since)[: len(replayed)] == replayed

        # beta's webhook heard of beta's own containers, never of gamma's or alpha's
        ok(stack.docker("run", "--rm", "--name", f"{unique}-a", "busybox", "true"))
        ok(stack.docker("run", "--rm", "--name", f"{unique}-b", "busybox", "true", tenant="beta"))
        heard = others.wait_for(
            "beta's container.destroy",
            lambda n: any(x["event"] == "container.destroy" for x in n),
            60,
        )
        assert {n["project_id"] for n in heard} == {beta}
        assert [(n["event"], n["data"]["name"]) for n in heard] == [
            ("container.create", f"{unique}-kb"),
            ("container.create", f"{unique}-b"),
            ("container.destroy", f"{unique}-b"),
        ]
        assert {n["data"]["image"] for n in heard} == {"busybox"}

        if broker is not None:  # OpenStack heard it too: compute.container_instance.*
            got = broker.wait_for(
                lambda g: any(
                    e == "compute.container_instance.delete.end" and data(p).get("instance_uuid") == booted
                    for _, _, e, p in g
                ),
                60,
            )
            told = [
                (e, data(p))
                for _, _, e, p in got
                if e.startswith("compute.container_instance.") and data(p).get("project_id") == gamma
            ]
            assert [e.removeprefix("compute.container_instance.") for e, _ in told] == [
                "create.start",
                "create.end",
                "delete.start",
                "delete.end",
            ], told
            assert told[0][1]["instance_uuid"] is None and told[0][1]["provider"] == "local"
            assert {d["instance_uuid"] for _, d in told[1:]} == {booted}
            assert {d["pool_member"] for _, d in told} == {told[0][1]["pool_member"]}
        unsubscribe(stack, "gamma", sub["id"])
        assert stack.http("GET", "/moorage/v1/notices", tenant="gamma").json() == []
    finally:
        for tenant in ("beta", "gamma"):  # a webhook left behind would be retried for long
            for left in stack.http("GET", "/moorage/v1/notices", tenant=tenant).json():
                unsubscribe(stack, tenant, left["id"])
        if watcher is not None:
            watcher.kill()
            watcher.wait()
        mine.stop()
        others.stop()
        if broker is not None:
            broker.stop()
        stack.docker("rm", "-f", unique, tenant="gamma")
        stack.docker("rm", "-f", f"{unique}-ka")
        stack.docker("rm", "-f", f"{unique}-kb", tenant="beta")
