"""Projects' webhooks (gateway/notifications/webhooks.py) and the gateway's own events
(gateway/notifications/own_events.py) on a real store (SQLite and PostgreSQL), delivered to a
real HTTP receiver on loopback (tests/integration/test_notices.py: through a stack)."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.server
import json
import threading
import time

import pytest

from gateway import config, notifications, store
from gateway.errors import DockerError
from gateway.notifications import own_events, webhooks
from gateway.services.events import EventJudge
from gateway.store import journal
from gateway.store import notices as queue
from gateway.wire import PROJECT_LABEL

LOOPBACK = config.NoticesSettings(allowed_networks=["127.0.0.0/8"], per_project=2, queue_limit=3)


@pytest.fixture
def db(db_url):
    store.init(db_url)
    notifications.configure(config.Settings(notices=LOOPBACK))
    yield
    notifications.configure(config.Settings())
    store.close()


class Receiver:
    """A webhook on loopback answering ``status`` (settable) to every POST, recording each."""

    def __init__(self):
        self.status = 204
        self.got: list[tuple[dict, bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_a_webhook_may_name_public_addresses_and_allowed_networks_only():
    closed = config.NoticesSettings()
    assert "not a public address" in webhooks.check_url("http://127.0.0.1:8080/x", closed)
    assert "not a public address" in webhooks.check_url("http://198.18.0.7/x", closed)
    assert "not a public address" in webhooks.check_url("http://169.254.169.254/latest", closed)
    assert "not a public address" in webhooks.check_url("http://[::1]/x", closed)
    assert webhooks.check_url("http://127.0.0.1:8080/x", LOOPBACK) == ""
    assert webhooks.check_url("https://8.8.8.8/x", closed) == ""
    assert "http:// or https://" in webhooks.check_url("file:///etc/passwd", closed)
    assert "no credentials" in webhooks.check_url("https://u:p@8.8.8.8/", closed)


def test_subscribe_shows_the_secret_once_and_each_project_its_own(db, receiver):
    sub = webhooks.subscribe("alpha", "u1", receiver.url, None)
    assert sub["events"] == ["instance.create", "instance.delete"] and len(sub["secret"]) >= 32
    assert [s["id"] for s in webhooks.listing("alpha")] == [sub["id"]]
    assert "secret" not in webhooks.listing("alpha")[0]
    assert webhooks.listing("beta") == []
    with pytest.raises(DockerError) as refused:
        webhooks.unsubscribe(sub["id"], "beta")  # another project's is as unknown as none
    assert refused.value.status == 404
    with pytest.raises(DockerError) as unknown:
        webhooks.subscribe("alpha", "u1", receiver.url, ["instance.explode"])
    assert unknown.value.status == 400 and "instance.create" in unknown.value.message
    webhooks.subscribe("alpha", "u1", receiver.url, ["container.die"])
    with pytest.raises(DockerError) as full:
        webhooks.subscribe("alpha", "u1", receiver.url, None)
    assert full.value.status == 403 and "moorage notices unsubscribe" in full.value.message
    assert webhooks.unsubscribe(sub["id"], "alpha")["id"] == sub["id"]
    assert len(webhooks.listing(None)) == 1


def test_notices_are_queued_for_the_projects_webhooks_that_want_them(db, receiver):
    a = webhooks.subscribe("alpha", "u1", receiver.url, None)
    d = webhooks.subscribe("alpha", "u1", receiver.url, ["container.die"])
    assert webhooks.notify("alpha", "instance.create", {"instance_uuid": "i1"}) == 1
    assert webhooks.notify("beta", "instance.create", {"instance_uuid": "i2"}) == 0
    assert webhooks.notify("alpha", "container.die", {"name": "c"}) == 1
    assert queue.waiting_count(a["id"]) == 1 and queue.waiting_count(d["id"]) == 1
    for _ in range(3):
        webhooks.notify("alpha", "container.die", {"name": "c"})
    assert queue.waiting_count(d["id"]) == 3  # [notices] queue_limit: the rest is dropped


def test_deliveries_are_signed_and_retried_in_order(db, receiver):
    sub = webhooks.subscribe("alpha", "u1", receiver.url, None)
    webhooks.notify("alpha", "instance.create", {"instance_uuid": "i1"})
    webhooks.notify("alpha", "instance.delete", {"instance_uuid": "i1"})
    receiver.status = 503
    assert webhooks.deliver_due() == 0
    assert len(receiver.got) == 1  # the second waits behind the first
    (first, second) = queue.NoticeDelivery.select().order_by(queue.NoticeDelivery.id)
    assert first.attempts == 1 and "503" in first.last_error and second.attempts == 0
    assert 1 < (first.next_at - store.utcnow()).total_seconds() <= 2
    assert webhooks.deliver_due() == 0 and len(receiver.got) == 1  # not due yet
    receiver.status = 200
    later = store.utcnow() + datetime.timedelta(seconds=3)
    assert webhooks.deliver_due(later) == 2
    assert queue.waiting_count(sub["id"]) == 0
    bodies = [json.loads(body) for _, body in receiver.got]
    assert [b["event"] for b in bodies] == ["instance.create", "instance.create", "instance.delete"]
    assert bodies[0]["id"] == bodies[1]["id"]  # a retry is the same notice
    for headers, body in receiver.got:
        expected = hmac.new(sub["secret"].encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-moorage-signature"] == f"sha256={expected}"
        assert headers["x-moorage-delivery"] == json.loads(body)["id"]
    assert bodies[0]["project_id"] == "alpha" and bodies[0]["data"] == {"instance_uuid": "i1"}


def test_a_notice_never_taken_is_dropped_after_max_attempts(db, receiver):
    notifications.configure(
        config.Settings(notices=config.NoticesSettings(allowed_networks=["127.0.0.0/8"], max_attempts=2))
    )
    sub = webhooks.subscribe("alpha", "u1", receiver.url, None)
    webhooks.notify("alpha", "instance.create", {})
    receiver.status = 500
    now = store.utcnow()
    webhooks.deliver_due(now)
    webhooks.deliver_due(now + datetime.timedelta(seconds=10))
    assert len(receiver.got) == 2 and queue.waiting_count(sub["id"]) == 0


def test_the_gateways_own_events_are_daemon_events_of_the_project(db):
    before = journal.time_nano({"timeNano": 0})
    own_events.record("alpha", "uuid-1", "claim", provider="static")
    own_events.record("", "uuid-2", "claim")  # a shared instance: no project's
    (row,) = journal.recorded_events(["alpha", ""], before, None)
    event = json.loads(row.event)
    assert row.instance == own_events.SOURCE and row.project == "alpha"
    assert event["Type"] == "daemon" and event["Action"] == "claim" and event["Actor"]["ID"] == "uuid-1"
    assert event["Actor"]["Attributes"] == {
        "instance": "uuid-1",
        "name": "moorage",
        "provider": "static",
        PROJECT_LABEL: "alpha",
    }
    assert EventJudge("alpha").keep(json.loads(row.event))
    assert not EventJudge("beta").keep(json.loads(row.event))
    assert PROJECT_LABEL not in EventJudge("alpha").rewrite(event)["Actor"]["Attributes"]
    daemons_own = {"Type": "daemon", "Action": "reload", "Actor": {"ID": "X", "Attributes": {"name": "d"}}}
    assert not EventJudge("alpha").keep(daemons_own)
    assert [r.id for r in own_events.recorded_since(["alpha"], row.time_nano - 1)] == [row.id]
    assert own_events.recorded_since(["alpha"], row.time_nano) == []


def test_a_container_event_read_twice_is_noticed_once(db, receiver):
    from gateway.notifications import recorder

    sub = webhooks.subscribe("alpha", "u1", receiver.url, ["container.die"])
    nano = 1_700_000_000_123_456_789
    line = json.dumps(
        {
            "Type": "container",
            "Action": "die",
            "Actor": {
                "ID": "c" * 64,
                "Attributes": {"name": "web", "image": "busybox", "exitCode": "3", PROJECT_LABEL: "alpha"},
            },
            "time": nano // 1_000_000_000,
            "timeNano": nano,
        }
    ).encode()
    instance = store.Instance(uuid="i1")
    attribution = recorder.Attribution()
    assert recorder.record_line(line, instance, attribution) == nano
    assert recorder.record_line(line, instance, attribution) == nano  # a follower that reconnected
    assert queue.waiting_count(sub["id"]) == 1
    assert webhooks.deliver_due() == 1
    (notice,) = [json.loads(body) for _, body in receiver.got]
    assert notice["event"] == "container.die" and notice["project_id"] == "alpha"
    assert notice["data"] == {
        "action": "die",
        "container_id": "c" * 64,
        "exit_code": "3",
        "image": "busybox",
        "instance_uuid": "i1",
        "name": "web",
    }


def test_a_live_stream_gets_the_gateways_events_once_even_when_they_commit_late(db):
    from gateway.services.events import OwnEventsTail

    now = time.time_ns() - 10_000_000_000  # the window ends before the test does

    def put(nano: int, action: str) -> None:
        raw = journal.encode(own_events.event("alpha", "i1", action, {}, nano))
        journal.record_events([("alpha", own_events.SOURCE, nano, raw)])

    put(now - 10_000_000_000, "claim")  # before the stream's start: the replay's, not the tail's
    tail = OwnEventsTail("alpha", False, now - 5_000_000_000, None, {})
    body = tail.iter_body()
    put(now, "create")
    assert json.loads(next(body))["Action"] == "create"
    put(now - 1_000_000_000, "place")  # another worker's, older, committed later
    put(now - 1_000_000_000, "release")
    assert [json.loads(next(body))["Action"] for _ in range(2)] == ["place", "release"]
    put(now + 1, "destroy")
    assert json.loads(next(body))["Action"] == "destroy"  # each once: no create, place again
    tail.close()
    assert list(body) == []
    beta = OwnEventsTail("beta", False, 0, now + 2, {})
    assert list(beta.iter_body()) == []
    filtered = OwnEventsTail("alpha", False, 0, 1, {"event": ["destroy"]})
    filtered.until = now + 2  # a window wholly in the past: one read, then the end
    assert [json.loads(line)["Action"] for line in filtered.iter_body()] == ["destroy"]
