"""The Stack: every name and path derived from DIR's hash, state.json, the lock and spawning."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid

from ..files import flock_wait, load_state
from ..procs import spawn
from .common import (
    LOCK_TIMEOUT,
    NET_PREFIX,
    NETNS_DIR,
    REGISTRY_PORT,
    RUN_BASE,
    STOP_TIMEOUT,
    Fail,
    say,
    see_log,
)
from .procs import proc_stat, rec_alive, stop_record


class Stack:
    def __init__(self, directory: str):
        self.dir = os.path.realpath(directory)
        self.hash = hashlib.sha256(self.dir.encode()).hexdigest()[:6]
        self.run = f"{RUN_BASE}/{self.hash}"
        self.bridge = f"mrg{self.hash}"
        self.state_path = os.path.join(self.dir, "state.json")
        self.state: dict = {}
        self.last_admin_error = ""
        self._lock_fh = None

    # names and paths
    def netns(self, i: int) -> str:
        return f"mrg-{self.hash}-h{i}"

    def netns_path(self, i: int) -> str:
        return f"{NETNS_DIR}/{self.netns(i)}"

    def veth(self, i: int) -> str:
        return f"mrg{self.hash}h{i}"

    def peer(self, i: int) -> str:
        return f"mrg{self.hash}p{i}"

    def host_run(self, i: int) -> str:
        return f"{self.run}/h{i}"

    def sock(self, i: int) -> str:
        return f"{self.host_run(i)}/docker.sock"

    def host_dir(self, i: int) -> str:
        return os.path.join(self.dir, "hosts", str(i))

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    @property
    def subnet(self) -> int:
        return self.state["subnet"]

    @property
    def gw_ip(self) -> str:
        return f"{NET_PREFIX}.{self.subnet}.1"

    def host_ip(self, i: int) -> str:
        return f"{NET_PREFIX}.{self.subnet}.{10 + i}"

    @property
    def registry(self) -> str:
        return f"{self.gw_ip}:{REGISTRY_PORT}"

    @property
    def external(self) -> str | None:
        return self.state.get("docker_host")

    def endpoint(self, i: int) -> str:
        if i == 1 and self.external:
            return self.external
        return f"unix://{self.sock(i)}"

    def host_uuid(self, i: int) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"moorage-devstack:{self.dir}:{i}"))

    @property
    def nhosts(self) -> int:
        return int(self.state.get("hosts", 0))

    # state and locking
    def load(self) -> bool:
        state = load_state(self.state_path)
        self.state = state or {}
        if state is None:
            return False
        self.state.setdefault("procs", {})
        return True

    def save(self) -> None:
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.state, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, self.state_path)

    def lock(self) -> None:
        os.makedirs(f"{RUN_BASE}/locks", exist_ok=True)
        self._lock_fh = open(f"{RUN_BASE}/locks/{self.hash}.lock", "w")  # noqa: SIM115 (held open: the lock lasts as long as the handle)

        def waiting() -> None:
            say(f"waiting for another devstack command on {self.dir}")

        if not flock_wait(self._lock_fh, timeout=LOCK_TIMEOUT, interval=0.2, waiting=waiting):
            raise Fail(f"another devstack command holds the lock for {self.dir}")

    def claim_run_dir(self) -> None:
        """Create /run/moorage/HASH, refusing if another DIR owns this hash."""
        os.makedirs(self.run, exist_ok=True)
        other = run_dir_owner(self)
        if other is None:
            with open(os.path.join(self.run, "dir"), "w") as fh:
                fh.write(self.dir + "\n")
        elif other != self.dir:
            raise Fail(f"hash collision: {self.run} belongs to the stack at {other}; use another DIR")

    # process records
    def proc(self, name: str) -> dict | None:
        return self.state.setdefault("procs", {}).get(name)

    def alive(self, name: str) -> bool:
        return rec_alive(self.proc(name))

    def spawn(
        self,
        name: str,
        argv: list[str],
        log: str,
        env: dict | None = None,
        redact: tuple[str, ...] = (),
        user: str | None = None,
    ) -> dict:
        os.makedirs(os.path.dirname(log), exist_ok=True)
        shown = list(argv)
        for i, arg in enumerate(shown[:-1]):
            if arg in redact:
                shown[i + 1] = "***"
        as_user = {"user": user, "group": user, "extra_groups": []} if user else {}
        try:
            proc = spawn(
                argv, log, env=env, cwd="/" if user else self.dir, mark="devstack", shown=shown, **as_user
            )
        except FileNotFoundError as exc:
            raise Fail(f"cannot start {name}: {argv[0]} not found (run scripts/install-deps)") from exc
        st = proc_stat(proc.pid)
        rec = {"pid": proc.pid, "start": st[2] if st else "", "log": log}
        self.state["procs"][name] = rec
        self.save()
        return rec

    def wait_for(self, name: str, what: str, ready, timeout: float) -> None:
        """Poll `ready()` until true; fail early if the process `name` dies."""
        rec = self.proc(name)
        deadline = time.monotonic() + timeout
        while True:
            if ready():
                return
            if rec and not rec_alive(rec):
                raise Fail(f"{what} exited during start-up; {see_log(rec['log'])}")
            if time.monotonic() > deadline:
                raise Fail(f"{what} not ready within {timeout:g} s; {see_log(rec['log']) if rec else ''}")
            time.sleep(0.2)

    def stop(
        self, name: str, what: str, timeout: float = STOP_TIMEOUT, group: bool = True, term: bool = True
    ) -> bool:
        rec = self.proc(name)
        if rec is None:
            return False
        was = rec_alive(rec)
        stop_record(rec, what, timeout, group, term)
        self.state["procs"].pop(name, None)
        self.save()
        return was


def running_with_postgres(directory: str) -> bool:
    """Does the stack at DIR run on PostgreSQL now (so `up DIR --replicas R` may leave out --postgres)?"""
    st = Stack(directory)
    try:
        st.load()
    except Fail:
        return False
    return bool(st.state.get("postgres")) and any(st.alive(n) for n in st.state.get("procs", {}))


def run_dir_owner(st: Stack) -> str | None:
    try:
        with open(os.path.join(st.run, "dir")) as fh:
            return fh.read().strip()
    except FileNotFoundError:
        return None
