"""The `decide` section: the scheduler's decision (gateway.placement.place) timed per strategy."""

from __future__ import annotations

import contextlib
import random
import statistics
import time

from ..run.client import pct
from ..run.common import BenchError, say
from .common import DECISION_P99_MS, DEFAULT_CAPACITY, MIB, NANO, SEED
from .data import Population
from .databases import PostgresDB, ScratchDB, SQLiteDB

# --- the decision ----------------------------------------------------------------------------------


class Decide:
    """The cases, run in this order; each phase's rounds interleave the databases.

    fill, spread, pinned: every instance reports its capacity (as the nova pool's do).
    fill-default: then the instances of capacity 100 report none (0) and the [placement]
    default (100) applies: the same fleet, but no index can tell those full, so fill walks
    past the full ones (about 4,300 here) to the first with room."""

    PHASES = (("fill", "spread", "pinned"), ("fill-default",))
    CASES = tuple(c for phase in PHASES for c in phase)

    def __init__(self, profile: dict, kinds: list[str], workdir: str):
        self.p = profile
        self.kinds = kinds
        self.workdir = workdir
        self.rows: list[dict] = []
        self.extra: dict = {}

    def settings(self, strategy: str):
        from gateway import config

        return config.Settings(
            # Seeded heartbeats stay fresh for the run (no heartbeat writes compete here); the
            # silent instances' are two days old.
            gateway=config.GatewaySettings(database="", heartbeat_interval=3600.0),
            # The population is a shared pool (every project's containers on any instance):
            # shared tenancy, which it was written for. With dedicated tenancy (the default
            # since) a pin to another project's instance is a 404; bench/scale measures the
            # dedicated decision, a project's own instances.
            placement=config.PlacementSettings(
                tenancy="shared", strategy=strategy, capacity=DEFAULT_CAPACITY
            ),
            quotas=config.QuotaSettings(containers=100, memory="64g", cpus=32),
        )

    def requests(self, pop: Population, case: str, count: int, rng: random.Random):
        from gateway.placement import PlacementRequest

        weights = [size for _, size in pop.projects]
        projects = rng.choices([p for p, _ in pop.projects], weights=weights, k=count)
        roomy = [
            inst["uuid"]
            for inst, used in zip(pop.instances, pop.used, strict=True)
            if inst["live"] and used < inst["capacity"]
        ]
        out = []
        for k, project in enumerate(projects):
            name = "" if case == "spread" else f"bench-{case}-{k}"  # unnamed: one check less
            pinned = rng.choice(roomy) if case == "pinned" else None
            out.append(
                PlacementRequest(
                    project=project,
                    name=name,
                    labels={},
                    pinned=pinned,
                    memory=256 * MIB,
                    nano_cpus=NANO // 4,
                )
            )
        return out

    def run(self) -> None:
        from gateway import store
        from gateway.placement import place, release

        t0 = time.perf_counter()
        pop = Population(self.p["instances"], self.p["containers"])
        gen_seconds = time.perf_counter() - t0
        say(
            f"decide: population of {len(pop.instances)} instances, {len(pop.pool)} containers, "
            f"{len(pop.projects)} projects generated in {gen_seconds:.1f} s"
        )
        expected_fill = pop.first_fill()
        dbs: dict[str, ScratchDB] = {}
        try:
            for kind in self.kinds:
                db = SQLiteDB(self.workdir) if kind == "sqlite" else PostgresDB()
                dbs[kind] = db
                say(f"decide: seeding {kind}")
                db.seed(pop)
                count = store.Container.select().count()
                say(f"decide: {kind} seeded in {db.seed_seconds:.1f} s ({count} container rows; {db.note})")
                self.extra.setdefault("seed", {})[kind] = {
                    "seconds": round(db.seed_seconds, 1),
                    "rows": count,
                    "note": db.note,
                }
            rng = random.Random(SEED + 2)
            n, warm, rounds = self.p["decisions"], self.p["warm"], self.p["rounds"]
            per_round = max(1, n // rounds)
            samples = {(k, c): [] for k in dbs for c in self.CASES}
            release_ms = {k: [] for k in dbs}
            chosen = {(k, c): {} for k in dbs for c in self.CASES}
            reqs = {c: self.requests(pop, c, warm + per_round * rounds, rng) for c in self.CASES}
            settings = {c: self.settings("spread" if c == "spread" else "fill") for c in self.CASES}
            # Per phase: a warm-up, then rounds; each round runs the phase's cases on every
            # database, the databases' order alternating, so noise from the rest of the machine
            # lands on all alike.
            order = list(dbs)
            for phase in self.PHASES:
                if "fill-default" in phase:
                    for db in dbs.values():
                        db.bind()
                        store.Instance.update(capacity=0).where(
                            store.Instance.capacity == DEFAULT_CAPACITY
                        ).execute()
                for r in range(-1, rounds):
                    for kind in order if r % 2 == 0 else order[::-1]:
                        dbs[kind].bind()
                        for case in phase:
                            batch = (
                                reqs[case][:warm]
                                if r < 0
                                else reqs[case][warm + r * per_round : warm + (r + 1) * per_round]
                            )
                            for req in batch:
                                t = time.perf_counter()
                                placement = place(req, settings[case])
                                dt = (time.perf_counter() - t) * 1000
                                t = time.perf_counter()
                                release(placement)
                                rel = (time.perf_counter() - t) * 1000
                                if r >= 0:
                                    samples[(kind, case)].append(dt)
                                    release_ms[kind].append(rel)
                                    uuid = placement.instance.uuid
                                    chosen[(kind, case)][uuid] = chosen[(kind, case)].get(uuid, 0) + 1
                    say(
                        f"decide: {'/'.join(phase)}: "
                        + (f"round {r + 1}/{rounds} done" if r >= 0 else "warm-up done")
                    )
            for kind, db in dbs.items():
                db.bind()
                grow = store.Container.select().count()
                if grow != self.extra["seed"][kind]["rows"]:
                    raise BenchError(
                        f"{kind}: {grow} container rows after the run, "
                        f"{self.extra['seed'][kind]['rows']} before: a reservation was not released"
                    )
            for kind in dbs:
                for case in self.CASES:
                    s = samples[(kind, case)]
                    p50, p90, p99 = statistics.median(s), pct(s, 90), pct(s, 99)
                    note = ""
                    if case.startswith("fill"):
                        got = set(chosen[(kind, case)])
                        ok = got == {expected_fill["uuid"]}
                        note = f"chose position {expected_fill['position']} (first with room) " + (
                            "as expected" if ok else f"WRONG: {sorted(got)[:3]}"
                        )
                        if case == "fill-default":
                            walked = sum(
                                1
                                for inst in pop.instances[: expected_fill["position"] - 1]
                                if inst["state"] == "up" and inst["capacity"] == DEFAULT_CAPACITY
                            )
                            note += f"; {walked} full instances on the default passed over"
                    elif case == "spread":
                        note = (
                            f"unnamed; {len(chosen[(kind, case)])} distinct instance(s) chosen "
                            "(the empty ones tie; each reservation is released)"
                        )
                    else:
                        note = "a random live instance with room, named"
                    self.rows.append(
                        dict(
                            section="decide",
                            name=f"place() {case}",
                            db=kind,
                            unit="ms",
                            p50=p50,
                            p90=p90,
                            p99=p99,
                            max=max(s),
                            n=len(s),
                            target=f"p99<={DECISION_P99_MS:g} ms",
                            result="PASS" if p99 <= DECISION_P99_MS else "MISS",
                            note=note,
                        )
                    )
                    say(f"decide: {kind} {case}: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
                rel = release_ms[kind]
                self.rows.append(
                    dict(
                        section="decide",
                        name="release()",
                        db=kind,
                        unit="ms",
                        p50=statistics.median(rel),
                        p90=pct(rel, 90),
                        p99=pct(rel, 99),
                        max=max(rel),
                        n=len(rel),
                        target="",
                        result=None,
                        note="the reservation's delete (not in the figure above)",
                    )
                )
            self.extra["decide"] = {f"{k}/{c}": v for (k, c), v in samples.items()}
        finally:
            for db in dbs.values():
                with contextlib.suppress(Exception):
                    db.close()
