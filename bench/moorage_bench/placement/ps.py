"""The `ps` section: `docker ps -a` of one project over many instances, gateway against daemon."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

from ..run.client import Side, expect, pct, row
from ..run.common import BENCH_LABEL, IMAGE, REQUEST_TIMEOUT, SIDES, BenchError, read_env, say
from ..run.stack import OwnStack, _cmdlines, gateway_config_path
from .common import DEVSTACK, PS_RATIO

# --- docker ps over many instances ---------------------------------------------------------------


class PsStack(OwnStack):
    """A devstack of many hosts, brought up with this interpreter (so its gateway and agents
    run this checkout with the same dependencies)."""

    def __init__(self, hosts: int):
        super().__init__()
        self.hosts = hosts

    def up(self) -> dict[str, str]:
        say(f"bringing up a {self.hosts}-host stack in {self.dir}")
        proc = subprocess.run(
            [sys.executable, DEVSTACK, "up", self.dir, "--hosts", str(self.hosts)],
            capture_output=True,
            text=True,
            timeout=600,
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
                [sys.executable, DEVSTACK, "down", self.dir, "--purge"],
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired:
            say(f"scripts/devstack down {self.dir} timed out; run it again by hand")
            return
        if proc.returncode != 0:
            say(f"scripts/devstack down {self.dir} failed: {proc.stderr.strip()[-400:]}")
            return
        shutil.rmtree(self.dir, ignore_errors=True)


def stack_pids(run_dir: str, config_path: str | None) -> dict[str, list[int]]:
    """A devstack's processes by role: the gateway's (master and workers), the agents', the
    dockerds' (whose command lines name the stack's /run/moorage/HASH directory)."""
    out: dict[str, list[int]] = {"gateway": [], "agents": [], "dockerd": []}
    for pid, args in _cmdlines():
        line = " ".join(args)
        if config_path and "serve" in args and config_path in line and "moorage" in line:
            out["gateway"].append(pid)
        elif "agent" in args and "moorage" in line and run_dir in line:
            out["agents"].append(pid)
        elif args and os.path.basename(args[0]) == "dockerd" and run_dir in line:
            out["dockerd"].append(pid)
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes so far."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def run_dir_of(endpoint: str) -> str:
    """/run/moorage/HASH/ of a devstack host's daemon socket (unix:///run/moorage/HASH/hI/docker.sock)."""
    path = endpoint[len("unix://") :] if endpoint.startswith("unix://") else ""
    return os.path.dirname(os.path.dirname(path)) + "/" if path else ""


class Ps:
    DIRECT_LABEL = "org.openstack.moorage.bench.direct"

    def __init__(self, env: dict[str, str], profile: dict, direct_endpoint: str, shared_direct: bool):
        self.env = env
        self.p = profile
        self.rows: list[dict] = []
        self.extra: dict = {}
        self.shared_direct = shared_direct
        self.instances = env.get("MOORAGE_INSTANCES", "").split()
        hosts = self.p["ps_hosts"]
        if len(self.instances) < hosts:
            raise BenchError(
                f"the stack has {len(self.instances)} instance(s); ps needs {hosts} "
                f"(scripts/devstack up DIR --hosts {hosts})"
            )
        self.instances = self.instances[:hosts]
        with open(os.path.join(env["DOCKER_CONFIG"], "config.json")) as fh:
            headers = json.load(fh).get("HttpHeaders") or {}
        probe = Side("direct", direct_endpoint, {}, "1.41")
        with probe.session() as s:
            api = expect(s.get(probe.base + "/_ping", timeout=10), 200).headers.get("Api-Version", "1.41")
        self.sides = {
            "direct": Side("direct", direct_endpoint, {}, api),
            "moorage": Side("moorage", env["DOCKER_HOST"], headers, api),
        }
        self.created: dict[str, list[str]] = {"direct": [], "moorage": []}
        # Whose CPU each side costs: the gateway, its agents and the stack's daemons; the one
        # direct daemon (when it is another stack's, the two sets are disjoint).
        config_path = gateway_config_path(env)
        stack = stack_pids(run_dir_of(env["MOORAGE_DIRECT_HOST"]), config_path)
        direct = stack_pids(run_dir_of(direct_endpoint), None)["dockerd"]
        if not shared_direct:
            stack["dockerd"] = [pid for pid in stack["dockerd"] if pid not in direct]
        self.pids = {"moorage": stack, "direct": {"dockerd": direct}}

    def _create_many(self, side_name: str, bodies: list[dict]) -> float:
        """Create every body (never started), over a few keep-alive connections; seconds taken."""
        side = self.sides[side_name]
        lock = threading.Lock()
        todo = list(reversed(bodies))
        errors: list[str] = []

        def worker():
            with side.session() as s:
                while True:
                    with lock:
                        if not todo or errors:
                            return
                        body = todo.pop()
                    try:
                        r = s.post(side.url("/containers/create"), json=body, timeout=REQUEST_TIMEOUT)
                        if r.status_code != 201:
                            raise BenchError(
                                f"create via {side_name} answered {r.status_code}: {r.text[:200]}"
                            )
                        with lock:
                            self.created[side_name].append(r.json()["Id"])
                    except Exception as exc:  # noqa: BLE001 - reported below, the run stops
                        with lock:
                            errors.append(str(exc))

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(self.p["create_threads"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise BenchError(f"creating containers via {side_name}: {errors[0]}")
        return time.perf_counter() - t0

    def _body(self, extra_labels: dict) -> dict:
        return {"Image": IMAGE, "Cmd": ["true"], "Labels": {BENCH_LABEL: "1", **extra_labels}}

    def run(self) -> None:
        per, hosts = self.p["ps_per_host"], self.p["ps_hosts"]
        total = per * hosts
        say(f"ps: creating {total} containers through the gateway, {per} pinned to each of {hosts} instances")
        bodies = [
            self._body({"org.openstack.nova.instance": self.instances[i % hosts]}) for i in range(total)
        ]
        secs = self._create_many("moorage", bodies)
        say(f"ps: {total} created via the gateway in {secs:.0f} s")
        self.extra["create_seconds_moorage"] = round(secs, 1)
        say(f"ps: creating {total} containers directly on {self.sides['direct'].endpoint}")
        secs = self._create_many("direct", [self._body({self.DIRECT_LABEL: "1"}) for _ in range(total)])
        say(f"ps: {total} created directly in {secs:.0f} s")
        self.extra["create_seconds_direct"] = round(secs, 1)
        # The direct side filters on its label: on a daemon of its own it matches everything
        # (the filter costs what the gateway's project filter costs each instance).
        queries = {
            "direct": {"all": "1", "filters": json.dumps({"label": [self.DIRECT_LABEL]})},
            "moorage": {"all": "1"},
        }
        sessions = {name: side.session() for name, side in self.sides.items()}
        samples: dict[str, list[float]] = {"direct": [], "moorage": []}
        cpu = {name: {role: 0.0 for role in self.pids[name]} for name in SIDES}
        sizes = {}
        n, warm = self.p["ps_n"], self.p["ps_warm"]
        for i in range(warm + n):
            for name in SIDES if i % 2 == 0 else SIDES[::-1]:
                side, s = self.sides[name], sessions[name]
                before = {role: cpu_seconds(pids) for role, pids in self.pids[name].items()}
                t0 = time.perf_counter()
                r = s.get(side.url("/containers/json"), params=queries[name], timeout=REQUEST_TIMEOUT)
                body = r.content
                dt = (time.perf_counter() - t0) * 1000
                if i >= warm:
                    for role, pids in self.pids[name].items():
                        cpu[name][role] += cpu_seconds(pids) - before[role]
                if r.status_code != 200:
                    raise BenchError(f"ps via {name} answered {r.status_code}: {body[:200]!r}")
                listed = json.loads(body)
                if len(listed) != total:
                    raise BenchError(f"ps via {name} listed {len(listed)} containers, expected {total}")
                sizes[name] = len(body)
                if i >= warm:
                    samples[name].append(dt)
        d50, m50 = statistics.median(samples["direct"]), statistics.median(samples["moorage"])
        where = "host 1 of the same stack (shared)" if self.shared_direct else "a daemon of its own"
        self.rows.append(
            row(
                "ps",
                f"docker ps -a, {total} containers p50",
                "ms",
                d50,
                m50,
                target=f"<={PS_RATIO:g}x",
                result="PASS" if m50 <= PS_RATIO * d50 else "MISS",
                note=f"moorage: {hosts} instances x {per}; direct: {where}",
            )
        )
        self.rows.append(
            row(
                "ps",
                f"docker ps -a, {total} containers p99",
                "ms",
                pct(samples["direct"], 99),
                pct(samples["moorage"], 99),
                note=f"{n} requests each, interleaved",
            )
        )
        per_req = {name: {role: v / n * 1000 for role, v in cpu[name].items()} for name in SIDES}
        m_cpu, d_cpu = sum(per_req["moorage"].values()), sum(per_req["direct"].values())
        parts = ", ".join(f"{role} {v:.0f}" for role, v in per_req["moorage"].items())
        self.rows.append(
            row(
                "ps",
                "CPU per docker ps",
                "ms",
                d_cpu,
                m_cpu,
                note=f"moorage: {parts} (heartbeats included); direct: its dockerd",
            )
        )
        self.rows.append(row("ps", "response body", "KB", sizes["direct"] / 1000, sizes["moorage"] / 1000))
        self.extra["ps_ms"] = samples
        self.extra["ps_cpu_ms_per_request"] = per_req
        say(
            f"ps: p50 direct {d50:.0f} ms, moorage {m50:.0f} ms ({m50 / d50:.2f}x); "
            f"CPU per request direct {d_cpu:.0f} ms, moorage {m_cpu:.0f} ms ({parts})"
        )

    def cleanup(self) -> None:
        for side_name, ids in self.created.items():
            side = self.sides[side_name]
            todo = list(ids)
            lock = threading.Lock()

            def worker(side=side, todo=todo, lock=lock, side_name=side_name):
                with side.session() as s:
                    while True:
                        with lock:
                            if not todo:
                                return
                            cid = todo.pop()
                        try:
                            s.delete(
                                side.url(f"/containers/{cid}"), params={"force": "1", "v": "1"}, timeout=60
                            )
                        except Exception as exc:  # noqa: BLE001 - best effort
                            say(f"could not remove {cid[:12]} via {side_name}: {exc}")

            if todo:
                say(f"ps: removing {len(todo)} containers via {side_name}")
            threads = [threading.Thread(target=worker) for _ in range(self.p["create_threads"])]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ids.clear()
