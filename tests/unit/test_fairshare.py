"""Fair shares between projects (gateway/fairshare.py): 429 with Retry-After in Docker's shape,
per-project overrides, and the shares of several workers exchanged through the store (each
FairShare here is one worker; they share a real store, SQLite and PostgreSQL)."""

import contextlib
import json
import time

import pytest
from falcon import testing

from gateway import config, fairshare, metrics, store
from gateway.app import Gateway
from gateway.cli import main as cli_main
from gateway.dockerapi import ROUTES


@pytest.fixture
def settings(db_url):
    s = config.Settings(
        gateway=config.GatewaySettings(database=db_url),
        rate_limits=config.RateLimitSettings(requests_per_second=10, streams=2, refusal_delay=0),
    )
    store.init(db_url)
    yield s
    store.close()


def refusals(kind: str) -> float:
    for sample in metrics.RATE_REFUSALS.collect()[0].samples:
        if sample.name == "moorage_rate_refusals_total" and sample.labels == {"kind": kind}:
            return sample.value
    return 0.0


def test_rate_refused_over_the_burst_then_refilled(settings):
    share = fairshare.FairShare(settings)
    before = refusals("requests")
    for _ in range(10):  # the burst: one second's worth
        share.admit("pa", streaming=False)
    with pytest.raises(fairshare.TooManyRequests) as caught:
        share.admit("pa", streaming=False)
    error = caught.value
    assert error.status == 429
    assert dict(error.headers)["Retry-After"] == "1"
    assert "too many requests for project pa" in error.message
    assert "moorage quota set pa rate=N" in error.message
    assert refusals("requests") == before + 1
    share.admit("pb", streaming=False)  # another project has its own bucket
    time.sleep(0.25)  # 10/s: two tokens back
    share.admit("pa", streaming=False)
    share.admit("pa", streaming=False)
    with pytest.raises(fairshare.TooManyRequests):
        share.admit("pa", streaming=False)


def test_streams_held_and_given_back(settings):
    share = fairshare.FairShare(settings)
    assert share.admit("pa", streaming=True) is True
    assert share.admit("pa", streaming=True) is True
    with pytest.raises(fairshare.TooManyRequests) as caught:
        share.admit("pa", streaming=True)
    assert "too many open streams for project pa" in caught.value.message
    assert share.admit("pa", streaming=False) is False  # plain requests are not streams
    share.release("pa")
    assert share.admit("pa", streaming=True) is True


def test_no_limit_costs_nothing(db_url):
    store.init(db_url)
    try:
        share = fairshare.FairShare(config.Settings(gateway=config.GatewaySettings(database=db_url)))
        for _ in range(1000):
            assert share.admit("pa", streaming=True) is False
        assert share.buckets == {}
    finally:
        store.close()


def test_overrides_from_the_quota_table(settings, capsys):
    url = settings.gateway.database
    assert cli_main(["--db", url, "quota", "set", "pa", "rate=2", "streams=unlimited"]) == 0
    capsys.readouterr()
    share = fairshare.FairShare(settings)
    share.exchange()  # learns the overrides
    assert share.limit("pa", "rate") == 2 and share.limit("pa", "streams") == 0
    assert share.limit("pb", "rate") == 10  # the default
    share.admit("pa", streaming=True)
    share.admit("pa", streaming=True)
    with pytest.raises(fairshare.TooManyRequests) as caught:
        share.admit("pa", streaming=True)
    assert "its limit is 2 per second" in caught.value.message
    assert cli_main(["--db", url, "quota", "show", "pa", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)["quotas"]
    assert doc["rate"]["limit"] == 2 and doc["rate"]["source"] == "project"
    assert doc["streams"] == {"limit": None, "in_use": 0, "source": "project"}
    assert cli_main(["--db", url, "quota", "unset", "pa", "rate"]) == 0
    assert cli_main(["--db", url, "quota", "set", "pa", "rate=fast"]) == 2
    assert "rate: expected a whole number" in capsys.readouterr().err
    share.exchange()
    assert share.limit("pa", "rate") == 10


def test_two_workers_split_the_rate_by_demand(settings):
    busy, quiet = fairshare.FairShare(settings), fairshare.FairShare(settings)

    def interval():
        for worker, asked in ((busy, 30), (quiet, 10)):
            for _ in range(asked):
                with contextlib.suppress(fairshare.TooManyRequests):
                    worker.admit("pa", streaming=False)
        busy.exchange()
        quiet.exchange()

    interval()  # each reports; busy exchanged first and saw only its own report
    assert busy.shares["pa"] == 1.0 and quiet.shares["pa"] == pytest.approx(0.25)
    interval()  # from now on each knows the other's demand
    assert busy.shares["pa"] == pytest.approx(0.75) and quiet.shares["pa"] == pytest.approx(0.25)
    # The quiet worker now holds a quarter of the burst, and refills at a quarter of the rate.
    assert quiet._burst("pa", 10) == pytest.approx(2.5)


def test_streams_counted_across_workers(settings):
    one, two = fairshare.FairShare(settings), fairshare.FairShare(settings)
    one.admit("pa", streaming=True)
    one.admit("pa", streaming=True)
    one.exchange()
    two.exchange()  # two has not served the project: it learns the others' streams all the same
    with pytest.raises(fairshare.TooManyRequests):
        two.admit("pa", streaming=True)
    one.release("pa")
    one.exchange()
    two.exchange()
    assert two.admit("pa", streaming=True) is True


def test_the_gateway_answers_429_in_dockers_shape(gateway_settings):
    gateway_settings.rate_limits = config.RateLimitSettings(requests_per_second=1, burst=2, refusal_delay=0.2)
    gw = Gateway(gateway_settings, ROUTES)
    client = testing.TestClient(gw)
    headers = {"X-Auth-Token": "tok-a", "X-Auth-Project-Id": "pa"}
    statuses = [client.simulate_get("/v1.41/containers/json", headers=headers) for _ in range(2)]
    started = time.monotonic()
    statuses.append(client.simulate_get("/v1.41/containers/json", headers=headers))
    refused_at = time.monotonic()
    assert 429 not in [r.status_code for r in statuses[:2]]  # the burst
    refused = statuses[2]
    assert refused.status_code == 429
    assert refused_at - started >= 0.2  # held before it was refused
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["Content-Type"] == "application/json"
    assert json.loads(refused.text)["message"].startswith("too many requests for project pa")
    # Probes and unauthenticated requests are never counted against a project.
    assert client.simulate_get("/healthz").status_code == 200
    assert client.simulate_get("/v1.41/containers/json").status_code == 401
