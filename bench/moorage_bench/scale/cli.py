"""bench/scale: the gateway and its store at N instances.

    bench/scale --instances N [--projects M] [--keep] [--json FILE] [--quick]
    bench/scale --down DIR                  # take down what --keep left
    bench/scale --plot [JSON ...]           # bench/scale.png from saved --json files

A throwaway PostgreSQL, two gateway replicas of this checkout (gunicorn, two workers each, the
embedded identity, dedicated tenancy) and N simulated instances (sim.py: the agents' protocol,
real secrets and heartbeats, a Docker API answered from memory) holding 30 containers each over
about N/2 projects. Through the replicas: `docker info` and `docker ps` of a project over 20
instances against one of a single instance holding as many containers, heartbeats alone (their
rate, latency, the store's writes, the gateway's CPU, whether any table grows), 200 concurrent
`run -d` (scheduling time, placement decisions), placement decisions timed in process, and the
memory of every part. One line per figure with its target and `ok` or `short`.

A benchmark, never a test: exits 0 whatever the figures, 1 if it could not take them, 2 on a
usage error. Needs root (PostgreSQL runs as its own user), the project's dependencies, and
PostgreSQL's server (scripts/install-deps). See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import resource
import signal
import sys
import time
import traceback

from ..run.cli import machine
from ..run.common import say
from ..run.report import fmt
from .common import PROFILES, Layout
from .measure import Phases, row_counts
from .stack import ScaleStack, down_kept

# Tables that grow by design, bounded: the event journal keeps every event for [events]
# retention, then trims it (gateway/store/journal.py); image presence has one row per image and
# instance, written by the first create of an image there; a removed container is remembered
# for five minutes (gateway/store/queries.py REMOVED_KEPT), then forgotten by a later removal.
BOUNDED = ("event_record", "imagepresence", "removedcontainer")
WALL_TARGET_S = 15 * 60  # --instances 1000 on this kind of machine


def value(r: dict) -> str:
    """A row's value as printed: ratios with two decimals, the rest as bench/run prints them."""
    if r["unit"] == "x" and isinstance(r["moorage"], int | float):
        return f"{r['moorage']:.2f}"
    return fmt(r["moorage"], r["unit"])


def table(rows: list[dict]) -> str:
    head = ("figure", "value", "unit", "target", "result", "note")
    lines = [(r["name"], value(r), r["unit"], r["target"], r["result"], r["note"]) for r in rows]
    widths = [max(len(str(x[i])) for x in [head, *lines]) for i in range(len(head) - 1)]
    out = []
    for k, line in enumerate([head, *lines]):
        cells = [
            str(c).rjust(w) if i == 1 else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(line[:-1], widths, strict=True))
        ]
        out.append("  ".join(cells) + ("  " + line[-1] if line[-1] else ""))
        if k == 0:
            out.append("  ".join("-" * w for w in widths) + "  ----")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="bench/scale", description="The gateway and its store at N simulated instances."
    )
    ap.add_argument(
        "--instances", type=int, default=1000, metavar="N", help="simulated instances (default 1000)"
    )
    ap.add_argument(
        "--projects", type=int, metavar="M", help="projects (default: about N/2, two instances each)"
    )
    ap.add_argument("--quick", action="store_true", help="fewer requests and a shorter heartbeat window")
    ap.add_argument("--keep", action="store_true", help="leave the stack up and print its env file")
    ap.add_argument("--json", metavar="FILE", help="write every figure and sample as JSON to FILE")
    ap.add_argument(
        "--heartbeat-interval",
        type=float,
        default=10.0,
        metavar="S",
        help="[gateway] heartbeat_interval (default 10, the gateway's own default)",
    )
    ap.add_argument(
        "--sims", type=int, metavar="K", help="simulator processes (default 1 per 2,500 instances)"
    )
    ap.add_argument(
        "--seed",
        choices=("store", "heartbeats"),
        default="store",
        help="the containers: written to the store as the simulated daemons hold them (default), "
        "or adopted by the gateway from the agents' first heartbeats",
    )
    ap.add_argument("--down", metavar="DIR", help="take down a stack a --keep run left in DIR")
    ap.add_argument(
        "--plot",
        nargs="*",
        metavar="JSON",
        help="draw bench/scale.png from --json files (default bench/scale-data/*.json)",
    )
    ap.add_argument(
        "--png", default=None, metavar="FILE", help="--plot: where to write (default bench/scale.png)"
    )
    args = ap.parse_args(argv)
    if args.down:
        down_kept(args.down)
        say(f"scale: {args.down} taken down")
        return 0
    if args.plot is not None:
        from .plot import plot

        return plot(args.plot, args.png)
    try:
        layout = Layout(args.instances, args.projects)
    except ValueError as exc:
        ap.error(str(exc))
    profile = PROFILES["quick" if args.quick else "full"]
    sims = args.sims or max(1, math.ceil(args.instances / 2500))

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Every process started from here inherits it: a gateway worker follows every instance's
    # events on a connection each, the simulators listen on a socket per instance.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = time.monotonic()
    load0 = os.getloadavg()
    stack = ScaleStack(layout, args.heartbeat_interval, sims)
    phases = Phases(stack, layout, profile, args.seed)
    failed, kept = False, False
    try:
        stack.up()
        phases.extra["seconds"]["up"] = round(time.monotonic() - started, 1)
        phases.seed()
        phases.reads()
        phases.heartbeats()
        baseline = phases.baseline
        phases.creates()
        phases.remove_created()
        after = row_counts(stack)
        grown = {t: after[t] - baseline.get(t, 0) for t in after if after[t] != baseline.get(t, 0)}
        judged = sum(v for t, v in grown.items() if t not in BOUNDED)
        phases.add(
            "creates",
            "rows left after the creates were removed",
            "rows",
            judged,
            ("zero", 0),
            ", ".join(f"{t} {v:+d}" for t, v in grown.items()) or "every table as before the reads",
        )
        phases.decisions()
        finish(phases, stack, layout, started)
        if args.keep:
            env = stack.write_env()
            kept = True
            with open(env) as fh:
                print(f"\n# the stack stays up; its env file is {env}:\n{fh.read()}", flush=True)
            print(
                f"# time it by hand: set -a; . {env}; set +a; docker ps; docker info; "
                "docker run -d busybox sleep 1d"
            )
            print(f"# take it down: bench/scale --down {stack.dir}", flush=True)
    except KeyboardInterrupt:
        say("scale: interrupted; taking the stack down")
        failed = True
    except Exception as exc:  # noqa: BLE001 - reported; the stack is taken down below
        say(f"scale: ERROR {exc} (logs in {stack.dir}: gateway-*.log, sim-*.log)")
        traceback.print_exc(file=sys.stderr)
        failed = True
    finally:
        if not kept:
            stack.down(keep_logs=failed)
    seconds = time.monotonic() - started
    if phases.rows:
        print(
            f"\nbench/scale --instances {layout.n}: {len(layout.names)} projects, "
            f"{layout.containers} containers, "
            f"heartbeat interval {stack.interval:g} s, {sims} simulator process(es); {seconds:.0f} s; "
            f"{machine()}; load average {load0[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end\n"
        )
        print(table(phases.rows), flush=True)
    if args.json:
        doc = {
            "instances": layout.n,
            "projects": len(layout.names),
            "containers": layout.containers,
            "heartbeat_interval": stack.interval,
            "sims": sims,
            "quick": args.quick,
            "wall_seconds": round(seconds, 1),
            "when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "python": platform.python_version(),
            "load": [load0[0], os.getloadavg()[0]],
            "failed": failed,
            "rows": phases.rows,
            **phases.extra,
        }
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1, default=str)
    return 1 if failed else 0


def finish(phases: Phases, stack: ScaleStack, layout: Layout, started: float) -> None:
    """Memory of every part, and the run's wall time."""
    phases.sample_rss()
    for i in range(2):
        now = stack.rss_mb(stack.replica_pids(i))
        phases.extra["rss_mb"][f"replica{i + 1}"] = round(now, 1)
        phases.extra["rss_mb"][f"replica{i + 1}_peak"] = round(phases.peak[i], 1)
        phases.add(
            "memory",
            f"RSS replica {i + 1} (master + {len(stack.replica_pids(i)) - 1} workers)",
            "MB",
            now,
            note=f"peak {phases.peak[i]:.0f} MB",
        )
    sim = stack.rss_mb(stack.sim_pids())
    pg = stack.pss_mb(stack.postgres_pids())
    phases.extra["rss_mb"].update(sim=round(sim, 1), postgres=round(pg, 1))
    phases.add("memory", "RSS simulators", "MB", sim, note=f"{sim * 1024 / layout.n:.0f} KB per instance")
    phases.add("memory", "PSS PostgreSQL (all its processes, shared memory counted once)", "MB", pg)
    phases.add("memory", "database size", "MB", phases.extra.get("db_bytes", 0) / 1e6)
    wall = time.monotonic() - started
    target = ("max", float(WALL_TARGET_S)) if layout.n <= 1000 else None
    phases.add(
        "run",
        "bench wall time (up, register, adopt, every phase)",
        "s",
        wall,
        target,
        ", ".join(f"{k} {v:g} s" for k, v in phases.extra["seconds"].items()),
    )
