"""The processes scripts/keystone and scripts/nova start and record (pid and start time): whether
a record still names the same living process, and stopping it with its process group."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

from . import Fail


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
