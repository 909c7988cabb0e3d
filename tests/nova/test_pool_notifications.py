"""A Nova server booted and deleted for a project, as OpenStack and the project hear of it: the
compute.container_instance.{create,delete}.{start,end} notifications on the stack's RabbitMQ
(devstack --notifications), read by a real oslo.messaging listener, with the project the
server serves; the project's webhook (instance.create, instance.delete); and its
`docker events --since` (the gateway's own events in the journal)."""

from __future__ import annotations

import json
import os
import time

import pytest
import requests

from tests.integration.test_notices import Receiver, daemon_events_argv, parse_daemon_events
from tests.integration.test_notifications import Listener, data
from tests.nova.test_pool import GONE_WITHIN, ok, wait_until

pytestmark = pytest.mark.nova


def headers(stack, tenant: str) -> dict:
    with open(os.path.join(stack.env[f"MOORAGE_CONFIG_{tenant}"], "config.json")) as fh:
        return json.load(fh)["HttpHeaders"]


def test_a_server_booted_and_deleted_for_a_project_is_notified(stack):
    url = stack.env.get("MOORAGE_TRANSPORT_URL")
    assert url, "the nova lane's stack runs with --notifications (tests/nova/conftest.py)"
    wait_until("no instance left by an earlier test", lambda: not stack.hosts(), GONE_WITHIN)
    project, _ = stack.ids("alpha")
    gateway = stack.env["DOCKER_HOST"].replace("tcp://", "http://")
    listener = Listener(url)
    receiver = Receiver()
    receiver.start()
    subscribed = requests.post(
        f"{gateway}/moorage/v1/notices",
        json={"url": receiver.url},
        headers=headers(stack, "alpha"),
        timeout=30,
    )
    assert subscribed.status_code == 201, subscribed.text
    try:
        since = time.time() - 1
        t0 = time.monotonic()
        ok(stack.docker("run", "-d", "--name", "told", "busybox", "sleep", "600"))
        print(f"\n[nova lane] create with a boot: {time.monotonic() - t0:.1f} s")
        ((server, _),) = stack.hosts()
        ok(stack.docker("rm", "-f", "told"))
        wait_until(
            "the instance deleted", lambda: not stack.hosts() and not stack.pool_servers(), GONE_WITHIN
        )

        def told(got):
            # The broker's notifications queue also holds what earlier tests of the lane made
            # their pools boot for alpha: only this server's pool member counts.
            events = [
                (e.removeprefix("compute.container_instance."), data(p))
                for _, _, e, p in got
                if e.startswith("compute.container_instance.") and data(p).get("project_id") == project
            ]
            members = {d.get("pool_member") for _, d in events if d.get("instance_uuid") == server}
            return [(e, d) for e, d in events if d.get("pool_member") in members]

        got = listener.wait_for(lambda g: any(e == "delete.end" for e, _ in told(g)), 60)
        mine = told(got)
        assert [e for e, _ in mine] == ["create.start", "create.end", "delete.start", "delete.end"], mine
        assert mine[0][1]["instance_uuid"] is None  # Nova has not named it yet
        assert {d["instance_uuid"] for _, d in mine[1:]} == {server}
        assert {(d["provider"], d["fault"]) for _, d in mine} == {("nova", None)}
        publishers = {p for _, p, e, _ in got if e.startswith("compute.container_instance.")}
        assert len(publishers) == 1 and publishers.pop().startswith("moorage:")

        notices = receiver.wait_for(
            "instance.delete", lambda n: any(x["event"] == "instance.delete" for x in n), 60
        )
        assert [(n["event"], n["project_id"], n["data"]["instance_uuid"]) for n in notices] == [
            ("instance.create", project, server),
            ("instance.delete", project, server),
        ]
        shown = [(a, who) for a, who, _ in parse_daemon_events(ok(stack.docker(*daemon_events_argv(since))))]
        assert shown == [(a, server) for a in ("create", "claim", "place", "destroy")], shown
    finally:
        for sub in requests.get(
            f"{gateway}/moorage/v1/notices", headers=headers(stack, "alpha"), timeout=30
        ).json():
            requests.delete(
                f"{gateway}/moorage/v1/notices/{sub['id']}", headers=headers(stack, "alpha"), timeout=30
            )
        receiver.stop()
        listener.stop()
        stack.docker("rm", "-f", "told")
