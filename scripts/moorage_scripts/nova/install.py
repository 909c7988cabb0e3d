"""What Nova needs installed: mariadb-server and rabbitmq-server from Debian, and a virtualenv
with the PyPI packages pinned by nova-constraints.txt (rebuilt only when the pins change; venvs.py
builds it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from .. import venvs
from .common import (
    APT_COMMANDS,
    APT_PACKAGES,
    CONSTRAINTS,
    INSTALL_TIMEOUT,
    LOCK_TIMEOUT,
    PACKAGES,
    Fail,
    run,
    say,
)


def _command_missing(pkg: str) -> list[str]:
    return [
        c for c in APT_COMMANDS[pkg] if not (os.access(c, os.X_OK) if c.startswith("/") else shutil.which(c))
    ]


def ensure_apt() -> None:
    missing = []
    for pkg in APT_PACKAGES:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True)
        if proc.stdout.decode() != "install ok installed" or _command_missing(pkg):
            missing.append(pkg)
    if not missing:
        return
    if os.geteuid() != 0:
        raise Fail(f"{' '.join(missing)} missing, and installing them needs root")
    t0 = time.monotonic()
    say(f"installing {' '.join(missing)} from Debian (about 45 s)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-q"], timeout=600, env=env)
    # The packages' own start (invoke-rc.d) would start system-wide daemons: forbid it.
    policy = "/usr/sbin/policy-rc.d"
    had_policy = os.path.exists(policy)
    if not had_policy:
        with open(policy, "w") as fh:
            fh.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "--reinstall", *missing],
            timeout=900,
            env=env,
        )
    finally:
        if not had_policy:
            os.unlink(policy)
    lost = [c for pkg in missing for c in _command_missing(pkg)]
    if lost:
        raise Fail(f"{', '.join(lost)} still missing after `apt-get install {' '.join(missing)}`")
    say(f"installed {' '.join(missing)} in {time.monotonic() - t0:.0f} s")


SPEC = venvs.VenvSpec(
    env_var="MOORAGE_NOVA_VENV",
    cache_name="nova-venv",
    stamp_file=".moorage-nova",
    ready_bin="nova-compute",
    constraints=CONSTRAINTS,
    packages=PACKAGES,
    pins_what="Nova and its dependencies",
    installing="installing Nova, placement and neutron into {venv}"
    " (pinned by nova-constraints.txt; about 60 s)",
    installed="installed the Nova virtualenv in {seconds:.0f} s",
    install_timeout=INSTALL_TIMEOUT,
    lock_timeout=LOCK_TIMEOUT,
    say=say,
)


def default_venv() -> str:
    return venvs.default_venv(SPEC)


def ensure_venv(venv: str) -> str:
    return venvs.ensure_venv(SPEC, venv)
