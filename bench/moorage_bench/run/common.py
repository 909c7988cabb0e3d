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
# In the order they run; --only takes a subset. "profile" runs only with --profile. logs goes
# last: a long log stream is what has made gunicorn kill a gateway worker (WORKER TIMEOUT).
SECTIONS = ("latency", "lifecycle", "cpu", "concurrency", "attach", "cp", "saveload", "logs")

# Sizes and counts per mode. Every figure is taken `repeat` times (--repeat) and the median of
# the repetitions is reported; the per-repetition sizes below are for one repetition.
PROFILES = {
    "full": dict(
        repeat=5,
        latency_n=200,  # requests per side and endpoint per repetition (after `latency_warm`)
        latency_warm=20,
        lifecycle_n=6,
        cpu_n=1000,  # proxied and direct `ps` per side per repetition for CPU per request
        clients=200,
        duration=4.0,  # seconds of the 200 clients per side per repetition
        logs_mb=200,
        long_logs_mb=200,
        attach_mb=100,
        cp_mb=200,
        image_mb=100,
    ),
    "quick": dict(
        repeat=1,
        latency_n=60,
        latency_warm=10,
        lifecycle_n=3,
        cpu_n=300,
        clients=200,
        duration=2.0,
        logs_mb=10,
        long_logs_mb=20,
        attach_mb=20,
        cp_mb=20,
        image_mb=20,
    ),
}

# Targets (issue 19, item 3): differences or ratios against dockerd in the same run.
P50_ADDED_MS = 0.5
P99_ADDED_MS = 2.0
LIFECYCLE_RATIO = 1.05
STREAM_RATIO = 0.95
RSS_MB_PER_GB = 20.0
CONCURRENCY_RATIO = 0.3
CPU_PER_PS_MS = 0.4

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
