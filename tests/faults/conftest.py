"""The fault lane's stacks. tests/faults/test_faults.py: `scripts/devstack up DIR --hosts 3
--postgres --replicas 2 --host-disk-mb 300` (dedicated tenancy: alpha on host 1, beta on host
2, host 3 free; each host's dockerd on a 300 MB filesystem of its own, for the disk-full fault).
tests/faults/test_keystone_down.py: a small `--hosts 1 --keystone` stack of its own.

Each stack lives as long as its module, so that the lane never runs two at once. To work on
one module against a stack already up, set MOORAGE_FAULTS_ENV=DIR/env (a stack brought up with
the same flags); it is left up, and it must be one you may break.
"""

from __future__ import annotations

import os

import pytest

from tests.integration.conftest import Stack, own_stack, read_env

FAULT_STACK = ("--hosts", "3", "--postgres", "--replicas", "2", "--host-disk-mb", "300")
KEYSTONE_STACK = ("--hosts", "1", "--keystone")


def pytest_configure(config):
    config.addinivalue_line("markers", "faults: the fault lane (scripts/test --lane faults)")


def stack_of(prefix: str, flags: tuple[str, ...]):
    reuse = os.environ.get("MOORAGE_FAULTS_ENV")
    if reuse:
        yield Stack(read_env(reuse), os.path.dirname(os.path.abspath(reuse)))
        return
    with own_stack(prefix, *flags, timeout=900) as stack:
        yield stack


@pytest.fixture(scope="module")
def fstack():
    yield from stack_of("moorage-faults-", FAULT_STACK)


@pytest.fixture(scope="module")
def kstack():
    yield from stack_of("moorage-faults-ks-", KEYSTONE_STACK)
