"""The operations of the Docker Engine API v1.41, read from the spec the project keeps in shared/."""

from __future__ import annotations

import os
from dataclasses import dataclass

import yaml

SWARM_TAGS = {"Node", "Swarm", "Service", "Task", "Secret", "Config"}
METHODS = ("get", "post", "put", "delete", "head")


@dataclass(frozen=True)
class Operation:
    id: str
    method: str
    path: str
    tag: str
    statuses: tuple[int, ...]

    @property
    def swarm(self) -> bool:
        return self.tag in SWARM_TAGS


def find_spec(repo: str) -> str:
    candidates = [
        os.environ.get("COMPAT_DOCKER_API_SPEC", ""),
        os.path.join(repo, "..", "shared", "docker-api", "v1.41.yaml"),
        "/work/shared/docker-api/v1.41.yaml",
    ]
    for path in candidates:
        if path and os.path.exists(path):
            return os.path.abspath(path)
    raise SystemExit(
        "compat-tests: cannot find the API spec v1.41.yaml (looked in ../shared/docker-api/; "
        "set COMPAT_DOCKER_API_SPEC)"
    )


def operations(path: str) -> list[Operation]:
    with open(path) as fh:
        doc = yaml.safe_load(fh)
    out = []
    for route, methods in doc["paths"].items():
        for method, op in methods.items():
            if method not in METHODS:
                continue
            statuses = tuple(sorted(int(s) for s in op.get("responses", {}) if str(s).isdigit()))
            out.append(
                Operation(op["operationId"], method.upper(), route, (op.get("tags") or ["?"])[0], statuses)
            )
    return out
