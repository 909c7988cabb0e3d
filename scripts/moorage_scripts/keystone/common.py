"""What every keystone module shares: its settings, its error, running a command, private files."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time

from .. import (
    REPO,
    Fail,
)

CONSTRAINTS = os.path.join(REPO, "keystone-constraints.txt")
PACKAGES = ["keystone", "gunicorn"]
DEFAULT_EXPIRATION = 7 * 24 * 3600
INSTALL_TIMEOUT = 900
MANAGE_TIMEOUT = 120
START_TIMEOUT = 60
STOP_TIMEOUT = 10
LOCK_TIMEOUT = 900

SHIM = """\
# written by scripts/keystone: Keystone parses sys.argv with oslo.config, which would read
# gunicorn's own command line and exit 2 in every worker; give it an empty one.
import sys

sys.argv = sys.argv[:1]
from keystone.server import wsgi as _ks_wsgi  # noqa: E402

application = _ks_wsgi.initialize_public_application()
"""


def say(msg: str) -> None:
    print(f"keystone: {msg}", file=sys.stderr, flush=True)


def tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])


def run(argv: list[str], *, timeout: float, env: dict | None = None, log: str | None = None) -> None:
    """Run a command to completion; on failure, raise Fail with the end of its output."""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        raise Fail(f"`{shlex.join(argv)}` did not finish within {timeout:g} s") from exc
    except FileNotFoundError as exc:
        raise Fail(f"{argv[0]} not found") from exc
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    if log:
        with open(log, "a") as fh:
            fh.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n{out}\n")
    if proc.returncode != 0:
        lines = [ln for ln in out.splitlines() if ln.strip() and "is ignored: it is neither" not in ln]
        raise Fail(f"`{shlex.join(argv)}` failed (exit {proc.returncode}):\n" + "\n".join(lines[-15:]))


# --- processes ---------------------------------------------------------------------------------


def quiet_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["PYTHONWARNINGS"] = "ignore"  # oslo.* and eventlet deprecation noise
    return env


def write_private(path: str, text: str) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
