"""Sections measured per request: latency of simple GETs, the container lifecycle, and the CPU
each proxied request costs the gateway, the agent and dockerd.
"""

from __future__ import annotations

import secrets
import time

from .common import CPU_PER_PS_MS, LIFECYCLE_RATIO, P50_ADDED_MS, P99_ADDED_MS, SIDES, BenchError, say
from .report import median, pct, row
from .stack import agent_pids, cpu_seconds, dockerd_pid, gateway_pids

LIFECYCLE_STEPS = ("create", "start", "wait", "rm")


class RequestSections:
    """Latency, lifecycle and CPU per request (a Bench mixin)."""

    # -- latency of simple GETs ------------------------------------------------------------------
    def latency(self) -> None:
        n, warm, reps = self.p["latency_n"], self.p["latency_warm"], self.p["repeat"]
        target = self.create("moorage", ["sleep", "3600"])
        self.created.append(target)
        self.start("moorage", target)
        # ps and inspect twice: the same request again and again (the gateway replays it while
        # nothing it was made of changed, gateway/replay.py), and each request unlike the last
        # (an X-Request-Id of its own; dockerd ignores it): the gateway's whole path.
        cases = [
            ("GET /_ping", "/_ping", False),
            ("GET /version", "/version", False),
            ("GET /containers/json (ps)", "/containers/json", False),
            ("GET /containers/ID/json (inspect)", f"/containers/{target}/json", False),
            ("GET /containers/json (ps), each request new", "/containers/json", True),
            ("GET /containers/ID/json (inspect), each request new", f"/containers/{target}/json", True),
        ]
        client_cost: dict[str, list[float]] = {name: [] for name in SIDES}
        for label, path, unique in cases:
            p50s: dict[str, list[float]] = {name: [] for name in SIDES}
            p99s: dict[str, list[float]] = {name: [] for name in SIDES}
            for _ in range(reps):
                lat: dict[str, list[float]] = {name: [] for name in SIDES}
                for i in range(warm + n):
                    for name in self.order(i):
                        conn = self.conns[name]
                        c0, t0 = time.thread_time(), time.perf_counter()
                        headers = {"X-Request-Id": f"bench-{secrets.token_hex(8)}"} if unique else None
                        r = conn.request("GET", path, headers=headers)
                        t1, c1 = time.perf_counter(), time.thread_time()
                        if r.status != 200:
                            raise BenchError(f"{label} via {name} answered {r.status}: {r.text()}")
                        if i >= warm:
                            lat[name].append((t1 - t0) * 1000)
                            client_cost[name].append((c1 - c0) * 1000)
                for name in SIDES:
                    p50s[name].append(median(lat[name]))
                    p99s[name].append(pct(lat[name], 99))
            d50, m50 = median(p50s["direct"]), median(p50s["moorage"])
            d99, m99 = median(p99s["direct"]), median(p99s["moorage"])
            runs = f"median of {reps} x {n}"
            self.rows.append(
                row(
                    "latency",
                    f"{label} p50",
                    "ms",
                    d50,
                    m50,
                    ("added", P50_ADDED_MS),
                    f"{m50 - d50:+.2f} ms; {runs}",
                    p50s,
                )
            )
            self.rows.append(
                row(
                    "latency",
                    f"{label} p99",
                    "ms",
                    d99,
                    m99,
                    ("added", P99_ADDED_MS),
                    f"{m99 - d99:+.2f} ms",
                    p99s,
                )
            )
            say(f"{label}: p50 dockerd {d50:.3f} ms, moorage {m50:.3f} ms; p99 {d99:.2f} / {m99:.2f} ms")
        # The client's own cost, so that a reader can subtract it: CPU of this thread per request.
        self.rows.append(
            row(
                "latency",
                "bench client CPU per request",
                "ms CPU",
                median(client_cost["direct"]),
                median(client_cost["moorage"]),
                note="the raw keep-alive client (bench/moorage_bench/run/raw.py), median",
            )
        )
        self.drop(target)

    # -- create/start/wait/rm --------------------------------------------------------------------
    def lifecycle(self) -> None:
        n, reps = self.p["lifecycle_n"], self.p["repeat"]
        stats: dict[str, dict[str, list[float]]] = {
            name: {k: [] for k in ("p50", "mean", *LIFECYCLE_STEPS)} for name in SIDES
        }
        for name in SIDES:  # warm-up: the first container on a side pays for the network's setup
            self._one_lifecycle(name)
        for _ in range(reps):
            totals: dict[str, list[float]] = {name: [] for name in SIDES}
            steps: dict[str, dict[str, list[float]]] = {
                name: {s: [] for s in LIFECYCLE_STEPS} for name in SIDES
            }
            for i in range(n):
                for name in self.order(i):
                    marks = self._one_lifecycle(name)
                    totals[name].append((marks[-1] - marks[0]) * 1000)
                    for k, st in enumerate(LIFECYCLE_STEPS):
                        steps[name][st].append((marks[k + 1] - marks[k]) * 1000)
            for name in SIDES:
                stats[name]["p50"].append(median(totals[name]))
                stats[name]["mean"].append(sum(totals[name]) / len(totals[name]))
                for st in LIFECYCLE_STEPS:
                    stats[name][st].append(median(steps[name][st]))
        for stat in ("p50", "mean"):
            d, m = median(stats["direct"][stat]), median(stats["moorage"][stat])
            self.rows.append(
                row(
                    "lifecycle",
                    f"lifecycle (busybox true) {stat}",
                    "ms",
                    d,
                    m,
                    ("max_ratio", LIFECYCLE_RATIO),
                    f"median of {reps} x {n}" if stat == "p50" else "",
                    {name: stats[name][stat] for name in SIDES},
                )
            )
        for st in LIFECYCLE_STEPS:
            d, m = median(stats["direct"][st]), median(stats["moorage"][st])
            self.rows.append(row("lifecycle", f"  step {st} p50", "ms", d, m, note=f"{m - d:+.1f} ms"))
        say(
            f"lifecycle p50: dockerd {median(stats['direct']['p50']):.0f} ms, "
            f"moorage {median(stats['moorage']['p50']):.0f} ms"
        )

    def _one_lifecycle(self, name: str) -> list[float]:
        marks = [time.perf_counter()]
        cid = self.create(name, ["true"])
        marks.append(time.perf_counter())
        try:
            self.start(name, cid)
            marks.append(time.perf_counter())
            code = self.wait(name, cid)
            marks.append(time.perf_counter())
            if code != 0:
                raise BenchError(f"busybox true exited {code} via {name}")
        finally:
            self.remove(name, cid, force=len(marks) < 4)
        marks.append(time.perf_counter())
        return marks

    # -- CPU per proxied request ------------------------------------------------------------------
    def cpu(self) -> None:
        n, reps = self.p["cpu_n"], self.p["repeat"]
        gw = gateway_pids(self.config_path)
        agents = agent_pids(self.env["MOORAGE_DIRECT_HOST"])
        daemon = dockerd_pid(self.env["MOORAGE_DIRECT_HOST"])
        if not gw or not agents or daemon is None:
            raise BenchError(
                f"cannot find the stack's processes (gateway {gw}, agent {agents}, dockerd {daemon}): "
                "the cpu section reads /proc, so run the bench on the stack's machine"
            )
        groups = {"gateway": gw, "agent": agents, "dockerd": [daemon]}
        # The same ps again and again (replayed, gateway/replay.py), then each one unlike the last.
        for unique in (False, True):
            self._cpu(n, reps, groups, unique)

    def _cpu(self, n: int, reps: int, groups: dict[str, list[int]], unique: bool) -> None:
        per: dict[str, dict[str, list[float]]] = {
            name: {g: [] for g in (*groups, "client")} for name in SIDES
        }
        for r in range(reps):
            for name in self.order(r):
                conn = self.conns[name]
                before = {g: cpu_seconds(p) for g, p in groups.items()}
                c0 = time.thread_time()
                for _ in range(n):
                    headers = {"X-Request-Id": f"bench-{secrets.token_hex(8)}"} if unique else None
                    resp = conn.request("GET", "/containers/json", headers=headers)
                    if resp.status != 200:
                        raise BenchError(f"ps via {name} answered {resp.status}: {resp.text()}")
                c1 = time.thread_time()
                time.sleep(0.05)  # let the last request's accounting land in /proc
                after = {g: cpu_seconds(p) for g, p in groups.items()}
                for g in groups:
                    per[name][g].append((after[g] - before[g]) * 1000 / n)
                per[name]["client"].append((c1 - c0) * 1000 / n)
        med = {name: {g: median(v) for g, v in per[name].items()} for name in SIDES}
        d, m = med["direct"], med["moorage"]
        note = f"/proc utime+stime over {n} ps, median of {reps}"
        ps = "ps, each request new" if unique else "ps"
        self.rows += [
            row(
                "cpu",
                f"CPU per {ps}: gateway + agent",
                "ms CPU",
                None,
                m["gateway"] + m["agent"],
                ("max", CPU_PER_PS_MS),
                note,
            ),
            row("cpu", "  gateway (gunicorn master + workers)", "ms CPU", d["gateway"], m["gateway"]),
            row("cpu", "  agent", "ms CPU", d["agent"], m["agent"]),
            row("cpu", "  dockerd", "ms CPU", d["dockerd"], m["dockerd"]),
            row(
                "cpu",
                f"CPU per {ps}: all servers",
                "ms CPU",
                d["dockerd"] + d["gateway"] + d["agent"],
                m["dockerd"] + m["gateway"] + m["agent"],
                note="gateway + agent + dockerd",
            ),
            row(
                "cpu",
                f"CPU per {ps}: bench client",
                "ms CPU",
                d["client"],
                m["client"],
                note="this process's thread",
            ),
        ]
        self.extra["cpu_per_ps_ms" + ("_unique" if unique else "")] = per
        say(
            f"CPU per {ps}: gateway {m['gateway']:.3f} ms, agent {m['agent']:.3f} ms, "
            f"dockerd {m['dockerd']:.3f} (direct {d['dockerd']:.3f}) ms"
        )
