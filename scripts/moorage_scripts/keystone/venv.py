"""The virtualenv with PyPI keystone and gunicorn, pinned by keystone-constraints.txt and rebuilt
only when the constraints change.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import time

from .common import CONSTRAINTS, INSTALL_TIMEOUT, LOCK_TIMEOUT, PACKAGES, Fail, run, say


def default_venv() -> str:
    if os.environ.get("MOORAGE_KEYSTONE_VENV"):
        return os.environ["MOORAGE_KEYSTONE_VENV"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(cache, "moorage", "keystone-venv")


def venv_stamp() -> str:
    try:
        with open(CONSTRAINTS, "rb") as fh:
            pins = fh.read()
    except FileNotFoundError as exc:
        raise Fail(f"{CONSTRAINTS} is missing: it pins Keystone and its dependencies") from exc
    h = hashlib.sha256(pins)
    h.update(" ".join(PACKAGES).encode())
    h.update(sys.version.encode())
    return h.hexdigest()


def ensure_venv(venv: str) -> str:
    """Create or reuse the virtualenv; returns it. Serialised between stacks by a lock file."""
    venv = os.path.abspath(venv)
    stamp_path = os.path.join(venv, ".moorage-keystone")
    stamp = venv_stamp()

    def ready() -> bool:
        try:
            with open(stamp_path) as fh:
                return fh.read().strip() == stamp and os.access(
                    os.path.join(venv, "bin", "gunicorn"), os.X_OK
                )
        except OSError:
            return False

    if ready():
        return venv
    os.makedirs(os.path.dirname(venv), exist_ok=True)
    with open(venv + ".lock", "w") as lock:
        deadline = time.monotonic() + LOCK_TIMEOUT
        told = False
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    say(f"waiting for another install into {venv}")
                    told = True
                if time.monotonic() > deadline:
                    raise Fail(f"another process holds {venv}.lock") from None
                time.sleep(0.5)
        if ready():
            return venv
        t0 = time.monotonic()
        say(f"installing Keystone into {venv} (pinned by {os.path.basename(CONSTRAINTS)}; about 30 s)")
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
        say(f"installed Keystone in {time.monotonic() - t0:.1f} s")
    return venv


# --- state -------------------------------------------------------------------------------------
