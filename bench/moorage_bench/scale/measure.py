"""bench/scale's phases on a running simulated stack: seed, reads, heartbeats, creates, placement.

Every figure is a row made by bench/run's report.row (value in its `moorage` field, judged
against its target by report.judge); run.raw's keep-alive client speaks to the replicas, one
request after another alternating between them.
"""

from __future__ import annotations

import json
import random
import statistics
import time

from ..run.common import BenchError, say
from ..run.raw import Conn
from ..run.report import pct, row
from ..run.stack import cpu_seconds
from .common import (
    INFO_P99_MS,
    MERGED_PS_RATIO,
    PLACEMENT_P99_MS,
    WIDE_HOSTS,
    Layout,
)
from .creates import Creates
from .daemon import PROJECT_LABEL, container_id, container_name
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


class Phases(Creates):
    def __init__(self, stack: ScaleStack, layout: Layout, profile: dict, seed_mode: str = "store"):
        self.seed_mode = seed_mode
        self.stack = stack
        self.layout = layout
        self.p = profile
        self.rows: list[dict] = []
        self.extra: dict = {"seconds": {}, "rss_mb": {}, "cpu_s": {}}
        self.peak = [0.0, 0.0]
        self.baseline: dict[str, int] = {}
        self.slots: list[str] = []
        self.read_cpu: tuple[float, float, int] | None = None

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
        deadline = t0 + 300 + n / 4
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
        # it; set in the store (one statement per project). The containers: written to the map
        # as the simulated daemons hold them (seed "store"), or left for the agents' next
        # heartbeats to report and the gateway's reconcile to adopt (seed "heartbeats").
        store = _store(self.stack)
        now = store.utcnow()
        t1 = time.monotonic()
        with store.database.obj.atomic():
            for project, uuids in self.layout.by_project().items():
                store.Instance.update(project=project, claimed_at=now).where(
                    store.Instance.uuid.in_(uuids)
                ).execute()
            if self.seed_mode == "store":
                self._seed_containers(store, now)
        want = self.layout.containers
        deadline = t1 + 4 * self.stack.interval + 120 + want / 200
        while (have := store.Container.select().count()) < want:
            if time.monotonic() > deadline:
                raise BenchError(f"the heartbeats adopted {have} of {want} containers in time")
            time.sleep(1)
        adopted = time.monotonic() - t1
        how = "written to the store" if self.seed_mode == "store" else "adopted from the heartbeats"
        say(f"scale: {want} containers {how} in {adopted:.1f} s")
        self.extra["seconds"]["seed" if self.seed_mode == "store" else "adopt"] = round(adopted, 1)

    def _seed_containers(self, store, now) -> None:
        """The rows reconcile would adopt from each simulated daemon (daemon.py: the same IDs,
        names and labels), written in batches."""
        rows = []
        for uuid, project, count, _ in self.layout.instances:
            for k in range(count):
                rows.append(
                    dict(
                        id=container_id(uuid, k),
                        project=project,
                        name=container_name(uuid, k),
                        daemon_name=None,
                        instance=uuid,
                        labels={PROJECT_LABEL: project},
                        created_at=now,
                    )
                )
        for i in range(0, len(rows), 2000):
            store.Container.insert_many(rows[i : i + 2000]).execute()
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
        errors: list[str] = []
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
                # A refusal is counted (an overloaded gateway answers 503) and left out of the times.
                if resp.status != 200:
                    errors.append(f"{k}: {resp.status} {resp.text()[:100]}")
                    continue
                if expect is not None and len(json.loads(resp.body)) != expect:
                    raise BenchError(f"{k} listed {len(json.loads(resp.body))} containers, expected {expect}")
                if i >= warm:
                    samples[k].append(ms)
        cpu = self.gateway_cpu() - cpu0
        for c in conns.values():
            c.close()
        if any(not v for v in samples.values()):
            raise BenchError(f"no read answered 200: {errors[:3]}")
        self.extra["seconds"]["reads"] = round(time.monotonic() - t0, 1)
        self.extra["reads_ms"] = samples
        self.sample_rss()
        s = samples
        note = f"{n} each, replicas alternating"
        self.add(
            "reads", "read errors", "errors", len(errors), ("zero", 0), "; ".join(sorted(set(errors)))[:200]
        )
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
        self.read_cpu = (cpu, time.monotonic() - t0, 4 * (n + warm))

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
        if self.read_cpu:
            # What the reads cost beyond the heartbeats' background, at the rate just measured.
            cpu, seconds, count = self.read_cpu
            self.add(
                "reads",
                "gateway CPU per read, heartbeats' share taken out",
                "ms CPU",
                (cpu - (cpu1 - cpu0) / window * seconds) * 1000 / count,
                note="the row above less the heartbeat window's CPU a second over the reads' time",
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

    # -- placement, timed in process ---------------------------------------------------------------

    def decisions(self) -> None:
        """gateway.placement.place() on the stack's own store, as bench/placement's decide times it
        (each reservation released at once, so the store does not grow)."""
        from gateway import config
        from gateway.placement import PlacementRequest, place, release
        from gateway.server import collect_less

        _store(self.stack)
        collect_less()  # the garbage collector as a gateway's worker has it (gateway/server.py)
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
        note = (
            f"{len(ms)} decisions in the bench's process on the stack's PostgreSQL, while it heartbeats, "
            "with a worker's collector"
        )
        self.add("placement", "placement decision p50", "ms", statistics.median(ms), note=note)
        self.add("placement", "placement decision p99", "ms", pct(ms, 99), ("max", PLACEMENT_P99_MS))
