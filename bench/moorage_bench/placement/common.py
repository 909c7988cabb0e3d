"""What every bench/placement module shares: sections, databases, sizes per mode, targets."""

from __future__ import annotations

import os

from .. import REPO

SECTIONS = ("decide", "ps")
DATABASES = ("sqlite", "postgres")
DEVSTACK = os.path.join(REPO, "scripts", "devstack")

PROFILES = {
    "full": dict(
        instances=10_000,
        containers=1_000_000,
        decisions=400,
        warm=20,
        rounds=4,
        ps_hosts=20,
        ps_per_host=100,
        ps_n=40,
        ps_warm=3,
        create_threads=8,
    ),
    "quick": dict(
        instances=1_000,
        containers=100_000,
        decisions=100,
        warm=10,
        rounds=2,
        ps_hosts=4,
        ps_per_host=25,
        ps_n=10,
        ps_warm=2,
        create_threads=8,
    ),
}

DECISION_P99_MS = 5.0
PS_RATIO = 1.5
SEED = 5  # fixed: the same data on both databases, run after run

DEFAULT_CAPACITY = 100  # [placement] capacity: the fill-default case's instances of 100 report 0
MIB = 1 << 20
NANO = 1_000_000_000
PROJECT_LABEL = "org.openstack.moorage.project"
