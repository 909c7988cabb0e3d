"""Operating the gateway, on devstack: the request ID on answers and in the gateway's log; each
project's fair share (429 with Retry-After, set per project with `moorage quota set`); the
missed-heartbeats gauge of an instance whose agent stops."""

import concurrent.futures
import os
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

# Workers learn a per-project override at their next exchange with the store (1 s apart).
LEARN = 3.0


def _metric(url: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(requests.get(url, timeout=10).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_request_id_on_the_answer_and_in_the_log(stack):
    resp = stack.http("GET", "/containers/json", headers={"X-Request-Id": "it-trace-0001"})
    assert resp.status_code == 200
    assert resp.headers["X-Request-Id"] == "it-trace-0001"
    fresh = stack.http("GET", "/version")
    assert len(fresh.headers["X-Request-Id"]) == 32
    log = os.path.join(stack.dir, "gateway-1.log")
    deadline = time.monotonic() + 10
    while True:
        with open(log, errors="replace") as fh:
            lines = [line for line in fh if "it-trace-0001" in line]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert lines and "ContainerList" in lines[-1] and " 200 " in lines[-1], lines


@pytest.fixture
def override(stack):
    """`moorage quota set PROJECT KEY=VALUE` for alpha; unset afterwards."""
    project = stack.env["MOORAGE_PROJECT_alpha"]
    keys = []

    def set_(**values):
        done = stack.admin("quota", "set", project, *(f"{k}={v}" for k, v in values.items()))
        assert done.returncode == 0, done.stderr
        keys.extend(values)
        time.sleep(LEARN)

    yield set_
    if keys:
        stack.admin("quota", "unset", project, *keys)
        time.sleep(LEARN)


def test_a_project_over_its_rate_gets_429_and_the_other_does_not(stack, override):
    override(rate=2)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: stack.http("GET", "/containers/json"), range(8)))
        others = list(pool.map(lambda _: stack.http("GET", "/containers/json", tenant="beta"), range(8)))
    refused = [r for r in answers if r.status_code == 429]
    assert refused, [r.status_code for r in answers]
    assert {r.status_code for r in answers} <= {200, 429}
    assert refused[0].headers["Retry-After"] == "1"
    assert refused[0].headers["Content-Type"] == "application/json"
    message = refused[0].json()["message"]
    assert "too many requests for project" in message and "quota set" in message
    assert [r.status_code for r in others] == [200] * 8
    # The docker CLI prints it as it prints a daemon's error. (Several at once: one after the
    # other, a loaded machine's CLI start-up alone can keep them under 2 a second.)
    time.sleep(1.5)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: stack.docker("ps"), range(8)))
    assert any(b"too many requests" in r.stderr for r in results), [r.stderr for r in results]


def test_open_streams_are_limited_per_project(stack, override):
    override(streams=1)
    first = requests.get(stack.gateway + "/events", headers=stack.headers(), stream=True, timeout=(5, 30))
    try:
        assert first.status_code == 200
        time.sleep(LEARN)  # the other workers learn of the open stream
        second = [stack.http("GET", "/events?until=0") for _ in range(3)]
        assert 429 in [r.status_code for r in second], [r.status_code for r in second]
        refused = next(r for r in second if r.status_code == 429)
        assert "too many open streams" in refused.json()["message"]
        assert stack.http("GET", "/events?until=0", tenant="beta").status_code == 200
    finally:
        first.close()
    # The gateway learns that a quiet stream's client has gone when it next writes to it: give
    # the events stream something to say.
    name = f"fair-{os.getpid()}"
    assert stack.http("POST", "/volumes/create", json={"Name": name}).status_code == 201
    assert stack.http("DELETE", f"/volumes/{name}").status_code == 204
    deadline = time.monotonic() + 15
    while stack.http("GET", "/events?until=0").status_code == 429:
        assert time.monotonic() < deadline, "the stream's slot was not given back"
        time.sleep(1)


def test_missed_heartbeats_counted_for_a_silent_instance(stack):
    url = stack.env.get("MOORAGE_METRICS_URL")
    uuids = stack.env.get("MOORAGE_INSTANCES", "").split()
    if not url or len(uuids) < 2:
        pytest.skip("needs MOORAGE_METRICS_URL and two instances")
    silent = uuids[-1]
    assert _metric(url, "moorage_agent_heartbeats_missed", instance=silent) == 0
    stopped = stack.devstack("stop-host", str(len(uuids)))
    assert stopped.returncode == 0, stopped.stderr
    try:
        # Silent past the heartbeat timeout (3 intervals + 5 s), then counted within an interval.
        deadline = time.monotonic() + 90
        while _metric(url, "moorage_agent_heartbeats_missed", instance=silent) < 1:
            assert time.monotonic() < deadline, "no missed heartbeat counted in 90 s"
            time.sleep(2)
        assert _metric(url, "moorage_agent_heartbeats_missed", instance=uuids[0]) == 0
    finally:
        started = stack.devstack("start-host", str(len(uuids)))
        assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 60
    while _metric(url, "moorage_agent_heartbeats_missed", instance=silent) > 0:
        assert time.monotonic() < deadline, "the instance still counts as silent after its restart"
        time.sleep(2)
