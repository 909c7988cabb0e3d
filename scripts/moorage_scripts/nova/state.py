"""One Nova under DIR: its paths, nova.json (ports, passwords, processes), its lock and spawning."""

from __future__ import annotations

import hashlib
import time

from ..files import ToolDir
from ..ports import free_port, port_free
from ..procs import alive, proc_start, spawn
from .common import LOCK_TIMEOUT, START_TIMEOUT, Fail, tail


class Nova(ToolDir):
    def __init__(self, directory: str):
        super().__init__(directory, state_name="nova.json", tool="scripts/nova", lock_timeout=LOCK_TIMEOUT)
        self.hash = hashlib.sha256(self.dir.encode()).hexdigest()[:6]

    def load(self) -> bool:
        if not super().load():
            return False
        self.state.setdefault("procs", {})
        return True

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
