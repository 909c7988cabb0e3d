"""The fault lane's stack: `scripts/devstack up DIR --hosts 3 --postgres --replicas 2`
(dedicated tenancy: alpha on host 1, beta on host 2, host 3 free)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

from tests.integration.conftest import DEVSTACK, Stack, read_env


def pytest_configure(config):
    config.addinivalue_line("markers", "faults: the fault lane (scripts/test --lane faults)")


@pytest.fixture(scope="session")
def fstack():
    directory = tempfile.mkdtemp(prefix="moorage-faults-")
    argv = [sys.executable, DEVSTACK, "up", directory, "--hosts", "3", "--postgres", "--replicas", "2"]
    up = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        subprocess.run(
            [sys.executable, DEVSTACK, "down", directory, "--purge"], capture_output=True, timeout=300
        )
        pytest.fail(f"devstack up failed:\n{up.stderr}")
    try:
        yield Stack(read_env(os.path.join(directory, "env")), directory)
    finally:
        subprocess.run(
            [sys.executable, DEVSTACK, "down", directory, "--purge"], capture_output=True, timeout=300
        )
