"""One Nova under DIR: its paths, nova.json (ports, passwords, processes), its lock and spawning."""

from __future__ import annotations

import hashlib
import json
import os
import time

from ..files import flock_wait, load_state
from ..ports import free_port, port_free
from ..procs import alive, proc_start, spawn
from .common import LOCK_TIMEOUT, START_TIMEOUT, Fail, tail, write_private


class Nova:
    def __init__(self, directory: str):
        self.dir = os.path.realpath(directory)
        self.hash = hashlib.sha256(self.dir.encode()).hexdigest()[:6]
        self.state_path = self.path("nova.json")
        self.state: dict = {}

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    def load(self) -> bool:
        state = load_state(self.state_path)
        self.state = state or {}
        if state is None:
            return False
        self.state.setdefault("procs", {})
        return True

    def save(self) -> None:
        write_private(self.state_path, json.dumps(self.state, indent=2, sort_keys=True) + "\n")

    def lock(self):
        fh = open(self.path(".lock"), "w")  # noqa: SIM115 (held open: the lock lasts as long as the handle)
        if not flock_wait(fh, timeout=LOCK_TIMEOUT, interval=0.2):
            fh.close()
            raise Fail(f"another scripts/nova command holds {self.path('.lock')}")
        return fh

    def port(self, name: str) -> int:
        ports = self.state.setdefault("ports", {})
        rec = self.proc(name)
        if not ports.get(name) or (not alive(rec) and not port_free(ports[name])):
            ports[name] = free_port()
        return ports[name]

    def proc(self, name: str) -> dict | None:
        return self.state.setdefault("procs", {}).get(name)

    def spawn(self, name: str, argv: list[str], env: dict, log: str) -> dict:
        proc = spawn(argv, log, env=env, cwd=self.dir, mark="scripts/nova")
        rec = {"pid": proc.pid, "start": proc_start(proc.pid) or "", "log": log}
        self.state["procs"][name] = rec
        self.save()
        return rec

    def wait(self, name: str, what: str, ready, timeout: float = START_TIMEOUT) -> None:
        rec = self.proc(name)
        deadline = time.monotonic() + timeout
        while not ready():
            if rec and not alive(rec):
                raise Fail(f"{what} exited during start-up; see {rec['log']}:\n{tail(rec['log'])}")
            if time.monotonic() > deadline:
                raise Fail(
                    f"{what} not ready within {timeout:g} s; see {rec['log'] if rec else ''}:\n"
                    + (tail(rec["log"]) if rec else "")
                )
            time.sleep(0.3)
