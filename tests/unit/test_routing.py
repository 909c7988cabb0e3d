"""The route table covers the Docker API and matches as dockerd's router does."""

import os

import pytest
import yaml

from gateway.dockerapi import ROUTES, STREAMING_ROUTES
from gateway.routing import Router

SPEC = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "docker-api", "v1.41.yaml")
SWARM_TAGS = {"Swarm", "Node", "Service", "Task", "Secret", "Config"}

router = Router(ROUTES)


def spec_operations():
    with open(SPEC) as fh:
        spec = yaml.safe_load(fh)
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if method in ("get", "post", "put", "delete", "head"):
                yield method.upper(), path, op["operationId"], set(op.get("tags", []))


def test_every_non_swarm_operation_of_v141_has_its_route():
    ops = [op for op in spec_operations() if not (op[3] & SWARM_TAGS)]
    assert len(ops) > 70
    by_operation = {route.operation: route for route in ROUTES}
    missing = []
    for method, path, operation, tags in ops:
        if "Plugin" in tags:
            continue  # refused as a family, see below
        route = by_operation.get(operation)
        if route is None or route.method != method or route.path.replace("{name*}", "{name}") != path:
            missing.append((method, path, operation))
    assert missing == []


@pytest.mark.parametrize("method,path,operation,tags", list(spec_operations()))
def test_each_spec_path_matches_a_route(method, path, operation, tags):
    name = "myvol" if "Volume" in tags else "registry:5000/team/app:1.0"  # volume names hold no slash
    concrete = path.replace("{id}", "abc123").replace("{name}", name)
    route, params, version = router.match(method, "/v1.41" + concrete)
    assert route is not None, (method, path)
    assert version == "1.41"
    if tags & SWARM_TAGS:
        assert route.operation.startswith("Swarm:")
    elif "Plugin" in tags:
        assert route.operation == "Plugin"
    else:
        assert route.operation == operation
        if "{name}" in path and "Plugin" not in tags and "Volume" not in tags:
            assert params["name"] == "registry:5000/team/app:1.0"


def test_unversioned_paths_match_and_trailing_slashes_do_not_as_in_dockerd():
    assert router.match("GET", "/containers/json")[0].operation == "ContainerList"
    assert router.match("GET", "/containers/json/")[0] is None
    assert router.match("GET", "/v1.24/containers/json")[2] == "1.24"


def test_unknown_paths_and_methods_do_not_match():
    assert router.match("GET", "/nope")[0] is None
    assert router.match("PATCH", "/containers/json")[0] is None
    assert router.match("GET", "/containers/a/b/json")[0] is None  # an ID never holds a slash


def test_streaming_routes_are_the_ones_a_relay_tier_serves():
    ops = {route.operation for route in STREAMING_ROUTES}
    for needed in (
        "ContainerAttach",
        "ExecStart",
        "ContainerLogs",
        "SystemEvents",
        "ContainerStats",
        "ContainerArchive",
        "PutContainerArchive",
        "ContainerExport",
        "ImageGet",
        "ImageGetAll",
        "ImageLoad",
        "ImageCreate",
        "ImageBuild",
        "ImagePush",
    ):
        assert needed in ops
    assert "ContainerCreate" not in ops
