"""A container created without a name gets one from the gateway (services/containers.py): when
a create at the same moment took that name (it was free when chosen, outside the placement's
lock), another is chosen, as dockerd tries its own again; a name the client gave is refused
(409) as dockerd refuses it. Against a real store, SQLite and PostgreSQL."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gateway import config, store
from gateway.errors import DockerError
from gateway.placement import PlacementRequest
from gateway.services import containers


@pytest.fixture
def ctx(db_url, monkeypatch):
    s = config.Settings(
        gateway=config.GatewaySettings(database=db_url), placement=config.PlacementSettings(tenancy="shared")
    )
    store.init(s.gateway.database)
    store.Instance.create(
        uuid="i0",
        agent_url="tcp://127.0.0.1:2000",
        agent_secret="s",
        state="up",
        last_heartbeat=store.utcnow(),
    )
    # the racer's create, placed and not yet made on its daemon
    store.Container.create(
        id=store.RESERVATION_PREFIX + "r" * 32, project="p", name="eager_turing", instance="i0"
    )
    chosen = iter(["eager_turing", "calm_hopper"])  # the first is the racer's, as it was chosen
    monkeypatch.setattr(containers, "_free_random_name", lambda project: next(chosen))
    yield SimpleNamespace(project="p", settings=s)
    store.close()


def test_a_name_the_gateway_chose_and_a_racer_took_is_chosen_again(ctx):
    request = PlacementRequest(project="p", name="eager_turing", labels={})
    placement = containers._place_named(ctx, request, gateway_named=True)
    assert placement.instance.uuid == "i0" and request.name == "calm_hopper"
    assert store.container_named("p", "calm_hopper") is not None  # reserved under its new name


def test_a_name_the_client_gave_is_refused_when_taken(ctx):
    request = PlacementRequest(project="p", name="eager_turing", labels={})
    with pytest.raises(DockerError) as exc:
        containers._place_named(ctx, request, gateway_named=False)
    assert exc.value.status == 409 and "is already in use" in exc.value.message


def test_aliases_follow_the_name_chosen_again():
    body = {"NetworkingConfig": {"EndpointsConfig": {"mynet": {"Aliases": ["eager_turing", "web"]}}}}
    containers._rename_aliases(body, "eager_turing", "calm_hopper")
    assert body["NetworkingConfig"]["EndpointsConfig"]["mynet"]["Aliases"] == ["calm_hopper", "web"]
