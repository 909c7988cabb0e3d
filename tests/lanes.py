"""What the keystone and nova lanes (tests/keystone, tests/nova) share: where the tools are, reading
an `export K=V` file, running a tool quietly, and the session's devstack stack brought up and taken
down around the lane."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVSTACK = os.path.join(REPO, "scripts", "devstack")
DOCKER = "/usr/local/bin/docker" if os.access("/usr/local/bin/docker", os.X_OK) else shutil.which("docker")


def read_exports(path: str) -> dict:
    out = {}
    with open(path) as fh:
        for line in fh:
            words = shlex.split(line, comments=True)
            if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                key, _, value = words[1].partition("=")
                out[key] = value
    return out


def run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def require_stack_tools(lane: str) -> None:
    """Skip the lane where devstack cannot run: it needs root and the docker CLI."""
    if os.geteuid() != 0:
        pytest.skip(f"the {lane} lane needs root (scripts/devstack makes namespaces and runs dockerd)")
    if not DOCKER:
        pytest.skip("no docker CLI")


@contextlib.contextmanager
def devstack(directory: str, flags: list[str], *, lane: str, up_timeout: float, down_timeout: float):
    """`scripts/devstack up DIR FLAGS` (flags[0] names it in a failure), yielding the stack's env
    file as a dict; `down --purge` afterwards, whatever happened."""
    try:
        t0 = time.monotonic()
        proc = run([sys.executable, DEVSTACK, "up", directory, *flags], timeout=up_timeout)
        if proc.returncode != 0:
            pytest.fail(f"scripts/devstack up {flags[0]} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        sys.stderr.write(f"\n[{lane} lane] devstack up {flags[0]} in {time.monotonic() - t0:.1f} s\n")
        yield read_exports(os.path.join(directory, "env"))
    finally:
        down = run([sys.executable, DEVSTACK, "down", directory, "--purge"], timeout=down_timeout)
        if down.returncode != 0:
            sys.stderr.write(f"devstack down failed: {down.stderr[-2000:]}\n")
