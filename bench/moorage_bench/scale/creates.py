"""bench/scale's creates: `docker run -d` one at a time, then 200 at once, through the replicas;
their scheduling time (the client's send to the create's arrival at the simulated daemon), and
the replicas' placement histogram over them. A part of measure.Phases.
"""

from __future__ import annotations

import json
import statistics
import threading
import time

from ..run.common import BenchError, say
from ..run.raw import Conn
from ..run.report import pct
from .common import SCHEDULING_P99_MS
from .daemon import IMAGE, SEQ_LABEL

API = "/v1.41"


class Creates:
    """Needs of its host class (measure.Phases): stack, layout, p, extra, add, headers,
    gateway_cpu, sample_rss."""

    # --- creates -----------------------------------------------------------------------------------

    def _batch(self, ks: list[int], threads: int, base: str) -> tuple[list, float, float]:
        """`docker run -d` (create, then start) of container k for each k in ks, `threads` at a
        time (all of them: every thread's create leaves together); (results, seconds, gateway CPU)."""
        creators = self.slots
        results: dict[int, tuple] = {}
        todo = list(reversed(ks))
        lock = threading.Lock()
        barrier = threading.Barrier(threads)

        def one(k: int, conn: Conn) -> None:
            body = json.dumps({"Image": IMAGE, "Cmd": ["sleep", "1d"], "Labels": {SEQ_LABEL: f"{base}-{k}"}})
            sent = time.time()
            created = conn.request(
                "POST",
                f"{API}/containers/create?name=scale-{base}-{k}",
                body.encode(),
                {"Content-Type": "application/json"},
            )
            done = time.time()
            started = (
                conn.request("POST", f"{API}/containers/scale-{base}-{k}/start")
                if created.status == 201
                else None
            )
            results[k] = (creators[k], sent, done, created.status, started and started.status, created.text())

        def worker(w: int) -> None:
            first = True
            while True:
                with lock:
                    if not todo:
                        return
                    k = todo.pop()
                conn = Conn(f"tcp://127.0.0.1:{self.stack.ports[k % 2]}", self.headers(creators[k]))
                try:
                    conn.connect()
                    if first:
                        barrier.wait(120)
                        first = False
                    one(k, conn)
                except Exception as exc:  # noqa: BLE001 - counted as an error
                    results[k] = (creators[k], 0.0, 0.0, 0, None, str(exc))
                finally:
                    conn.close()

        cpu0 = self.gateway_cpu()
        pool = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
        t0 = time.monotonic()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return [results.get(k) for k in ks], time.monotonic() - t0, self.gateway_cpu() - cpu0

    def creates(self) -> None:
        creators = self.layout.creators()
        if not creators:
            raise BenchError("no project to create in")
        # Create k goes to project slots[k]: the creators in turn, each as often as its
        # instances have room (each keeps 10 free: common.CAPACITY).
        room = {c: 0 for c in creators}
        for owner, inst in zip(self.layout.owners, self.layout.instances, strict=True):
            if owner in room:
                room[owner] += inst[3] - inst[2]
        self.slots = [c for turn in range(max(room.values())) for c in creators if turn < room[c]]
        count = min(self.p["creates"], len(self.slots) - self.p["one_by_one"])
        base = str(int(time.time()))
        say(f"scale: {self.p['one_by_one']} creates (and starts) one at a time")
        alone, _, _ = self._batch(list(range(self.p["one_by_one"])), 1, base)
        hist0 = self.placement_histogram()
        say(f"scale: {count} concurrent creates (and starts) over {min(count, len(creators))} projects")
        ks = list(range(self.p["one_by_one"], self.p["one_by_one"] + count))
        results, wall, cpu = self._batch(ks, count, base)
        self.sample_rss()
        sim = self.stack.sim_stats(since=time.time())
        arrived = sim["creates"]
        self.extra["sim_stats"] = sim["stats"]
        missing = {k: v for k, v in sim["stats"].items() if k.startswith("404 ")}
        if missing:
            say(f"scale: the simulated daemons answered 404 to {missing}")

        def scheduling(batch, first_k):
            return [
                (arrived[f"{base}-{first_k + i}"] - r[1]) * 1000
                for i, r in enumerate(batch)
                if r and f"{base}-{first_k + i}" in arrived
            ] or [float("nan")]

        sched, sched1 = scheduling(results, ks[0]), scheduling(alone, 0)
        done = [r for r in results if r and r[3] == 201]
        errors = [r for r in [*alone, *results] if not r or r[3] != 201 or r[4] != 204]
        latency = [(r[2] - r[1]) * 1000 for r in done] or [float("nan")]
        self.extra.update(create_ms=latency, scheduling_ms=sched, scheduling_alone_ms=sched1)
        self.extra["seconds"]["creates"] = round(wall, 1)
        note = "the client's send to the create's arrival at the simulated daemon"
        self.add(
            "creates",
            "run scheduling p50, one at a time",
            "ms",
            statistics.median(sched1),
            note=note,
        )
        self.add(
            "creates", "run scheduling p99, one at a time", "ms", pct(sched1, 99), ("max", SCHEDULING_P99_MS)
        )
        self.add(
            "creates",
            f"run scheduling p50, {count} concurrent creates",
            "ms",
            statistics.median(sched),
            note=note,
        )
        self.add(
            "creates",
            f"run scheduling p99, {count} concurrent creates",
            "ms",
            pct(sched, 99),
            ("max", SCHEDULING_P99_MS),
        )
        self.add("creates", "create latency p50, concurrent", "ms", statistics.median(latency))
        self.add("creates", "create latency p99, concurrent", "ms", pct(latency, 99))
        self.add(
            "creates",
            "create + start errors",
            "errors",
            len(errors),
            ("zero", 0),
            "; ".join(sorted({f"{r[3]} {r[5][:120]}" for r in errors if r}))[:300],
        )
        self.add(
            "creates",
            "gateway CPU per create + start",
            "ms CPU",
            cpu * 1000 / max(1, len(done)),
            note=f"{count} in {wall:.1f} s: {len(done) / wall:.0f} runs/s",
        )
        hist1 = self.placement_histogram()
        placed = {le: hist1.get(le, 0) - hist0.get(le, 0) for le in hist1}
        total = placed.get("+Inf", 0)
        if total:
            slower = 1 - placed.get("0.005", 0) / total
            bound = next(
                (
                    le
                    for le in sorted((k for k in placed if k != "+Inf"), key=float)
                    if placed[le] >= 0.99 * total
                ),
                "+Inf",
            )
            self.add(
                "creates",
                "placement decisions over 5 ms (replicas' histogram)",
                "%",
                slower * 100,
                ("max", 1.0),
                f"{total:.0f} decisions under the creates; their p99 <= {bound} s (histogram bucket)",
            )
        self.cleanup = [
            (r[0], f"scale-{base}-{k}")
            for k, r in zip([*range(len(alone)), *ks], [*alone, *results], strict=True)
            if r and r[3] == 201
        ]

    def remove_created(self) -> None:
        conns = {}
        try:
            for k, (tenant, name) in enumerate(self.cleanup):
                key = (tenant, k % 2)
                if key not in conns:
                    conns[key] = Conn(f"tcp://127.0.0.1:{self.stack.ports[k % 2]}", self.headers(tenant))
                conns[key].request("DELETE", f"{API}/containers/{name}?force=1")
        finally:
            for c in conns.values():
                c.close()

    def placement_histogram(self) -> dict[str, float]:
        """moorage_placement_duration_seconds_bucket{outcome="placed"} by `le`, both replicas summed."""
        out: dict[str, float] = {}
        for port in self.stack.metrics_ports:
            conn = Conn(f"tcp://127.0.0.1:{port}")
            try:
                text = conn.request("GET", "/metrics").body.decode()
            finally:
                conn.close()
            for line in text.splitlines():
                if (
                    line.startswith("moorage_placement_duration_seconds_bucket")
                    and 'outcome="placed"' in line
                ):
                    le = line.split('le="', 1)[1].split('"', 1)[0]
                    out[le] = out.get(le, 0) + float(line.rsplit(" ", 1)[1])
        return out
