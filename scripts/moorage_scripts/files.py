"""The files the tooling keeps: private ones written whole, `export K=V` files read back, a log's
last lines, a JSON state file, and a lock file waited for."""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import time
from collections.abc import Callable
from typing import IO

from . import Fail


def write_private(path: str, text: str) -> None:
    """Write a file only we can read, whole: a reader sees the old content or the new one."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def parse_exports(text: str) -> dict:
    """`export K=V` lines (shell-quoted, as scripts/keystone and devstack write them) as a dict."""
    out = {}
    for line in text.splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, _, value = words[1].partition("=")
            out[key] = value
    return out


def tail(path: str, lines: int, *, window: int, skip: str | None = None) -> str:
    """The last non-blank lines of a log, read from its last `window` bytes; lines holding `skip`
    are left out."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - window))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    kept = [ln.rstrip() for ln in text.splitlines() if ln.strip() and (skip is None or skip not in ln)]
    return "\n".join(kept[-lines:])


def load_state(path: str) -> dict | None:
    """A JSON state file's content; None when there is none yet."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise Fail(f"{path} is not valid JSON ({exc}); fix or remove it") from exc


def flock_wait(fh: IO, *, timeout: float, interval: float, waiting: Callable[[], None] | None = None) -> bool:
    """Take an exclusive lock on an open file, polling; `waiting` is called once if another holds
    it. False if it is still held after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    told = False
    while True:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            if waiting and not told:
                waiting()
                told = True
            time.sleep(interval)


class ToolDir:
    """The directory scripts/keystone or scripts/nova keeps one service in: its JSON state (written
    private: it holds passwords) and the lock every command of the tool on it holds while it works."""

    def __init__(self, directory: str, *, state_name: str, tool: str, lock_timeout: float):
        self.dir = os.path.realpath(directory)
        self.state_path = self.path(state_name)
        self.state: dict = {}
        self._tool = tool
        self._lock_timeout = lock_timeout

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def load(self) -> bool:
        """Read the state; False (and an empty state) when there is none yet."""
        state = load_state(self.state_path)
        self.state = state or {}
        return state is not None

    def save(self) -> None:
        write_private(self.state_path, json.dumps(self.state, indent=2, sort_keys=True) + "\n")

    def lock(self) -> IO:
        """The held lock file: the lock lasts until it is closed."""
        fh = open(self.path(".lock"), "w")  # noqa: SIM115 (held open: the lock lasts as long as the handle)
        if not flock_wait(fh, timeout=self._lock_timeout, interval=0.2):
            fh.close()
            raise Fail(f"another {self._tool} command holds {self.path('.lock')}")
        return fh
