"""Processes devstack records (pid and start time, so a reused pid is never mistaken for ours)."""

from __future__ import annotations

import contextlib
import os
import signal
import time

# rec_alive: is the process devstack recorded still the same, living process?
from ..procs import alive as rec_alive
from ..procs import group_pids as group_members
from ..procs import proc_stat  # noqa: F401 (devstack's modules take it from here)
from .common import Fail, say


def proc_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def proc_comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def signal_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def wait_gone(pids_alive, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pids_alive():
            return True
        time.sleep(0.1)
    return not pids_alive()


def stop_record(rec: dict, what: str, timeout: float, group: bool, term: bool = True) -> None:
    """TERM (the process group, if `group`), wait, then KILL; returns once it is gone."""
    pid = rec["pid"]

    def leftovers() -> list[int]:
        pids = [pid] if rec_alive(rec) else []
        if group:
            pids += [p for p in group_members(pid) if p != pid]
        return pids

    if not leftovers():
        return
    if term and rec_alive(rec):
        signal_pid(pid, signal.SIGTERM)
    if term and group:
        for p in group_members(pid):
            signal_pid(p, signal.SIGTERM)
    if wait_gone(leftovers, timeout):
        return
    say(f"{what} (pid {pid}) did not stop within {timeout:g} s of SIGTERM; sending SIGKILL")
    for p in leftovers():
        signal_pid(p, signal.SIGKILL)
    if not wait_gone(leftovers, 10):
        raise Fail(f"{what} (pid {pid}) survived SIGKILL; see {rec.get('log', '?')}")
