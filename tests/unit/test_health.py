"""/healthz and /readyz: answered before authentication (no headers at all) and outside the
Docker routes; /readyz names what is not ready. Also: a Docker request is counted."""

import peewee
import pytest
from falcon import testing

from gateway import instances, metrics, store
from gateway.app import Gateway
from gateway.dockerapi import ROUTES


@pytest.fixture
def gateway(gateway_settings):
    instances._live_cache.clear()
    gw = Gateway(gateway_settings, ROUTES)
    yield gw
    instances._live_cache.clear()


def _add_live_instance():
    now = store.utcnow()
    store.Instance.create(
        uuid="i-1",
        agent_url="tcp://127.0.0.1:9100",
        agent_secret="s",
        state=store.INSTANCE_UP,
        position=1,
        registered_at=now,
        last_heartbeat=now,
    )


def test_healthz_without_headers(gateway):
    resp = testing.TestClient(gateway).simulate_get("/healthz")
    assert resp.status_code == 200
    assert resp.text == "ok\n"
    assert "Api-Version" not in resp.headers  # not a Docker route


def test_readyz_ready(gateway):
    _add_live_instance()
    resp = testing.TestClient(gateway).simulate_get("/readyz")
    assert resp.status_code == 200, resp.text
    assert resp.text == "ready\n"


def test_readyz_no_instance(gateway):
    resp = testing.TestClient(gateway).simulate_get("/readyz")
    assert resp.status_code == 503
    assert "instances: none is live" in resp.text
    assert "store" not in resp.text and "identity" not in resp.text


def test_readyz_store_does_not_answer(gateway, tmp_path):
    _add_live_instance()
    store.close()
    # A database the process cannot open: what a closed or unreachable store looks like.
    store.database.initialize(peewee.SqliteDatabase(str(tmp_path / "absent" / "db.sqlite")))
    resp = testing.TestClient(gateway).simulate_get("/readyz")
    assert resp.status_code == 503
    assert resp.text.startswith("not ready: store: OperationalError")


def test_readyz_identity_unreachable(gateway, monkeypatch):
    _add_live_instance()
    monkeypatch.setattr(gateway.identity, "unreachable", lambda: "cannot reach Keystone at http://x (Boom)")
    resp = testing.TestClient(gateway).simulate_get("/readyz")
    assert resp.status_code == 503
    assert resp.text == "not ready: identity: cannot reach Keystone at http://x (Boom)\n"


def test_health_paths_only_on_get(gateway):
    assert testing.TestClient(gateway).simulate_post("/healthz").status_code == 405


def test_docker_routes_still_authenticate(gateway):
    assert testing.TestClient(gateway).simulate_get("/containers/json").status_code == 401


def test_requests_counted_by_operation_and_status(gateway):
    def count():
        for sample in metrics.REQUESTS.collect()[0].samples:
            if sample.name == "moorage_requests_total" and sample.labels == {
                "operation": "ContainerList",
                "status": "401",
            }:
                return sample.value
        return 0.0

    before = count()
    testing.TestClient(gateway).simulate_get("/v1.41/containers/json")
    testing.TestClient(gateway).simulate_get("/healthz")  # probes are not counted
    assert count() == before + 1


def test_greenlets_counted():
    """The soak's leak detector (moorage_greenlets): a greenlet spawned is counted until it ends."""
    import gevent

    from gateway import upkeep

    before = upkeep.count_greenlets()
    waiting = gevent.spawn(gevent.sleep, 30)
    gevent.sleep(0)
    assert upkeep.count_greenlets() == before + 1
    waiting.kill()
    assert upkeep.count_greenlets() == before


def test_database_pool_exhausted_is_503_not_500(gateway_settings, postgres_url, monkeypatch):
    """Found by bench/soak: with every pooled PostgreSQL connection held past the pool's wait,
    a request got the gateway's own 500 (MaxConnectionsExceeded), and so did its error answer
    when it asked the store again; it is a 503 saying why."""
    import threading

    from gateway.store import db as store_db

    monkeypatch.setattr(store_db, "PG_POOL_SIZE", 1)
    monkeypatch.setattr(store_db, "PG_POOL_WAIT", 0.2)
    gateway_settings.gateway.database = postgres_url
    gw = Gateway(gateway_settings, ROUTES)
    store.release_connection()
    held, done = threading.Event(), threading.Event()

    def hold() -> None:  # another request's greenlet (here a thread) keeps the one connection
        store.database.execute_sql("SELECT 1")
        held.set()
        done.wait(30)
        store.release_connection()

    holder = threading.Thread(target=hold)
    holder.start()
    # the error answer's path too: it must not ask the store again (for the daemons' roots)
    monkeypatch.setattr(instances, "_roots", (0.0, ()))
    try:
        assert held.wait(30)
        resp = testing.TestClient(gw).simulate_get(
            "/v1.41/containers/json", headers={"X-Auth-Token": "tok-a", "X-Auth-Project-Id": "pa"}
        )
    finally:
        done.set()
        holder.join()
        store.close()
    assert resp.status_code == 503, resp.text
    assert set(resp.json) == {"message"}
    assert "every connection to its database stayed busy" in resp.json["message"]
