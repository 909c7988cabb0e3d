"""Operating the gateway: health checks on DOCKER_HOST without credentials, and Prometheus
metrics on their own port (MOORAGE_METRICS_URL) that count a Docker request."""

import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families


def _metric(url: str, name: str, **labels: str) -> float:
    text = requests.get(url, timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_health_endpoints_answer_without_headers(stack):
    healthz = stack.http("GET", "/healthz", tenant=None)
    assert healthz.status_code == 200 and healthz.text == "ok\n"
    readyz = stack.http("GET", "/readyz", tenant=None)
    assert readyz.status_code == 200, readyz.text
    # Not a Docker route: no Docker version headers.
    assert "Api-Version" not in healthz.headers


def test_a_docker_request_is_counted(stack):
    url = stack.env.get("MOORAGE_METRICS_URL")
    if not url:
        pytest.skip("this stack writes no MOORAGE_METRICS_URL")
    before = _metric(url, "moorage_requests_total", operation="ContainerList", status="200")
    assert stack.http("GET", "/containers/json").status_code == 200
    after = _metric(url, "moorage_requests_total", operation="ContainerList", status="200")
    assert after == before + 1
    assert _metric(url, "moorage_request_duration_seconds_count", operation="ContainerList") >= 1
    # Agents heartbeat every few seconds (a fresh stack's first may be on its way).
    deadline = time.monotonic() + 30
    while _metric(url, "moorage_agent_heartbeats_total", result="ok") < 1:
        assert time.monotonic() < deadline, "no agent heartbeat counted in 30 s"
        time.sleep(1)
    assert _metric(url, "moorage_instances", state="up") >= 1


def test_every_replica_serves_metrics(stack):
    urls = stack.env.get("MOORAGE_METRICS_URLS", "").split()
    if not urls:
        pytest.skip("this stack writes no MOORAGE_METRICS_URLS")
    for url in urls:
        resp = requests.get(url, timeout=10)
        assert resp.status_code == 200, url
