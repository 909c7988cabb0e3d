"""Sections measured per request: latency of GETs, container lifecycle, concurrency."""

from __future__ import annotations

import statistics
import threading
import time

import requests

from .client import Side, create, pct, remove, row, start, wait
from .common import ADDED_P50_MS, LIFECYCLE_RATIO, REQUEST_TIMEOUT, SIDES, BenchError, say


class RequestSections:
    """Latency, lifecycle and concurrency: request/response figures (a Bench mixin)."""

    # -- latency of simple GETs ------------------------------------------------------------------
    def latency(self) -> None:
        n, warm = self.p["latency_n"], self.p["latency_warm"]
        target_cid = self.keep(create(self.sides["moorage"], self.sessions["moorage"], ["sleep", "3600"]))
        start(self.sides["moorage"], self.sessions["moorage"], target_cid)
        cases = [
            ("GET /_ping", "/_ping"),
            ("GET /version", "/version"),
            ("GET /containers/json", "/containers/json"),
            ("container inspect", f"/containers/{target_cid}/json"),
        ]
        for label, path in cases:
            urls = {name: side.url(path) for name, side in self.sides.items()}
            samples: dict[str, list[float]] = {"direct": [], "moorage": []}
            for i in range(warm + n):
                for name in SIDES if i % 2 == 0 else SIDES[::-1]:
                    s = self.sessions[name]
                    t0 = time.perf_counter()
                    r = s.get(urls[name], timeout=REQUEST_TIMEOUT)
                    body = r.content
                    dt = time.perf_counter() - t0
                    if r.status_code != 200:
                        raise BenchError(f"{label} via {name} answered {r.status_code}: {body[:200]!r}")
                    if i >= warm:
                        samples[name].append(dt * 1000)
            d50, m50 = statistics.median(samples["direct"]), statistics.median(samples["moorage"])
            added = m50 - d50
            self.rows.append(
                row(
                    "latency",
                    f"{label} p50",
                    "ms",
                    d50,
                    m50,
                    target=f"+<={ADDED_P50_MS:g} ms",
                    note=f"+{added:.2f} ms",
                    result="PASS" if added <= ADDED_P50_MS else "MISS",
                )
            )
            self.rows.append(
                row("latency", f"{label} p99", "ms", pct(samples["direct"], 99), pct(samples["moorage"], 99))
            )
            say(f"latency {label}: p50 direct {d50:.2f} ms, moorage {m50:.2f} ms")

    # -- create/start/wait/remove ------------------------------------------------------------------
    def lifecycle(self) -> None:
        n, warm = self.p["lifecycle_n"], self.p["lifecycle_warm"]
        steps = ("create", "start", "wait", "remove")
        totals: dict[str, list[float]] = {"direct": [], "moorage": []}
        per_step: dict[str, dict[str, list[float]]] = {name: {st: [] for st in steps} for name in SIDES}
        for i in range(warm + n):
            for name in SIDES if i % 2 == 0 else SIDES[::-1]:
                side, s = self.sides[name], self.sessions[name]
                marks = [time.perf_counter()]
                cid = create(side, s, ["true"])
                marks.append(time.perf_counter())
                try:
                    start(side, s, cid)
                    marks.append(time.perf_counter())
                    code = wait(side, s, cid)
                    marks.append(time.perf_counter())
                    if code != 0:
                        raise BenchError(f"busybox true exited {code} via {name}")
                finally:
                    remove(side, s, cid, force=len(marks) < 4)
                marks.append(time.perf_counter())
                if i >= warm:
                    totals[name].append((marks[-1] - marks[0]) * 1000)
                    for k, st in enumerate(steps):
                        per_step[name][st].append((marks[k + 1] - marks[k]) * 1000)
        for stat, fn in (("p50", statistics.median), ("mean", statistics.fmean)):
            d, m = fn(totals["direct"]), fn(totals["moorage"])
            self.rows.append(
                row(
                    "lifecycle",
                    f"lifecycle busybox true {stat}",
                    "ms",
                    d,
                    m,
                    target=f"<={LIFECYCLE_RATIO:.2f}x",
                    result="PASS" if m <= LIFECYCLE_RATIO * d else "MISS",
                )
            )
        self.extra["lifecycle_steps_p50_ms"] = {
            name: {st: round(statistics.median(v), 2) for st, v in per_step[name].items()} for name in SIDES
        }
        for st in steps:
            self.rows.append(
                row(
                    "lifecycle",
                    f"  step {st} p50",
                    "ms",
                    statistics.median(per_step["direct"][st]),
                    statistics.median(per_step["moorage"][st]),
                )
            )
        say(
            f"lifecycle p50: direct {statistics.median(totals['direct']):.0f} ms, "
            f"moorage {statistics.median(totals['moorage']):.0f} ms"
        )

    # -- many clients at once ---------------------------------------------------------------------
    def concurrency(self) -> None:
        clients, duration = self.p["clients"], self.p["duration"]
        figures = {}
        for name in SIDES:
            figures[name] = self._hammer(self.sides[name], "/containers/json", clients, duration)
            f = figures[name]
            say(f"{clients} clients via {name}: {f['rps']:.0f} req/s, {f['errors']} errors")
        d, m = figures["direct"], figures["moorage"]
        self.rows.append(
            row(
                "concurrency",
                f"{clients} clients GET /containers/json",
                "req/s",
                d["rps"],
                m["rps"],
                better="higher",
                note=f"{duration:g} s each",
            )
        )
        self.rows.append(row("concurrency", f"{clients} clients p50", "ms", d["p50"], m["p50"]))
        self.rows.append(row("concurrency", f"{clients} clients p99", "ms", d["p99"], m["p99"]))
        self.rows.append(
            row(
                "concurrency",
                f"{clients} clients errors",
                "count",
                d["errors"],
                m["errors"],
                target="0 errors",
                result="PASS" if m["errors"] == 0 else "MISS",
                note="; ".join(m["samples"])[:200],
            )
        )
        self.extra["concurrency"] = figures

    def _hammer(self, side: Side, path: str, clients: int, duration: float) -> dict:
        url = side.url(path)
        barrier = threading.Barrier(clients + 1)
        lock = threading.Lock()
        out = {"ok": 0, "errors": 0, "lat": [], "samples": []}
        deadline = [0.0]

        def client() -> None:
            s = side.session()
            ok, errors, lat, samples = 0, 0, [], []
            try:
                barrier.wait(timeout=60)
            except threading.BrokenBarrierError:
                return
            while True:
                t0 = time.perf_counter()
                if t0 >= deadline[0]:
                    break
                try:
                    r = s.get(url, timeout=30)
                    _ = r.content
                    if r.status_code == 200:
                        ok += 1
                        lat.append((time.perf_counter() - t0) * 1000)
                    else:
                        errors += 1
                        if len(samples) < 3:
                            samples.append(f"HTTP {r.status_code}: {r.text[:80].strip()}")
                except requests.RequestException as exc:
                    errors += 1
                    if len(samples) < 3:
                        samples.append(f"{type(exc).__name__}: {str(exc)[:80]}")
            s.close()
            with lock:
                out["ok"] += ok
                out["errors"] += errors
                out["lat"].extend(lat)
                out["samples"].extend(samples[: max(0, 5 - len(out["samples"]))])

        threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
        for t in threads:
            t.start()
        deadline[0] = time.perf_counter() + duration + 0.05
        t0 = time.perf_counter()
        barrier.wait(timeout=60)
        for t in threads:
            t.join(timeout=duration + 60)
        elapsed = time.perf_counter() - t0
        lat = out["lat"] or [float("nan")]
        return {
            "rps": out["ok"] / elapsed,
            "ok": out["ok"],
            "errors": out["errors"],
            "seconds": round(elapsed, 2),
            "p50": statistics.median(lat),
            "p99": pct(lat, 99),
            "samples": out["samples"],
        }

    # -- streams ------------------------------------------------------------------------------------
