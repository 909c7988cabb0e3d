"""What every bench/run module shares: sizes per mode, thresholds, its error, the env file."""

from __future__ import annotations

import os
import shlex
import sys

from .. import REPO

DEVSTACK = os.path.join(REPO, "scripts", "devstack")
IMAGE = "busybox:latest"
BENCH_LABEL = "org.openstack.moorage.bench"
MB = 1_000_000
SIDES = ("direct", "moorage")
SECTIONS = ("latency", "lifecycle", "concurrency", "logs", "cp", "rss")

# Sizes and counts per mode.
PROFILES = {
    "full": dict(
        latency_n=300,
        latency_warm=30,
        lifecycle_n=30,
        lifecycle_warm=2,
        stream_mb=200,
        stream_reps=3,
        clients=100,
        duration=10.0,
        rss_mb=1000,
    ),
    "quick": dict(
        latency_n=60,
        latency_warm=10,
        lifecycle_n=6,
        lifecycle_warm=1,
        stream_mb=50,
        stream_reps=1,
        clients=100,
        duration=3.0,
        rss_mb=200,
    ),
}

# Targets: the figures a run is judged against (bench/README.md).
ADDED_P50_MS = 2.0
LIFECYCLE_RATIO = 1.10
STREAM_RATIO = 0.85
RSS_GROWTH_MB = 50.0

REQUEST_TIMEOUT = 120  # seconds per socket operation; streams read for as long as they flow


class BenchError(Exception):
    """Something that stops the bench (or a section) from taking its figures."""


def say(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# --- the stack ---------------------------------------------------------------------------------


def read_env(path: str) -> dict[str, str]:
    env = {}
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if not line.startswith("export "):
                continue
            key, _, value = line[len("export ") :].partition("=")
            words = shlex.split(value)
            env[key] = words[0] if words else ""
    for key in ("DOCKER_HOST", "DOCKER_CONFIG", "MOORAGE_DIRECT_HOST"):
        if not env.get(key):
            raise BenchError(f"{path} has no {key}")
    return env
