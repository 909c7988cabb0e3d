"""The virtualenvs scripts/keystone and scripts/nova install their PyPI packages into: where one
lives by default, the stamp that says which pins built it, and building it under a lock file so
that two stacks starting at once install it once. What differs between the two is a VenvSpec."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import Fail
from .files import flock_wait
from .procs import run


@dataclass(frozen=True)
class VenvSpec:
    env_var: str  # names a virtualenv in place of the default
    cache_name: str  # the default's directory under ~/.cache/moorage
    stamp_file: str  # in the virtualenv: the stamp of the pins that built it
    ready_bin: str  # in its bin/: present once the install finished
    constraints: str  # the pins
    packages: list[str]
    pins_what: str  # what the pins pin, for the message when they are missing
    installing: str  # the message as the install starts ({venv}: where)
    installed: str  # the message when it is done ({seconds}: how long it took)
    install_timeout: float
    lock_timeout: float
    say: Callable[[str], None]
    say_waiting: bool = False  # say once that another install holds the lock


def default_venv(spec: VenvSpec) -> str:
    if os.environ.get(spec.env_var):
        return os.environ[spec.env_var]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(cache, "moorage", spec.cache_name)


def venv_stamp(spec: VenvSpec) -> str:
    try:
        with open(spec.constraints, "rb") as fh:
            pins = fh.read()
    except FileNotFoundError as exc:
        raise Fail(f"{spec.constraints} is missing: it pins {spec.pins_what}") from exc
    h = hashlib.sha256(pins)
    h.update(" ".join(spec.packages).encode())
    h.update(sys.version.encode())
    return h.hexdigest()


def ensure_venv(spec: VenvSpec, venv: str) -> str:
    """Create or reuse the virtualenv; returns it. Serialised between stacks by a lock file."""
    venv = os.path.abspath(venv)
    stamp_path = os.path.join(venv, spec.stamp_file)
    stamp = venv_stamp(spec)

    def ready() -> bool:
        try:
            with open(stamp_path) as fh:
                return fh.read().strip() == stamp and os.access(
                    os.path.join(venv, "bin", spec.ready_bin), os.X_OK
                )
        except OSError:
            return False

    if ready():
        return venv
    os.makedirs(os.path.dirname(venv), exist_ok=True)
    with open(venv + ".lock", "w") as lock:
        waiting = (lambda: spec.say(f"waiting for another install into {venv}")) if spec.say_waiting else None
        if not flock_wait(lock, timeout=spec.lock_timeout, interval=0.5, waiting=waiting):
            raise Fail(f"another process holds {venv}.lock")
        if ready():
            return venv
        t0 = time.monotonic()
        spec.say(spec.installing.format(venv=venv))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stamp_path)
        log = venv + ".install.log"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(log)
        run([sys.executable, "-m", "venv", "--clear", venv], timeout=120, log=log)
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONWARNINGS="ignore")
        pip = [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q", "-c", spec.constraints]
        run([*pip, *spec.packages], timeout=spec.install_timeout, env=env, log=log)
        with open(stamp_path, "w") as fh:
            fh.write(stamp + "\n")
        spec.say(spec.installed.format(seconds=time.monotonic() - t0))
    return venv
