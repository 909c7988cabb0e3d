"""`docker network ls --filter` on a spanning network as dockerd filters its own networks
(gateway/services/span_views.py matches; moby's daemon/network/filter.go): keys AND-ed, values
of a key OR-ed, but labels, which must all match. compose v5's `down` lists its relay networks
with `label=<project>` and `label=com.docker.compose.relay-network`: a network with only the
first is not one of them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gateway.services.span_views import matches

NET = SimpleNamespace(
    name="cp2_back",
    id="0c102e024fe1" + "a" * 52,
    spec={"Labels": {"com.docker.compose.project": "cp2", "com.docker.compose.network": "back", "flag": ""}},
)

PROJECT = "com.docker.compose.project=cp2"


@pytest.mark.parametrize(
    "filters,expected",
    [
        ({}, True),
        ({"label": ["com.docker.compose.project=cp2"]}, True),
        (
            {"label": {"com.docker.compose.project=cp2": True, "com.docker.compose.relay-network": True}},
            False,
        ),
        ({"label": ["com.docker.compose.project=cp2", "com.docker.compose.network=back"]}, True),
        ({"label": ["com.docker.compose.project"]}, True),
        ({"label": ["flag"]}, True),
        ({"label": ["flag="]}, True),
        ({"label": ["com.docker.compose.project=cp3"]}, False),
        ({"name": ["back"]}, True),
        ({"name": ["^cp2_back$"]}, True),
        ({"name": ["^back"]}, False),
        ({"name": ["nomatch", "cp2"]}, True),
        ({"name": ["("]}, False),
        ({"id": ["0c102e"]}, True),
        ({"id": ["ffff"]}, False),
        ({"driver": ["bridge"]}, True),
        ({"driver": ["overlay"]}, False),
        ({"type": ["builtin"]}, False),
        ({"type": ["custom", "builtin"]}, True),
        ({"scope": ["local"], "name": ["cp2"], "label": ["com.docker.compose.network=back"]}, True),
        ({"scope": ["swarm"], "name": ["cp2"]}, False),
    ],
)
def test_filters_as_dockerd(filters, expected):
    assert matches(NET, filters) is expected  # type: ignore[arg-type]
