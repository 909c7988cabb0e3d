"""bench/scale's phases on a running simulated stack: seed, reads, heartbeats, creates, placement.

Every figure is a row made by bench/run's report.row (value in its `moorage` field, judged
against its target by report.judge); run.raw's keep-alive client speaks to the replicas, one
request after another alternating between them.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time

from ..run.common import BenchError, say
from ..run.raw import Conn
from ..run.report import pct, row
from ..run.stack import cpu_seconds
from .common import (
    INFO_P99_MS,
    MERGED_PS_RATIO,
    PLACEMENT_P99_MS,
    SCHEDULING_P99_MS,
    WIDE_HOSTS,
    Layout,
)
from .daemon import IMAGE, SEQ_LABEL
from .stack import ScaleStack

API = "/v1.41"


def _store(stack: ScaleStack):
    from gateway import store

    if store.database.obj is None:
        store.init(stack.db_url, migrate=False)
    return store


def _db(stack: ScaleStack):
    return _store(stack).database.obj


def row_counts(stack: ScaleStack) -> dict[str, int]:
    db = _db(stack)
    tables = [
        r[0] for r in db.execute_sql("SELECT relname FROM pg_stat_user_tables ORDER BY relname").fetchall()
    ]
    return {t: db.execute_sql(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}


def write_stats(stack: ScaleStack) -> dict:
    """Rows inserted, updated and deleted so far (every table), commits, and the database's size."""
    db = _db(stack)
    db.execute_sql("SELECT pg_stat_clear_snapshot()")
    ins, upd, dele = db.execute_sql(
        "SELECT sum(n_tup_ins), sum(n_tup_upd), sum(n_tup_del) FROM pg_stat_user_tables"
    ).fetchone()
    commits = db.execute_sql(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()[0]
    size = db.execute_sql("SELECT pg_database_size(current_database())").fetchone()[0]
    return {
        "ins": int(ins or 0),
        "upd": int(upd or 0),
        "del": int(dele or 0),
        "commits": int(commits),
        "bytes": size,
    }


class Phases:
    def __init__(self, stack: ScaleStack, layout: Layout, profile: dict):
        self.stack = stack
        self.layout = layout
        self.p = profile
        self.rows: list[dict] = []
        self.extra: dict = {"seconds": {}, "rss_mb": {}, "cpu_s": {}}
        self.peak = [0.0, 0.0]
        self.baseline: dict[str, int] = {}
        self.slots: list[str] = []

    def add(self, section: str, name: str, unit: str, value, target=None, note: str = "") -> None:
        self.rows.append(row(section, name, unit, None, value, target=target, note=note))

    def sample_rss(self) -> None:
        for i in range(2):
            self.peak[i] = max(self.peak[i], self.stack.rss_mb(self.stack.replica_pids(i)))

    def gateway_cpu(self) -> float:
        return sum(cpu_seconds(self.stack.replica_pids(i)) for i in range(2))

    def headers(self, tenant: str) -> dict[str, str]:
        token, project = self.stack.tokens[tenant]
        return {"X-Auth-Token": token, "X-Auth-Project-Id": project}

    # -- registration and seeding ------------------------------------------------------------------

    def seed(self) -> None:
        n = self.layout.n
        t0 = time.monotonic()
        deadline = t0 + 120 + n / 5
        while True:
            sim = self.stack.sim_stats(since=time.time())
            stats = sim["stats"]
            if stats.get("registered", 0) >= n:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"only {stats.get('registered', 0)} of {n} instances registered: {stats}")
            time.sleep(1)
        # From the simulators' start to the last registration's answer.
        registered = max(0.001, sim["span"][1] - sim["span"][0])
        say(f"scale: {n} instances registered in {registered:.1f} s ({n / registered:.0f}/s)")
        self.extra["seconds"]["register"] = round(registered, 1)
        # Dedicated tenancy: each instance is its project's, as placement's claim would have made
        # it; set in the store (one statement per project), then the agents' next heartbeats
        # report their containers, which the gateway's reconcile adopts into its map.
        store = _store(self.stack)
        now = store.utcnow()
        with store.database.obj.atomic():
            for project, uuids in self.layout.by_project().items():
                store.Instance.update(project=project, claimed_at=now).where(
                    store.Instance.uuid.in_(uuids)
                ).execute()
        t1 = time.monotonic()
        want = self.layout.containers
        deadline = t1 + 4 * self.stack.interval + 120 + want / 200
        while (have := store.Container.select().count()) < want:
            if time.monotonic() > deadline:
                raise BenchError(f"the heartbeats adopted {have} of {want} containers in time")
            time.sleep(1)
        adopted = time.monotonic() - t1
        say(f"scale: {want} containers adopted from the heartbeats in {adopted:.1f} s")
        self.extra["seconds"]["adopt"] = round(adopted, 1)
        self.sample_rss()

    # -- reads -------------------------------------------------------------------------------------

    def reads(self) -> None:
        n, warm = self.p["reads"], self.p["warm"]
        wide_total = self.layout.instances[WIDE_HOSTS][2]  # the single instance holds as many
        kinds = {
            "info": ("wide", "/info", None),
            "ps wide": ("wide", "/containers/json", wide_total),
            "ps single": ("single", "/containers/json", wide_total),
            "ps p1": ("p1", "/containers/json", None),
        }
        conns = {
            (k, r): Conn(f"tcp://127.0.0.1:{self.stack.ports[r]}", self.headers(t))
            for k, (t, _, _) in kinds.items()
            for r in range(2)
        }
        samples: dict[str, list[float]] = {k: [] for k in kinds}
        order = list(kinds)
        cpu0 = self.gateway_cpu()
        t0 = time.monotonic()
        for i in range(warm + n):
            if i == warm:
                # After the warm-up: what a first read caches in the store (the image's presence
                # on an instance) is there; from here on, nothing may grow.
                self.baseline = row_counts(self.stack)
            for k in order if i % 2 == 0 else order[::-1]:
                _, path, expect = kinds[k]
                conn = conns[(k, i % 2)]
                start = time.perf_counter()
                resp = conn.request("GET", API + path)
                ms = (time.perf_counter() - start) * 1000
                if resp.status != 200:
                    raise BenchError(f"{k} via replica {i % 2 + 1} answered {resp.status}: {resp.text()}")
                if expect is not None and len(json.loads(resp.body)) != expect:
                    raise BenchError(f"{k} listed {len(json.loads(resp.body))} containers, expected {expect}")
                if i >= warm:
                    samples[k].append(ms)
        cpu = self.gateway_cpu() - cpu0
        for c in conns.values():
            c.close()
        self.extra["seconds"]["reads"] = round(time.monotonic() - t0, 1)
        self.extra["reads_ms"] = samples
        self.sample_rss()
        s = samples
        note = f"{n} each, replicas alternating"
        self.add(
            "reads",
            "docker info p50 (project over 20 instances)",
            "ms",
            statistics.median(s["info"]),
            note=note,
        )
        self.add("reads", "docker info p99", "ms", pct(s["info"], 99), ("max", INFO_P99_MS), note)
        for k, label in (("ps wide", f"over {WIDE_HOSTS} instances"), ("ps single", "one instance")):
            self.add(
                "reads", f"docker ps p50, {wide_total} containers, {label}", "ms", statistics.median(s[k])
            )
            self.add("reads", f"docker ps p99, {wide_total} containers, {label}", "ms", pct(s[k], 99))
        self.add(
            "reads",
            "docker ps merged / single p50",
            "x",
            statistics.median(s["ps wide"]) / statistics.median(s["ps single"]),
            ("max", MERGED_PS_RATIO),
            f"the same {wide_total} containers on {WIDE_HOSTS} instances or on one",
        )
        self.add(
            "reads", "docker ps merged / single p99", "x", pct(s["ps wide"], 99) / pct(s["ps single"], 99)
        )
        self.add(
            "reads",
            "docker ps p50, a 2-instance project (60 containers)",
            "ms",
            statistics.median(s["ps p1"]),
        )
        self.add(
            "reads",
            "gateway CPU per read (all four kinds)",
            "ms CPU",
            cpu * 1000 / (4 * (n + warm)),
            note="both replicas, heartbeats included",
        )

    # -- heartbeats --------------------------------------------------------------------------------

    def heartbeats(self) -> None:
        before = self.baseline
        window = self.p["beat_window"]
        say(f"scale: {window:g} s of heartbeats alone")
        w0, cpu0, since = write_stats(self.stack), self.gateway_cpu(), time.time()
        sim_cpu0 = cpu_seconds(self.stack.sim_pids())
        pg_cpu0 = cpu_seconds(self.stack.postgres_pids())
        time.sleep(window)
        w1, cpu1 = write_stats(self.stack), self.gateway_cpu()
        sim = self.stack.sim_stats(since=since)
        beats = [b for b in sim["beats"] if b[0] <= since + window]
        ok = [b for b in beats if b[2] == 204]
        rate = len(beats) / window
        after = row_counts(self.stack)
        grown = {t: after[t] - before.get(t, 0) for t in after if after[t] != before.get(t, 0)}
        lat = [b[1] for b in ok] or [float("nan")]
        self.extra["beats"] = {"n": len(beats), "ok": len(ok), "writes": {k: w1[k] - w0[k] for k in w1}}
        self.extra["row_counts"] = after
        self.add(
            "heartbeats",
            "heartbeats received",
            "/s",
            rate,
            note=f"interval {self.stack.interval:g} s; {len(beats) - len(ok)} not 204",
        )
        self.add("heartbeats", "heartbeat latency p50", "ms", statistics.median(lat))
        self.add("heartbeats", "heartbeat latency p99", "ms", pct(lat, 99))
        writes = (w1["ins"] - w0["ins"]) + (w1["upd"] - w0["upd"]) + (w1["del"] - w0["del"])
        self.add(
            "heartbeats",
            "store row writes",
            "/s",
            writes / window,
            note=", ".join(f"{k} {w1[k] - w0[k]}" for k in ("ins", "upd", "del")) + f" in {window:g} s",
        )
        self.add("heartbeats", "store commits", "/s", (w1["commits"] - w0["commits"]) / window)
        self.add(
            "heartbeats",
            "gateway CPU per heartbeat",
            "ms CPU",
            (cpu1 - cpu0) * 1000 / max(1, len(beats)),
            note=f"{(cpu1 - cpu0) / window * 100:.0f} % of one CPU, both replicas",
        )
        self.add(
            "heartbeats",
            "rows added by reads and heartbeats",
            "rows",
            sum(grown.values()),
            ("zero", 0),
            ", ".join(f"{t} {v:+d}" for t, v in grown.items()) or "every table as before",
        )
        self.extra["cpu_s"]["sim_per_beat_ms"] = (
            (cpu_seconds(self.stack.sim_pids()) - sim_cpu0) * 1000 / max(1, len(beats))
        )
        self.extra["cpu_s"]["pg_per_beat_ms"] = (
            (cpu_seconds(self.stack.postgres_pids()) - pg_cpu0) * 1000 / max(1, len(beats))
        )
        self.extra["db_bytes"] = w1["bytes"]

    # -- creates -----------------------------------------------------------------------------------

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
            f"run scheduling p50, one at a time ({len(alone)})",
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

    # -- placement, timed in process ---------------------------------------------------------------

    def decisions(self) -> None:
        """gateway.placement.place() on the stack's own store, as bench/placement's decide times it
        (each reservation released at once, so the store does not grow)."""
        from gateway import config
        from gateway.placement import PlacementRequest, place, release

        _store(self.stack)
        settings = config.Settings(
            gateway=config.GatewaySettings(
                database=self.stack.db_url, heartbeat_interval=self.stack.interval
            ),
            placement=config.PlacementSettings(tenancy="dedicated", capacity=40),
        )
        rng = random.Random(5)
        projects = [self.layout.projects[n] for n in self.layout.creators()]
        ms = []
        for k in range(self.p["decisions"] + 10):
            req = PlacementRequest(project=rng.choice(projects), name=f"bench-decide-{k}", labels={})
            t0 = time.perf_counter()
            placement = place(req, settings)
            dt = (time.perf_counter() - t0) * 1000
            release(placement)
            if k >= 10:
                ms.append(dt)
        self.extra["decide_ms"] = ms
        note = f"{len(ms)} decisions in the bench's process on the stack's PostgreSQL, while it heartbeats"
        self.add("placement", "placement decision p50", "ms", statistics.median(ms), note=note)
        self.add("placement", "placement decision p99", "ms", pct(ms, 99), ("max", PLACEMENT_P99_MS))
