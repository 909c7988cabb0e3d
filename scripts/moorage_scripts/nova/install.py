"""What Nova needs installed: mariadb-server and rabbitmq-server from Debian, and a virtualenv
with the PyPI packages pinned by nova-constraints.txt (rebuilt only when the pins change).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time

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


def default_venv() -> str:
    if os.environ.get("MOORAGE_NOVA_VENV"):
        return os.environ["MOORAGE_NOVA_VENV"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(cache, "moorage", "nova-venv")


def venv_stamp() -> str:
    try:
        with open(CONSTRAINTS, "rb") as fh:
            pins = fh.read()
    except FileNotFoundError as exc:
        raise Fail(f"{CONSTRAINTS} is missing: it pins Nova and its dependencies") from exc
    h = hashlib.sha256(pins)
    h.update(" ".join(PACKAGES).encode())
    h.update(sys.version.encode())
    return h.hexdigest()


def ensure_venv(venv: str) -> str:
    venv = os.path.abspath(venv)
    stamp_path = os.path.join(venv, ".moorage-nova")
    stamp = venv_stamp()

    def ready() -> bool:
        try:
            with open(stamp_path) as fh:
                return fh.read().strip() == stamp and os.access(
                    os.path.join(venv, "bin", "nova-compute"), os.X_OK
                )
        except OSError:
            return False

    if ready():
        return venv
    os.makedirs(os.path.dirname(venv), exist_ok=True)
    with open(venv + ".lock", "w") as lock:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Fail(f"another process holds {venv}.lock") from None
                time.sleep(0.5)
        if ready():
            return venv
        t0 = time.monotonic()
        say(
            f"installing Nova, placement and neutron into {venv} (pinned by nova-constraints.txt; about 60 s)"
        )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stamp_path)
        log = venv + ".install.log"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(log)
        run([sys.executable, "-m", "venv", "--clear", venv], timeout=120, log=log)
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONWARNINGS="ignore")
        run(
            [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q", "-c", CONSTRAINTS, *PACKAGES],
            timeout=INSTALL_TIMEOUT,
            env=env,
            log=log,
        )
        with open(stamp_path, "w") as fh:
            fh.write(stamp + "\n")
        say(f"installed the Nova virtualenv in {time.monotonic() - t0:.0f} s")
    return venv


# --- state -------------------------------------------------------------------------------------
