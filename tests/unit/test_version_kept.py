"""docker version: each worker keeps an instance's /version answer while the daemon version its
heartbeats report stays the same (gateway/services/system.py version), and asks again when that
changes or the answer is older than VERSION_TTL."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from gateway.services import system


@pytest.fixture
def daemon(monkeypatch):
    instance = SimpleNamespace(uuid="i-version", daemon_version="20.10.24")
    asked: list[str] = []
    answers: list[dict] = []

    def fake_call(ctx, inst, method, path, **kw):
        asked.append(path)
        return 200, {"Version": inst.daemon_version, "ApiVersion": "1.41", "Components": []}

    monkeypatch.setattr(system, "call", fake_call)
    monkeypatch.setattr(system, "home_instance", lambda ctx: instance)
    monkeypatch.setattr(system, "_versions", {})
    ctx = SimpleNamespace(
        gw=SimpleNamespace(api_range=lambda: ("1.55", "1.24")),
        answer_json=lambda payload, *a: answers.append(json.loads(json.dumps(payload))),
    )
    return SimpleNamespace(instance=instance, asked=asked, answers=answers, ctx=ctx)


def test_the_answer_is_kept_and_shown_with_the_gateway_s_api_range(daemon):
    system.version(daemon.ctx)
    system.version(daemon.ctx)
    assert daemon.asked == ["/version"]  # the second from the worker's memory
    assert daemon.answers[0] == daemon.answers[1]
    assert daemon.answers[1]["ApiVersion"] == "1.55" and daemon.answers[1]["MinAPIVersion"] == "1.24"


def test_a_new_daemon_version_or_an_old_answer_is_asked_again(daemon, monkeypatch):
    system.version(daemon.ctx)
    daemon.instance.daemon_version = "27.5.1"  # upgraded in place: its heartbeat says so
    system.version(daemon.ctx)
    assert daemon.asked == ["/version", "/version"] and daemon.answers[-1]["Version"] == "27.5.1"
    monkeypatch.setattr(system, "VERSION_TTL", 0.0)
    system.version(daemon.ctx)
    assert len(daemon.asked) == 3
