"""The virtualenv with PyPI keystone and gunicorn, pinned by keystone-constraints.txt and rebuilt
only when the constraints change (venvs.py builds it).
"""

from __future__ import annotations

import os

from .. import venvs
from .common import CONSTRAINTS, INSTALL_TIMEOUT, LOCK_TIMEOUT, PACKAGES, say

SPEC = venvs.VenvSpec(
    env_var="MOORAGE_KEYSTONE_VENV",
    cache_name="keystone-venv",
    stamp_file=".moorage-keystone",
    ready_bin="gunicorn",
    constraints=CONSTRAINTS,
    packages=PACKAGES,
    pins_what="Keystone and its dependencies",
    installing=f"installing Keystone into {{venv}} (pinned by {os.path.basename(CONSTRAINTS)}; about 30 s)",
    installed="installed Keystone in {seconds:.1f} s",
    install_timeout=INSTALL_TIMEOUT,
    lock_timeout=LOCK_TIMEOUT,
    say=say,
    say_waiting=True,
)


def default_venv() -> str:
    return venvs.default_venv(SPEC)


def ensure_venv(venv: str) -> str:
    """Create or reuse the virtualenv; returns it. Serialised between stacks by a lock file."""
    return venvs.ensure_venv(SPEC, venv)
