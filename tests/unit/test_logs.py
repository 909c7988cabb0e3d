"""The gateway's log lines (gateway/logs.py): JSON or text, one line per request with its ID,
the ID returned as X-Request-Id and sent to the agent; and the missed-heartbeats gauge."""

import datetime as _dt
import io
import json
import logging
import socket
import threading

import pytest
from falcon import testing

from gateway import instances, logs, metrics, store
from gateway.agentclient import AgentClient
from gateway.app import Gateway
from gateway.dockerapi import ROUTES

HEADERS = {"X-Auth-Token": "tok-a", "X-Auth-Project-Id": "pa"}


@pytest.fixture
def captured():
    """The root logger writing to a buffer through logs.use, as gateway/server.py sets it up."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)

    def use(log_format: str) -> io.StringIO:
        logs.use([handler], log_format)
        return buffer

    yield use
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.fixture
def client(gateway_settings):
    instances._live_cache.clear()
    yield testing.TestClient(Gateway(gateway_settings, ROUTES))
    instances._live_cache.clear()


def lines(buffer: io.StringIO, logger: str = "moorage.access") -> list[dict]:
    entries = [json.loads(line) for line in buffer.getvalue().splitlines()]
    return [e for e in entries if e["logger"] == logger]


def test_one_json_line_per_request_with_its_id(client, captured):
    buffer = captured("json")
    resp = client.simulate_get("/v1.41/containers/json", headers={**HEADERS, "X-Request-Id": "ci-job-42.7"})
    assert resp.headers["X-Request-Id"] == "ci-job-42.7"  # a well-formed ID is kept
    (entry,) = lines(buffer)
    assert entry["request_id"] == "ci-job-42.7"
    assert entry["operation"] == "ContainerList"
    assert entry["status"] == resp.status_code
    assert entry["project"] == "pa"
    assert entry["method"] == "GET" and entry["path"] == "/v1.41/containers/json"
    assert isinstance(entry["duration_ms"], float) and entry["stream"] is False
    assert entry["level"] == "INFO" and entry["time"].endswith("+00:00")


def test_a_malformed_or_absent_id_is_replaced(client, captured):
    buffer = captured("json")
    bad = client.simulate_get("/v1.41/version", headers={**HEADERS, "X-Request-Id": "two words\u00e9"})
    none = client.simulate_get("/v1.41/version", headers=HEADERS)
    for resp in (bad, none):
        rid = resp.headers["X-Request-Id"]
        assert len(rid) == 32 and int(rid, 16) >= 0
    assert bad.headers["X-Request-Id"] != none.headers["X-Request-Id"]
    assert [e["request_id"] for e in lines(buffer)] == [
        bad.headers["X-Request-Id"],
        none.headers["X-Request-Id"],
    ]
    # An unauthenticated refusal has an ID and a line too (no project).
    refused = client.simulate_get("/v1.41/info")
    assert refused.status_code == 401 and refused.headers["X-Request-Id"]
    assert lines(buffer)[-1]["project"] == "" and lines(buffer)[-1]["status"] == 401


def test_an_internal_error_logs_its_traceback_with_the_request_id(client, captured, monkeypatch):
    buffer = captured("json")

    def boom(*_):
        raise RuntimeError("the bug")

    monkeypatch.setattr(instances, "live_instances", boom)
    resp = client.simulate_get("/v1.41/version", headers=HEADERS)
    assert resp.status_code == 500
    (error,) = lines(buffer, "moorage.gateway")
    assert error["level"] == "ERROR" and error["request_id"] == resp.headers["X-Request-Id"]
    assert "RuntimeError: the bug" in error["exception"]


def test_text_format(client, captured):
    buffer = captured("text")
    resp = client.simulate_get("/v1.41/version", headers=HEADERS)
    (line,) = buffer.getvalue().splitlines()
    assert f"INFO moorage.access [{resp.headers['X-Request-Id']}] GET /v1.41/version " in line
    assert "SystemVersion" in line and "project=pa" in line


def test_unknown_format_refused():
    with pytest.raises(ValueError, match="log_format"):
        logs.formatter("xml")


def test_the_agent_gets_the_request_id(gateway_settings):
    """A real listening socket stands in for the agent: what arrives is what the agent reads."""
    listener = socket.create_server(("127.0.0.1", 0))
    heads = []

    def agent():
        conn, _ = listener.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        heads.append(data.decode("latin-1"))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")
        conn.close()

    thread = threading.Thread(target=agent, daemon=True)
    thread.start()
    instance = store.Instance(
        uuid="i-1", agent_url=f"tcp://127.0.0.1:{listener.getsockname()[1]}", agent_secret="s"
    )
    logs.begin_request("rid-7")
    assert AgentClient(instance).get_json("/_ping") == (200, {})
    thread.join(5)
    listener.close()
    assert "\r\nX-Request-Id: rid-7\r\n" in heads[0]
    assert "X-Moorage-Agent-Secret: s" in heads[0]


def test_heartbeats_missed_per_instance(gateway_settings):
    store.init(gateway_settings.gateway.database)
    now = store.utcnow()
    gateway_settings.gateway.heartbeat_interval = 10  # timeout: 35 s
    for uuid, silent, state, daemon_down in (
        ("heard", 5, store.INSTANCE_UP, False),
        ("silent", 61, store.INSTANCE_UP, False),
        ("draining", 100, store.INSTANCE_DRAINING, False),
        ("down", 500, store.INSTANCE_UP, True),
    ):
        store.Instance.create(
            uuid=uuid,
            agent_url="tcp://127.0.0.1:1",
            agent_secret="s",
            state=state,
            daemon_down=daemon_down,
            registered_at=now,
            last_heartbeat=now - _dt.timedelta(seconds=silent),
        )
    assert instances.heartbeats_missed(gateway_settings) == {"heard": 0, "silent": 6, "draining": 10}

    def gauge(uuid):
        return metrics.HEARTBEATS_MISSED.labels(uuid)._value.get()

    instances.publish_census(gateway_settings)
    assert (gauge("heard"), gauge("silent"), gauge("draining")) == (0, 6, 10)
    store.Instance.delete().where(store.Instance.uuid == "silent").execute()
    instances.publish_census(gateway_settings)
    assert gauge("silent") == 0  # gone from the store: no longer counted as missing
    store.close()


def test_gunicorns_logger_sets_up_the_gateways(tmp_path):
    """`moorage serve`'s gunicorn logger: gunicorn's lines and the gateway's go to its error
    log in the chosen format, from its first line on (gateway/server.py)."""
    from gunicorn.config import Config

    from gateway import config, server

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    cfg = Config()
    cfg.set("errorlog", str(tmp_path / "gateway.log"))
    settings = config.Settings(gateway=config.GatewaySettings(log_format="json"))
    try:
        gunicorn_log = server._logger_class(settings)(cfg)
        gunicorn_log.info("Starting gunicorn")
        logging.getLogger("moorage.gateway").warning("the gateway's own")
        gunicorn_log.setup(cfg)  # again, as on a reload: one handler, not two
        logging.getLogger("moorage.gateway").warning("once")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    entries = [json.loads(line) for line in (tmp_path / "gateway.log").read_text().splitlines()]
    assert [(e["logger"], e["message"]) for e in entries] == [
        ("gunicorn.error", "Starting gunicorn"),
        ("moorage.gateway", "the gateway's own"),
        ("moorage.gateway", "once"),
    ]
