"""The processes scripts/keystone, scripts/nova and devstack start and record (pid and start
time): running a command to its end, spawning a service into its log, whether a record still names
the same living process, and stopping it with its process group."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable

from . import Fail


def run(
    argv: list[str],
    *,
    timeout: float,
    env: dict | None = None,
    log: str | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run a command to completion, its output appended to `log`; on failure (with `check`), raise
    Fail with the end of its output."""
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


def spawn(
    argv: list[str],
    log: str,
    *,
    env: dict | None,
    cwd: str,
    mark: str = "",
    shown: list[str] | None = None,
    **popen,
) -> subprocess.Popen:
    """Start a service in a session of its own (so that stop_process reaches its whole group), its
    output appended to `log` after a line that says when and what (`shown`: argv with its secrets
    hidden; `mark`: who started it)."""
    with open(log, "ab") as fh:
        head = " ".join(w for w in ("\n====", mark, time.strftime("%Y-%m-%d %H:%M:%S")) if w)
        fh.write(f"{head}: {shlex.join(argv if shown is None else shown)}\n".encode())
        fh.flush()
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
            cwd=cwd,
            **popen,
        )


def proc_stat(pid: int) -> tuple[str, int, str] | None:
    """(state, pgrp, starttime) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()
    return fields[0], int(fields[2]), fields[19]


def proc_start(pid: int) -> str | None:
    """The start time of a living process (to tell it from a later one with the same pid)."""
    st = proc_stat(pid)
    return None if st is None or st[0] in ("Z", "X") else st[2]


def alive(rec: dict | None) -> bool:
    return bool(rec) and proc_start(rec["pid"]) == rec.get("start")


def group_pids(pgid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        st = proc_stat(int(name)) if name.isdigit() else None
        if st and st[0] not in ("Z", "X") and st[1] == pgid:
            out.append(int(name))
    return out


def stop_process(rec: dict, what: str, *, timeout: float, say: Callable[[str], None]) -> None:
    """TERM the process and its process group (it was started in a session of its own), wait,
    then KILL; Fail if anything survives that."""
    pid = rec["pid"]

    def left() -> list[int]:
        return ([pid] if alive(rec) else []) + [p for p in group_pids(pid) if p != pid]

    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
        pids = left()
        if not pids:
            return
        if sig == signal.SIGKILL:
            say(f"{what} (pid {pid}) did not stop within {timeout:g} s of SIGTERM; sending SIGKILL")
        for p in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)
        deadline = time.monotonic() + wait
        while left() and time.monotonic() < deadline:
            time.sleep(0.1)
    if left():
        raise Fail(f"{what} (pid {pid}) survived SIGKILL")


def quiet_env(**extra: str) -> dict:
    """The environment for an OpenStack command: none of the caller's OS_* credentials, and no
    Python warnings (oslo.* and eventlet deprecation noise), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["PYTHONWARNINGS"] = "ignore"
    env.update(extra)
    return env
