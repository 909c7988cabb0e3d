"""The stack under test: bench/run's own (scripts/devstack up) or a given one, and the pids and
RSS of its gateway and agents.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile

from .common import DEVSTACK, BenchError, read_env, say


class OwnStack:
    """A devstack under a temporary directory, for the duration of the run."""

    def __init__(self, up_args: list[str] | None = None):
        self.dir = tempfile.mkdtemp(prefix="moorage-bench-")
        self.up_args = up_args or []  # more `devstack up` options (bench/fairness: --hosts 2)
        self.up_ok = False

    def up(self) -> dict[str, str]:
        say(f"bringing up a stack in {self.dir}")
        proc = subprocess.run(
            [DEVSTACK, "up", self.dir, *self.up_args], capture_output=True, text=True, timeout=180
        )
        if proc.returncode != 0:
            raise BenchError(
                f"scripts/devstack up {self.dir} failed ({proc.returncode}): "
                f"{proc.stderr.strip().splitlines()[-1:] or ''}"
            )
        self.up_ok = True
        return read_env(os.path.join(self.dir, "env"))

    def down(self) -> None:
        say(f"taking the stack in {self.dir} down")
        try:
            proc = subprocess.run(
                [DEVSTACK, "down", self.dir, "--purge"], capture_output=True, text=True, timeout=180
            )
        except subprocess.TimeoutExpired:
            say(f"scripts/devstack down {self.dir} timed out; run it again by hand")
            return
        if proc.returncode != 0:
            say(f"scripts/devstack down {self.dir} failed: {proc.stderr.strip()[-400:]}")
            return
        shutil.rmtree(self.dir, ignore_errors=True)


def gateway_config_path(env: dict[str, str]) -> str:
    words = shlex.split(env.get("MOORAGE_ADMIN", ""))
    if "--config" in words and words.index("--config") + 1 < len(words):
        return words[words.index("--config") + 1]
    if env.get("MOORAGE_STACK_DIR"):
        return os.path.join(env["MOORAGE_STACK_DIR"], "moorage.toml")
    raise BenchError("cannot tell the gateway's config path (no MOORAGE_ADMIN --config in the env file)")


def gateway_pids(config_path: str) -> list[int]:
    """The gunicorn master and workers: command lines naming moorage, serve and this config."""
    return sorted(
        pid
        for pid, args in _cmdlines()
        if "serve" in args and config_path in args and any("moorage" in a for a in args)
    )


def _cmdlines():
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                yield int(name), [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
        except OSError:
            continue


def agent_pids(docker_endpoint: str) -> list[int]:
    """The agent fronting that daemon: `moorage agent ... --docker ENDPOINT`."""
    return sorted(
        pid
        for pid, args in _cmdlines()
        if "agent" in args and docker_endpoint in args and any("moorage" in a for a in args)
    )


def every_agent_pid() -> list[int]:
    """Every agent on this machine (a stream may go through any host's)."""
    return sorted(pid for pid, args in _cmdlines() if "agent" in args and any("moorage" in a for a in args))


def rss_of(pids: list[int]) -> dict[int, int]:
    return {pid: kb for pid in pids if (kb := vm_rss_kb(pid)) is not None}


def vm_rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


# --- clients -------------------------------------------------------------------------------------


def dockerd_pid(docker_endpoint: str) -> int | None:
    """The dockerd serving that endpoint (`dockerd --host ENDPOINT ...`)."""
    for pid, args in _cmdlines():
        if args and os.path.basename(args[0]) == "dockerd" and docker_endpoint in args:
            return pid
    return None


CLK_TCK = os.sysconf("SC_CLK_TCK")


def parent_pid(pid: int) -> int:
    """The process's parent, from /proc/PID/stat (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def children(pid: int) -> list[int]:
    """The process's children (one level), from /proc."""
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and parent_pid(int(name)) == pid]


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (not their children), in seconds, from /proc/PID/stat."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), after pid and comm
    return total / CLK_TCK
