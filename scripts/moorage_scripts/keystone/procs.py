"""The processes scripts/keystone records (pid and start time), and stopping them."""

from __future__ import annotations

import contextlib
import os
import signal
import time

from .common import STOP_TIMEOUT, Fail, say


def proc_start(pid: int) -> str | None:
    """The start time of a living process (to tell it from a later one with the same pid)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def alive(rec: dict | None) -> bool:
    return bool(rec) and proc_start(rec["pid"]) == rec.get("start")


def group_pids(pgid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                data = fh.read()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            out.append(int(name))
    return out


def stop_process(rec: dict, timeout: float = STOP_TIMEOUT) -> None:
    """TERM the gunicorn master and its process group, wait, then KILL."""
    pid = rec["pid"]

    def left() -> list[int]:
        return ([pid] if alive(rec) else []) + [p for p in group_pids(pid) if p != pid]

    for p in left():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while left() and time.monotonic() < deadline:
        time.sleep(0.1)
    if left():
        say(f"gunicorn (pid {pid}) did not stop within {timeout:g} s of SIGTERM; sending SIGKILL")
        for p in left():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while left() and time.monotonic() < deadline:
            time.sleep(0.1)
        if left():
            raise Fail(f"gunicorn (pid {pid}) survived SIGKILL")


# --- HTTP --------------------------------------------------------------------------------------
