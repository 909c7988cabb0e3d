"""What every nova module shares: its settings, its error, running a command, private files."""

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

CONSTRAINTS = os.path.join(REPO, "nova-constraints.txt")
PACKAGES = ["nova", "openstack-placement", "neutron", "python-novaclient", "pymysql", "gunicorn"]
APT_PACKAGES = ["mariadb-server", "rabbitmq-server"]
# What `up` runs from them (rsync, socat, erlang... come as their dependencies): checked after
# apt, so that a half-removed package is reinstalled rather than failing later, mid-start.
APT_COMMANDS = {
    "mariadb-server": ["mariadbd", "mariadb-install-db", "mariadb"],
    "rabbitmq-server": ["/usr/lib/rabbitmq/bin/rabbitmq-server", "epmd"],
}
INSTALL_TIMEOUT = 1200
MANAGE_TIMEOUT = 300
START_TIMEOUT = 120
STOP_TIMEOUT = 15
LOCK_TIMEOUT = 1200
FLAVOR = "m1.moorage"
SERVICE_USERS = ("nova", "placement", "neutron")
MOORAGE_PROJECT = "moorage"
MOORAGE_USER = "moorage"
SERVICES = ("placement", "neutron", "nova-api", "nova-conductor", "nova-scheduler", "nova-compute")


def say(msg: str) -> None:
    print(f"nova: {msg}", file=sys.stderr, flush=True)


def tail(path: str, lines: int = 8) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [ln.rstrip() for ln in text.splitlines() if ln.strip() and "Warning" not in ln]
    return "\n".join(kept[-lines:])


def quiet_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["PYTHONWARNINGS"] = "ignore"
    env.update(extra)
    return env


def run(
    argv: list[str],
    *,
    timeout: float,
    env: dict | None = None,
    log: str | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise Fail(f"`{shlex.join(argv)}` did not finish within {timeout:g} s") from exc
    except FileNotFoundError as exc:
        raise Fail(f"{argv[0]} not found") from exc
    out = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    if log:
        with open(log, "a") as fh:
            fh.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(argv)}\n{out}\n")
    if check and proc.returncode != 0:
        lines = [ln for ln in out.splitlines() if ln.strip() and "is ignored: it is neither" not in ln]
        raise Fail(f"`{shlex.join(argv)}` failed (exit {proc.returncode}):\n" + "\n".join(lines[-15:]))
    return proc


# --- processes ---------------------------------------------------------------------------------


def write_private(path: str, text: str) -> bool:
    """Write a file only readable by us; True if its content changed."""
    try:
        with open(path) as fh:
            if fh.read() == text:
                return False
    except OSError:
        pass
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return True


def parse_exports(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, _, value = words[1].partition("=")
            out[key] = value
    return out


# --- MariaDB -----------------------------------------------------------------------------------
