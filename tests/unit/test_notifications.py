"""Notifications, audit and the event journal, on a real store (SQLite and PostgreSQL) and
oslo.messaging's own drivers (tests/integration/test_notifications.py: a real RabbitMQ)."""

from __future__ import annotations

import datetime
import json
import os
import re
import time

import pytest

from gateway import config, metrics, notifications, store
from gateway.notifications import audit, payloads, sender
from gateway.services import event_replay
from gateway.services.notices import ACTIONS
from gateway.store import journal
from tests.unit import test_pool

# The pool's fixtures (its in-process Nova double), for the instance notifications' tests.
nova, provider, settings = test_pool.nova, test_pool.provider, test_pool.settings

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "notifications.md")


@pytest.fixture(autouse=True)
def notifications_off_afterwards():
    yield
    notifications.configure(config.Settings())  # the module's settings are the process's


@pytest.fixture
def db(db_url):
    store.init(db_url)
    yield
    store.close()


def notify_settings(**notify) -> config.Settings:
    return config.Settings(notifications=config.NotificationsSettings(**notify))


def test_payloads_are_nova_shaped_and_closed():
    payload = payloads.versioned("ExceptionPayload", code=403, message="no")
    assert payload == {
        "nova_object.name": "ExceptionPayload",
        "nova_object.namespace": "moorage",
        "nova_object.version": "1.0",
        "nova_object.data": {"code": 403, "message": "no"},
    }
    assert payloads.versioned("ImagePayload", image="app")["nova_object.data"]["fault"] is None
    with pytest.raises(KeyError, match="no field"):
        payloads.versioned("ImagePayload", secret="x")


def test_docs_list_every_notification_and_payload_version():
    with open(DOCS) as fh:
        text = fh.read()
    for name, (version, fields) in payloads.PAYLOADS.items():
        assert re.search(rf"`{name}` {re.escape(version)}", text), f"{name} {version} is not documented"
        for field in fields:
            assert f"`{field}`" in text, f"{name}.{field} is not documented"
    for event, action in set(ACTIONS.values()):
        assert f"{event}.{action}." in text, f"{event}.{action} is not documented"
    for event in ("compute.container.exists", "compute.container_instance", "audit.http.response"):
        assert event in text


def test_outbox_is_bounded_and_counts_what_it_drops(db):
    notifications.configure(notify_settings(driver="log", outbox_limit=3))
    dropped = metrics.NOTIFICATIONS_DROPPED._value.get()
    for i in range(5):
        notifications.emit("compute.container.create.start", {"i": i})
    rows = journal.pending_notifications(10)
    assert [r.payload["i"] for r in rows] == [0, 1, 2]
    assert rows[0].publisher.startswith("moorage:")
    assert metrics.NOTIFICATIONS_DROPPED._value.get() - dropped == 2
    journal.sent_notifications([rows[0].id])
    notifications.emit("compute.container.create.start", {"i": 5})
    assert [r.payload["i"] for r in journal.pending_notifications(10)] == [1, 2, 5]


def test_nothing_is_queued_when_notifications_are_off(db):
    notifications.configure(notify_settings())  # no transport_url: off
    notifications.emit("compute.container.create.start", {})
    notifications.configure(notify_settings(driver="noop", transport_url="rabbit://x/"))
    notifications.emit("compute.container.create.start", {})
    assert journal.outbox_length() == 0


def test_the_log_driver_empties_the_outbox_in_order(db, caplog):
    notifications.configure(notify_settings(driver="log"))
    for i in range(3):
        notifications.emit(f"compute.container.start.{i}", {"i": i})
    broker = sender.Broker(notify_settings(driver="log").notifications)
    with caplog.at_level("INFO", logger="oslo.messaging.notification"):
        assert sender.send_pending(broker) == (3, "")
    assert journal.outbox_length() == 0
    sent = [json.loads(r.getMessage())["event_type"] for r in caplog.records if r.name.startswith("oslo")]
    assert sent == ["compute.container.start.0", "compute.container.start.1", "compute.container.start.2"]


def test_a_broker_that_is_away_keeps_the_rows_and_answers_at_once(db):
    # A real rabbit transport to a port nothing listens on: the send fails, fast, and is told.
    away = notify_settings(driver="messagingv2", transport_url="rabbit://guest:guest@127.0.0.1:9/")
    notifications.configure(away)
    notifications.emit("compute.container.create.start", {"i": 1})
    notifications.emit("compute.container.create.end", {"i": 2})
    started = time.monotonic()
    sent, failure = sender.send_pending(sender.Broker(away.notifications))
    assert sent == 0 and failure
    assert time.monotonic() - started < 10
    assert [r.payload["i"] for r in journal.pending_notifications(10)] == [1, 2]


def test_exists_rounds_report_every_container_for_the_period(db):
    notifications.configure(notify_settings(driver="log", exists_interval=60))
    cfg = notify_settings(driver="log", exists_interval=60)
    now = store.utcnow()
    store.Instance.create(uuid="i1", agent_url="http://198.18.0.9:1", agent_secret="s", last_heartbeat=now)
    store.Container.create(
        id="c" * 64, project="p1", name="web", instance="i1", memory=2**20, nano_cpus=500_000_000
    )
    journal.note_container("c" * 64, "p1", "u1", "web", "busybox", "i1", False)
    assert not sender.exists_due(cfg, now)  # the first period starts now
    later = now + datetime.timedelta(seconds=61)
    assert sender.exists_due(cfg, later)
    assert sender.exists_round(cfg, later) == 1
    (row,) = journal.pending_notifications(10)
    data = row.payload["nova_object.data"]
    assert row.event_type == "compute.container.exists"
    assert data["container_id"] == "c" * 64 and data["user_id"] == "u1" and data["image"] == "busybox"
    assert data["memory_bytes"] == 2**20 and data["cpus"] == 0.5
    assert data["audit_period_ending"] == payloads.timestamp(later)
    assert not sender.exists_due(cfg, later)


def test_journal_records_each_event_once_in_time_order(db):
    first = {"Type": "container", "Action": "start", "timeNano": 20, "Actor": {"ID": "a"}}
    second = {"Type": "container", "Action": "create", "timeNano": 10, "Actor": {"ID": "a"}}
    journal.record_events([("p", "i1", 20, journal.encode(first))])
    journal.record_events([("p", "i1", 20, journal.encode(first)), ("p", "i1", 10, journal.encode(second))])
    journal.record_events([("q", "i2", 15, journal.encode(second))])
    events, newest = event_replay.replay("p", False, 0, None)
    assert [e["Action"] for e in events] == ["create", "start"]
    assert newest == {"i1": 20}
    assert [e["Action"] for e in event_replay.replay("p", True, 0, 15)[0]] == ["create", "create"]
    assert journal.last_event_time("i1") == 20
    # the recorder asks for every follower it starts in one statement (per 500 instances)
    assert journal.last_event_times(["i1", "i2", "i3"]) == {"i1": 20, "i2": 15}
    many = [f"x{n}" for n in range(1200)] + ["i2"]
    assert journal.last_event_times(many) == {"i2": 15}
    assert journal.purge_events(16) == 2
    assert [e["Action"] for e in event_replay.replay("p", False, 0, None)[0]] == ["start"]


def test_noted_container_taken_once(db):
    journal.note_container("x", "p", "u", "n", "img", "i", True)
    journal.note_container("y", "p", "u", "n2", "img", "i", False)
    assert not journal.take_noted_container("y", auto_removed=True)  # not a --rm container
    assert journal.take_noted_container("x", auto_removed=True)
    assert not journal.take_noted_container("x")


def event(kind="container", action="start", actor="abc123", **attributes):
    return {"Type": kind, "Action": action, "Actor": {"ID": actor, "Attributes": attributes}}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, True),
        ({"event": ["start", "die"]}, True),  # one key's values: OR
        ({"event": ["die"]}, False),
        ({"event": ["start"], "type": ["network"]}, False),  # keys: AND
        ({"container": ["web"]}, True),  # the name, by prefix
        ({"container": ["abc"]}, True),  # the ID, by prefix
        ({"container": ["db"]}, False),
        ({"image": ["busybox"]}, True),  # with or without its tag
        ({"image": ["busy"]}, False),  # images match exactly
        ({"label": ["team=a", "tier"]}, True),  # labels: every one
        ({"label": ["team=a", "tier=back"]}, False),
        ({"event": {"start": True}}, True),  # the older map form
        ({"event": ["exec_start"]}, False),
        ({"service": ["s"]}, False),
    ],
)
def test_replay_filters_as_dockerd(filters, expected):
    assert event_replay.matches(
        filters, event(name="web", image="busybox:latest", team="a", tier="front")
    ) is (expected)


def test_health_status_filter_matches_by_prefix():
    assert event_replay.matches({"event": ["health_status"]}, event(action="health_status: healthy"))
    assert not event_replay.matches({"event": ["health"]}, event(action="health_status: healthy"))


def test_since_and_until_read_as_dockerd_reads_them():
    now = 1_700_000_000 * 10**9
    assert event_replay.parse_time("1699999999.5", now) == 1_699_999_999_500_000_000
    assert event_replay.parse_time("10m", now) == now - 600 * 10**9
    assert event_replay.parse_time("2023-11-14T22:13:20Z", now) == now
    assert event_replay.parse_time("", now) is None
    assert event_replay.parse_time("yesterday", now) is None


def test_audit_names_who_what_and_why_but_no_secret():
    data = audit.event(
        audit.Request(
            method="POST",
            operation="ContainerCreate",
            status=403,
            reference="",
            project="p1",
            user="u1",
            user_name="alice",
            address="198.18.0.7",
            credential="token",
            reason="quota exceeded: containers",
        )
    )
    assert data["typeURI"] == "http://schemas.dmtf.org/cloud/audit/1.0/event"
    assert data["action"] == "create" and data["outcome"] == "failure"
    assert data["initiator"]["id"] == "u1" and data["initiator"]["project_id"] == "p1"
    assert data["initiator"]["host"]["address"] == "198.18.0.7"
    assert data["initiator"]["credential"]["type"] == "token"
    assert data["target"]["typeURI"] == "service/compute/containers"
    assert data["reason"]["reasonCode"] == "403"
    assert data["reason"]["reasonMessage"] == "quota exceeded: containers"
    assert audit.wanted("POST", 204, "ContainerStart")
    assert audit.wanted("GET", 401, "ContainerList") and audit.wanted("GET", 403, "ContainerList")
    assert not audit.wanted("GET", 200, "ContainerList")
    assert not audit.wanted("POST", 200, "ContainerWait")


def test_audit_event_of_a_request_carries_no_token(gateway_settings):
    """Through the app: a refused and an accepted request, with a token that must not show."""
    from falcon import testing

    from gateway.app import Gateway
    from gateway.dockerapi import ROUTES

    log = os.path.join(os.path.dirname(gateway_settings.gateway.database[len("sqlite:///") :]), "audit.log")
    gateway_settings.notifications = config.NotificationsSettings(driver="log", audit_log=log)
    client = testing.TestClient(Gateway(gateway_settings, ROUTES, name="test"))
    client.simulate_post("/v1.41/containers/create", headers={"X-Auth-Token": "tok-wrong"})
    client.simulate_post(
        "/v1.41/networks/create",
        headers={"X-Auth-Token": "tok-a", "X-Auth-Project-Id": "pa"},
        json={"Name": "n", "Driver": "host"},
    )
    with open(log) as fh:
        text = fh.read()
    events = [json.loads(line) for line in text.splitlines()]
    assert events[0]["reason"]["reasonCode"] == "401"
    assert events[0]["action"] == "authenticate"
    assert events[1]["initiator"]["project_id"] == "pa"
    assert "tok-a" not in text and "tok-wrong" not in text
    kinds = {r.event_type for r in journal.pending_notifications(100)}
    assert "audit.http.response" in kinds
    store.close()


def test_one_sender_of_two_replicas_holds_the_lease(db):
    first, second = journal.Lease("notifier", "replica-1", 15), journal.Lease("notifier", "replica-2", 15)
    assert first.held() and not second.held()
    assert first.held()  # renewed (or still known) by its holder
    store.PoolLease.update(expires_at=store.utcnow() - datetime.timedelta(seconds=1)).where(
        store.PoolLease.name == "notifier"
    ).execute()  # replica 1 stopped renewing
    second._checked = 0.0
    assert second.held()
    assert not journal.hold_lease("notifier", "replica-1", 15)


def test_a_stopping_worker_gives_its_leases_up(db):
    """gunicorn's worker_exit (gateway/server.py) releases what the worker holds: another
    replica takes the lease on its next try, not once the ttl has run out (the event
    recorder's lease is what the read cache waits for after a restart)."""
    first, second = journal.Lease("events", "worker-1", 15), journal.Lease("events", "worker-2", 15)
    idle = journal.Lease("notifier", "worker-1", 15)  # never held: releasing it touches nothing
    assert first.held() and not second.held()
    assert journal.hold_lease("notifier", "worker-3", 15)
    journal.release_leases()
    second._checked = 0.0
    assert second.held()
    assert not idle.held()
    assert store.PoolLease.get_by_id("notifier").holder == "worker-3"  # not another's to give up


def instance_events() -> list[tuple[str, dict]]:
    return [
        (r.event_type, r.payload["nova_object.data"])
        for r in journal.pending_notifications(100)
        if r.event_type.startswith("compute.container_instance.")
    ]


def test_the_pool_tells_its_boots_and_deletions(settings, provider, nova):
    from gateway.placement import place, reaper
    from tests.unit.test_pool import register_after, req

    notifications.configure(notify_settings(driver="log"))
    register_after(nova)
    server_id = place(req(), settings).instance.uuid
    assert [e for e, _ in instance_events()] == [
        "compute.container_instance.create.start",
        "compute.container_instance.create.end",
    ]
    start, end = (d for _, d in instance_events())
    assert start["instance_uuid"] is None and end["instance_uuid"] == server_id
    assert (
        end["provider"] == "nova" and end["pool_member"] == start["pool_member"] and end["action"] == "create"
    )
    journal.sent_notifications([r.id for r in journal.pending_notifications(100)])
    store.Container.delete().execute()
    t0 = store.utcnow()
    for seconds in (0, 11):
        reaper.reap_once(
            settings,
            provider,
            now=t0 + datetime.timedelta(seconds=seconds),
            check_daemon=lambda i: "",
        )
    assert nova.deleted == [server_id]
    assert [(e, d["instance_uuid"]) for e, d in instance_events()] == [
        ("compute.container_instance.delete.start", server_id),
        ("compute.container_instance.delete.end", server_id),
    ]


def test_a_failed_boot_is_told_as_error(settings, provider, nova):
    from gateway.errors import DockerError
    from gateway.placement import place
    from tests.unit.test_pool import req

    notifications.configure(notify_settings(driver="log"))
    nova.fail = "Quota exceeded for instances"
    with pytest.raises(DockerError):
        place(req(), settings)
    (start, _), (event, error) = instance_events()
    assert start == "compute.container_instance.create.start"
    assert event == "compute.container_instance.create.error"
    assert error["fault"]["nova_object.data"] == {
        "code": 503,
        "message": "no instance could be added: Quota exceeded for instances",
    }
