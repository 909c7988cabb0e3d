"""What every devstack module shares: the stack's constants, its two errors, and running a command."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

from .. import Fail
from ..files import parse_exports, write_private  # noqa: F401 (the devstack modules take them from here)

RUN_BASE = "/run/moorage"
NETNS_DIR = "/var/run/netns"
NET_PREFIX = "198.18"  # 198.18.0.0/15 (RFC 2544 benchmarking); never 10/8, 172.16/12, 192.168/16
REGISTRY_PORT = 5000
DNS_PORT = 53
# Container networks inside each host (198.19.0.0/17, half of the other half of the benchmarking
# range): docker0 takes the first /24, each project's default bridge (tenancy.scope) the others,
# 127 per daemon; dockerd skips the pool's /24 that docker0 holds. Hosts are separate network
# namespaces, so every host reuses the same ranges. Networks that span instances take their
# subnets from the gateway's pool, 198.19.128.0/17 ([networks] pool), which no daemon's overlaps.
DOCKER0_BIP = "198.19.0.1/24"
CONTAINER_POOL = "base=198.19.0.0/17,size=24"
AGENT_PORT = 2376
TENANTS = ("alpha", "beta")
MAX_HOSTS = 200
# The reference daemon's host index: a dockerd of the same build and flags, in a network
# namespace of its own, that no instance is and no agent serves. The parity suite compares
# Moorage with it (MOORAGE_REFERENCE_HOST): on an instance's own dockerd, the tenant's images
# would carry Moorage's daemon tags beside the suite's, and dockerd's answers about them change.
REFERENCE = 0

DOCKERD_START_TIMEOUT = 30
GATEWAY_START_TIMEOUT = 30
AGENT_START_TIMEOUT = 30
REGISTRY_START_TIMEOUT = 15
STOP_TIMEOUT = 15
DOCKERD_STOP_TIMEOUT = 20
LOCK_TIMEOUT = 300

# Executables devstack starts (directly or through dockerd); the leftover sweep in `down` only
# ever touches processes with one of these names whose command line names this stack.
DAEMON_COMMS = {
    "dockerd",
    "containerd",
    "containerd-shim",
    "containerd-shim-runc-v2",
    "docker-proxy",
    "docker-registry",
    "runc",
}


MAX_REPLICAS = 16


class Usage(Exception):
    """A usage error (exit 2)."""


def say(msg: str) -> None:
    print(f"devstack: {msg}", file=sys.stderr, flush=True)


def last_line(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return ""
    lines = [ln for ln in lines if ln and not ln.startswith("==== devstack")]
    return lines[-1][:240] if lines else ""


def see_log(path: str) -> str:
    tail = last_line(path)
    return f"see {path}" + (f" (last line: {tail})" if tail else "")


def run(
    argv: list[str],
    *,
    timeout: float = 30,
    check: bool = True,
    input: bytes | None = None,
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            timeout=timeout,
            env=env,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise Fail(f"`{shlex.join(argv)}` did not finish within {timeout:g} s") from exc
    except FileNotFoundError as exc:
        raise Fail(f"{argv[0]} not found (run scripts/install-deps)") from exc
    if check and proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise Fail(f"`{shlex.join(argv)}` failed (exit {proc.returncode}): {err[-1] if err else ''}")
    return proc


def run_down(argv: list[str], timeout: float) -> None:
    """Run scripts/keystone or scripts/nova `down`: a failure is a warning, so that the rest of the
    stack still goes down."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        say(f"warning: `{shlex.join(argv)}` did not finish within {timeout:g} s")
        return
    if proc.returncode != 0:
        say(f"warning: `{shlex.join(argv)}` failed: {proc.stderr.decode('utf-8', 'replace').strip()[-300:]}")


def require_root() -> None:
    if os.geteuid() != 0:
        raise Fail("must run as root (network namespaces, bridges, dockerd)")
