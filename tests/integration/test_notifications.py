"""Notifications to a real RabbitMQ (devstack --notifications), read by a real oslo.messaging
notification listener; durable events across gateway and dockerd restarts.

The listener consumes the default queue (notifications.info and .error) that the gateway's
notifier declares when it first sends, so what was sent before the listener started waits for
it there; each test picks its own container's notifications by name or ID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import warnings

import pytest

pytestmark = pytest.mark.timeout(300)

CONTAINER_ACTIONS = ("create", "start", "delete")


class Listener:
    """An oslo.messaging notification listener on the stack's broker, collecting everything."""

    def __init__(self, url: str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import oslo_messaging
            from oslo_config import cfg
        conf = cfg.ConfigOpts()
        conf([], project="moorage-tests", default_config_files=[], default_config_dirs=[])
        self.transport = oslo_messaging.get_notification_transport(conf, url=url)
        self.got: list[tuple[str, str, str, dict]] = []
        self.cond = threading.Condition()
        outer = self

        class Endpoint:
            def _take(self, ctxt, publisher_id, event_type, payload, metadata, priority):
                with outer.cond:
                    outer.got.append((priority, publisher_id, event_type, payload))
                    outer.cond.notify_all()

            def info(self, *args):
                self._take(*args, priority="INFO")

            def error(self, *args):
                self._take(*args, priority="ERROR")

        self.listener = oslo_messaging.get_notification_listener(
            self.transport, [oslo_messaging.Target(topic="notifications")], [Endpoint()], executor="threading"
        )
        self.listener.start()

    def stop(self) -> None:
        self.listener.stop()
        self.listener.wait()
        self.transport.cleanup()

    def wait_for(self, predicate, timeout: float = 60) -> list:
        """Every notification so far once ``predicate(list)`` holds (else fail)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.got):
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"notifications not received within {timeout} s; got {self.events()}")
                self.cond.wait(left)
            return list(self.got)

    def events(self) -> list[str]:
        return [e for _, _, e, _ in self.got]


def data(payload: dict) -> dict:
    return payload.get("nova_object.data", {})


def of_container(got: list, name: str) -> list[tuple[str, dict]]:
    """(event type, payload data) of the container notifications about container ``name``."""
    return [
        (event, data(payload))
        for _, _, event, payload in got
        if event.startswith("compute.container.")
        and event != "compute.container.exists"  # a round may fall at any moment
        and data(payload).get("name") == name
    ]


@pytest.fixture
def notified(stack):
    url = stack.env.get("MOORAGE_TRANSPORT_URL")
    if not url:
        pytest.skip("the stack runs without --notifications (scripts/devstack up DIR --notifications)")
    listener = Listener(url)
    yield listener
    listener.stop()


def test_run_rm_sends_the_whole_sequence(stack, notified, unique):
    run = stack.docker("run", "--rm", "--name", unique, "busybox", "true")
    assert run.returncode == 0, run.stderr
    got = notified.wait_for(
        lambda g: any(e == "compute.container.delete.end" for e, _ in of_container(g, unique)), 60
    )
    mine = of_container(got, unique)
    events = [e.removeprefix("compute.container.") for e, _ in mine]
    assert [e for e in events if not e.startswith("attach.")] == [
        "create.start",
        "create.end",
        "start.start",
        "start.end",
        "delete.start",
        "delete.end",
    ], events
    assert events.index("attach.start") < events.index("start.start")
    by_event = dict(mine)
    created = by_event["compute.container.create.end"]
    container_id = created["container_id"]
    assert len(container_id) == 64
    assert created["project_id"] == stack.env["MOORAGE_PROJECT_alpha"]
    assert created["image"] == "busybox" and created["state_after"] == "created"
    assert created["instance_uuid"] in stack.env["MOORAGE_INSTANCES"].split()
    assert created["fault"] is None and created["request_id"].startswith("req-")
    assert by_event["compute.container.start.start"]["state_before"] == "created"
    assert by_event["compute.container.delete.end"]["state_after"] == "removed"
    for event, payload in mine:
        assert payload["container_id"] in (None, container_id), event
        assert payload["user_id"] == created["user_id"]
    publishers = {p for _, p, e, pl in got if data(pl).get("name") == unique}
    assert len(publishers) == 1 and publishers.pop().startswith("moorage:")
    # the same request's audit trail: CADF, success, no token
    audits = [pl for _, _, e, pl in got if e == "audit.http.response" and pl.get("target", {}).get("id")]
    assert audits and all(a["typeURI"].endswith("/audit/1.0/event") for a in audits)


def test_run_exec_stop_rm_in_order(stack, notified, unique):
    assert stack.docker("run", "-d", "--name", unique, "busybox", "sleep", "300").returncode == 0
    assert stack.docker("exec", unique, "true").returncode == 0
    assert stack.docker("pause", unique).returncode == 0
    assert stack.docker("unpause", unique).returncode == 0
    assert stack.docker("rename", unique, f"{unique}-2").returncode == 0
    assert stack.docker("stop", "-t", "1", f"{unique}-2").returncode == 0
    assert stack.docker("rm", f"{unique}-2").returncode == 0

    def mine(g):  # in the order they came, under either name
        return [
            (e, data(p))
            for _, _, e, p in g
            if e.startswith("compute.container.")
            and e != "compute.container.exists"
            and data(p).get("name") in (unique, f"{unique}-2")
        ]

    got = notified.wait_for(lambda g: any(e == "compute.container.delete.end" for e, _ in mine(g)), 60)
    events = [e.removeprefix("compute.container.") for e, _ in mine(got)]
    order = ["create", "start", "exec", "pause", "unpause", "rename", "stop", "delete"]
    assert events == [f"{a}.{phase}" for a in order for phase in ("start", "end")], events
    states = {e: (p["state_before"], p["state_after"]) for e, p in mine(got) if e.endswith(".end")}
    assert states["compute.container.pause.end"] == ("running", "paused")
    assert states["compute.container.unpause.end"] == ("paused", "running")
    assert states["compute.container.stop.end"] == ("running", "exited")
    assert states["compute.container.delete.end"] == ("exited", "removed")


def test_a_refused_create_sends_error(stack, notified, unique):
    run = stack.docker("run", "--privileged", "--name", unique, "busybox", "true")
    assert run.returncode != 0
    got = notified.wait_for(
        lambda g: any(e == "compute.container.create.error" for e, _ in of_container(g, unique)), 60
    )
    (error,) = [p for e, p in of_container(got, unique) if e == "compute.container.create.error"]
    priority = next(pr for pr, _, e, pl in got if e == "compute.container.create.error" and data(pl) == error)
    assert priority == "ERROR"
    assert error["fault"]["nova_object.name"] == "ExceptionPayload"
    assert error["fault"]["nova_object.data"]["code"] == 403
    assert "privileged" in error["fault"]["nova_object.data"]["message"]
    assert [e for e, _ in of_container(got, unique)] == [
        "compute.container.create.start",
        "compute.container.create.error",
    ]
    refusals = notified.wait_for(
        lambda g: any(
            e == "audit.http.response" and pl["reason"]["reasonCode"] == "403" and pl["outcome"] == "failure"
            for _, _, e, pl in g
        ),
        30,
    )
    assert refusals


def test_exists_arrives_on_schedule(stack, notified, unique):
    run = stack.docker("run", "-d", "--name", unique, "busybox", "sleep", "300")
    assert run.returncode == 0, run.stderr
    container_id = run.stdout.decode().strip()
    try:

        def exists(g):
            return [
                data(pl)
                for _, _, e, pl in g
                if e == "compute.container.exists" and data(pl)["container_id"] == container_id
            ]

        # devstack's exists_interval is 15 s: two rounds within 15 s + 15 s + slack
        got = notified.wait_for(lambda g: len(exists(g)) >= 2, 60)
        first, second = exists(got)[:2]
        assert second["audit_period_beginning"] == first["audit_period_ending"]
        assert first["name"] == unique and first["project_id"] == stack.env["MOORAGE_PROJECT_alpha"]
        assert second["uptime_seconds"] > 0 and second["image"] == "busybox"
    finally:
        stack.docker("rm", "-f", unique)


def test_a_broker_stopped_mid_run_loses_nothing(stack, notified, unique):
    stopped = stack.devstack("stop-broker")
    assert stopped.returncode == 0, stopped.stderr
    try:
        started = time.monotonic()
        run = stack.docker("run", "--rm", "--name", unique, "busybox", "true")
        took = time.monotonic() - started
        assert run.returncode == 0, run.stderr
        assert took < 15, f"a request took {took:.1f} s with the broker down"
    finally:
        restarted = stack.devstack("start-broker")
        assert restarted.returncode == 0, restarted.stderr
    got = notified.wait_for(
        lambda g: any(e == "compute.container.delete.end" for e, _ in of_container(g, unique)), 120
    )
    events = [e.removeprefix("compute.container.") for e, _ in of_container(got, unique)]
    assert [e for e in events if not e.startswith("attach.")] == [
        "create.start",
        "create.end",
        "start.start",
        "start.end",
        "delete.start",
        "delete.end",
    ], events


def _restart_gateway(stack) -> None:
    with open(os.path.join(stack.dir, "state.json")) as fh:
        pid = json.load(fh)["procs"]["gateway-1"]["pid"]
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    up = stack.devstack("up")
    assert up.returncode == 0, up.stderr


def _events(stack, since: float, name: str) -> list[str]:
    shown = stack.docker(
        "events",
        "--since",
        f"{since:.9f}",
        "--until",
        f"{time.time():.9f}",
        "--filter",
        f"container={name}",
        "--format",
        "{{.Action}}",
    )
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.decode().split()


def _wait_inspect(stack, name: str, timeout: float = 60) -> None:
    """Until the container's instance answers through the gateway again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.docker("inspect", "-f", "{{.Name}}", name).returncode == 0:
            return
        time.sleep(1)
    pytest.fail(f"container {name} did not come back with its instance")


def _host_of(stack, name: str) -> tuple[str, str]:
    """(1-based fill-order index, dockerd endpoint) of the instance host that runs ``name``."""
    listed = stack.admin(
        "containers", "list", "--project", stack.env["MOORAGE_PROJECT_alpha"], "--format", "json"
    )
    assert listed.returncode == 0, listed.stderr
    (instance,) = [c["instance"] for c in json.loads(listed.stdout) if c["name"] == name]
    hosts = stack.devstack("hosts").stdout.split("\n")
    for index, line in enumerate(h for h in hosts if h.strip()):
        uuid, endpoint = line.split()
        if uuid == instance:
            return str(index + 1), endpoint
    pytest.fail(f"instance {instance} is not among the stack's hosts")


def test_events_replay_after_gateway_and_dockerd_restarts(stack, unique):
    since = time.time() - 1
    run = stack.docker("run", "--name", unique, "busybox", "true")
    assert run.returncode == 0, run.stderr
    try:
        index, endpoint = _host_of(stack, unique)
        time.sleep(3)  # the recorder's follower writes as the daemon reports
        before = _events(stack, since, unique)
        assert before[:1] == ["create"] and "start" in before and "die" in before, before
        _restart_gateway(stack)
        assert _events(stack, since, unique) == before
        assert stack.devstack("stop-host", index).returncode == 0
        assert stack.devstack("start-host", index).returncode == 0
        _wait_inspect(stack, unique)
        direct = stack.docker(
            "events",
            "--since",
            f"{since:.9f}",
            "--until",
            f"{time.time():.9f}",
            direct=True,
            env={"DOCKER_HOST": endpoint},
        )
        assert direct.returncode == 0 and unique not in direct.stdout.decode()  # the daemon forgot
        after = _events(stack, since, unique)
        assert after[: len(before)] == before, after
    finally:
        stack.docker("rm", "-f", unique)


def test_a_live_subscriber_misses_nothing_between_replay_and_live(stack, unique):
    since = time.time() - 1
    early, late = f"{unique}-a", f"{unique}-b"
    assert stack.docker("run", "--name", early, "busybox", "true").returncode == 0
    time.sleep(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(DOCKER_HOST=stack.env["DOCKER_HOST"], DOCKER_CONFIG=stack.env["MOORAGE_CONFIG_alpha"])
    watcher = subprocess.Popen(
        [
            "docker",
            "events",
            "--since",
            f"{since:.9f}",
            "--filter",
            f"container={unique}",
            "--filter",
            "event=create",
            "--filter",
            "event=die",
            "--format",
            "{{.Actor.Attributes.name}} {{.Action}}",
        ],
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        time.sleep(2)
        assert stack.docker("run", "--name", late, "busybox", "true").returncode == 0
        time.sleep(3)
    finally:
        watcher.send_signal(signal.SIGINT)
        out, _ = watcher.communicate(timeout=30)
        stack.docker("rm", "-f", early, late)
    assert out.decode().splitlines() == [f"{early} create", f"{early} die", f"{late} create", f"{late} die"]
