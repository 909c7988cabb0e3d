"""The fault lane's stack: `scripts/devstack up DIR --hosts 3 --postgres --replicas 2`
(dedicated tenancy: alpha on host 1, beta on host 2, host 3 free)."""

from __future__ import annotations

import pytest

from tests.integration.conftest import own_stack


def pytest_configure(config):
    config.addinivalue_line("markers", "faults: the fault lane (scripts/test --lane faults)")


@pytest.fixture(scope="session")
def fstack():
    with own_stack("moorage-faults-", "--hosts", "3", "--postgres", "--replicas", "2", timeout=900) as stack:
        yield stack
