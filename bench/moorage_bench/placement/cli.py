"""bench/placement: placement over many instances, in two sections.

    bench/placement [--quick] [--only decide,ps] [--db sqlite,postgres] [--env DIR/env] [--json FILE]

decide  the scheduler's decision (gateway.placement.place(), its transaction, the reservation
        row it writes; released after each decision so the database does not grow) on a scratch
        database seeded with 10,000 instances and 1,000,000 container rows, on SQLite and on a
        throwaway PostgreSQL (Debian's server, run as the postgres user: tests/pgserver.py).
        p50/p99 per strategy; target p99 <= 5 ms. No stack needed.
ps      `docker ps -a` (GET /containers/json?all=1) of one project holding 2,000 containers
        (created, never started) over 20 instances, through the gateway, against one daemon
        listing 2,000 directly; target <= 1.5x. Needs a `scripts/devstack up DIR --hosts 20`
        stack: its own (made and taken down here) or --env DIR/env.

A benchmark, never a test: exits 0 whatever the figures, 1 if it could not take them, 2 on a
usage error. Run it with the interpreter that has the project's dependencies (the project's
.venv); it imports the gateway from this checkout. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import traceback

import requests

from ..run.client import table
from ..run.common import BenchError, read_env, say
from .common import DATABASES, PROFILES, SECTIONS
from .decide import Decide
from .ps import Ps, PsStack

# --- output ----------------------------------------------------------------------------------------


def decide_table(rows: list[dict]) -> str:
    head = (
        "measurement",
        "database",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "n",
        "target",
        "result",
        "note",
    )
    lines = [
        (
            r["name"],
            r["db"],
            f"{r['p50']:.2f}",
            f"{r['p90']:.2f}",
            f"{r['p99']:.2f}",
            f"{r['max']:.2f}",
            str(r["n"]),
            r["target"],
            r["result"] or "",
            r["note"],
        )
        for r in rows
    ]
    widths = [max(len(str(x[i])) for x in [head, *lines]) for i in range(len(head) - 1)]
    out = []
    for k, line in enumerate([head, *lines]):
        cells = [
            str(c).rjust(w) if i in (2, 3, 4, 5, 6) else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(line[:-1], widths, strict=True))
        ]
        out.append("  ".join(cells) + ("  " + line[-1] if line[-1] else ""))
        if k == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * 4)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="bench/placement", description="Placement at scale; docker ps over many instances."
    )
    ap.add_argument("--quick", action="store_true", help="smaller sizes and counts, to smoke-test the bench")
    ap.add_argument("--only", metavar="SECTIONS", help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument(
        "--db",
        metavar="KINDS",
        default=",".join(DATABASES),
        help=f"decide: comma-separated subset of {','.join(DATABASES)}",
    )
    ap.add_argument(
        "--decisions",
        type=int,
        metavar="N",
        help="decide: decisions per case and database (default 400; --quick 100)",
    )
    ap.add_argument(
        "--env", metavar="FILE", help="ps: use this stack's env file (DIR/env) instead of a new stack"
    )
    ap.add_argument(
        "--direct",
        metavar="ENDPOINT",
        help="ps: the daemon for the direct side (unix:///...); "
        "default: a one-host stack of its own, or with --env that stack's MOORAGE_DIRECT_HOST (shared)",
    )
    ap.add_argument(
        "--keep", action="store_true", help="ps with --env: leave the containers made (to profile)"
    )
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    args = ap.parse_args(argv)
    only = SECTIONS
    if args.only:
        only = tuple(x.strip() for x in args.only.split(",") if x.strip())
        unknown = [x for x in only if x not in SECTIONS]
        if unknown:
            ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    kinds = [x.strip() for x in args.db.split(",") if x.strip()]
    if not kinds or any(k not in DATABASES for k in kinds):
        ap.error(f"--db takes a comma-separated subset of {', '.join(DATABASES)}")
    mode = "quick" if args.quick else "full"
    profile = dict(PROFILES[mode])
    if args.decisions is not None:
        if args.decisions < profile["rounds"]:
            ap.error(f"--decisions must be at least {profile['rounds']}")
        profile["decisions"] = args.decisions

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    load_at_start = os.getloadavg()[0]
    results: dict = {"rows": [], "extra": {}, "errors": [], "seconds": {}}
    failed = False
    workdir = tempfile.mkdtemp(prefix="moorage-bench-placement-")
    try:
        for section in SECTIONS:
            if section not in only:
                continue
            t0 = time.monotonic()
            stacks: list[PsStack] = []
            job = None
            try:
                if section == "decide":
                    job = Decide(profile, kinds, workdir)
                    job.run()
                else:
                    if args.env:
                        env = read_env(args.env)
                    else:
                        stacks.append(PsStack(profile["ps_hosts"]))
                        env = stacks[-1].up()
                    direct = args.direct
                    if direct is None and not args.env:
                        # The direct daemon: one of its own (a one-host stack), so that neither
                        # side's daemon work lands on the other's.
                        stacks.append(PsStack(1))
                        direct = stacks[-1].up()["MOORAGE_DIRECT_HOST"]
                    job = Ps(env, profile, direct or env["MOORAGE_DIRECT_HOST"], shared_direct=direct is None)
                    try:
                        job.run()
                    finally:
                        if args.keep and args.env:
                            say("ps: --keep: leaving the containers (label org.openstack.moorage.bench)")
                        else:
                            job.cleanup()
            except (
                BenchError,
                OSError,
                ValueError,
                KeyError,
                subprocess.SubprocessError,
                requests.RequestException,
                ImportError,
                RuntimeError,
            ) as exc:
                failed = True
                msg = f"{section}: {type(exc).__name__}: {exc}"
                results["errors"].append(msg)
                say(f"section failed: {msg}")
                if os.environ.get("BENCH_DEBUG"):
                    traceback.print_exc()
            finally:
                for stack in stacks:
                    if stack.up_ok:
                        stack.down()
                    else:
                        say(f"the stack did not come up; its logs are in {stack.dir}")
            if job is not None:
                results["rows"] += job.rows
                results["extra"].update(job.extra)
            results["seconds"][section] = round(time.monotonic() - t0, 1)
            say(f"{section} took {time.monotonic() - t0:.0f} s")
    except KeyboardInterrupt:
        failed = True
        say("interrupted")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    elapsed = time.monotonic() - started
    nproc = os.cpu_count()
    load = os.getloadavg()
    print(
        f"Moorage placement bench, {mode} run, {_dt.datetime.now().isoformat(timespec='seconds')}: "
        f"{nproc} CPUs, load average {load_at_start:.2f} at start, {load[0]:.2f} at end, {elapsed:.0f} s"
    )
    if max(load_at_start, load[0]) > (nproc or 1):
        print(
            f"note: the load average exceeded the {nproc} CPUs: other work shared the machine, "
            "so the figures are noisier than usual"
        )
    decide_rows = [r for r in results["rows"] if r["section"] == "decide"]
    ps_rows = [r for r in results["rows"] if r["section"] == "ps"]
    if decide_rows:
        p = profile
        print()
        print(
            f"placement decision: {p['instances']} instances, {p['containers']} container rows "
            f"(seeded in "
            + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in results["extra"].get("seed", {}).items())
            + "); place() timed with its transaction and reservation write"
        )
        print(decide_table(decide_rows))
    if ps_rows:
        print()
        print("docker ps over many instances: ratio = moorage / direct")
        print(table(ps_rows))
    misses = [
        f"{r['name']}{' ' + r['db'] if r.get('db') else ''}" for r in results["rows"] if r["result"] == "MISS"
    ]
    print()
    print(
        f"targets: {sum(r['result'] == 'PASS' for r in results['rows'])} PASS, {len(misses)} MISS"
        + (f" ({'; '.join(misses)})" if misses else "")
    )
    for msg in results["errors"]:
        print(f"ERROR {msg}")
    if args.json:
        doc = {
            "mode": mode,
            "when": _dt.datetime.now().isoformat(timespec="seconds"),
            "cpus": nproc,
            "loadavg_start": load_at_start,
            "loadavg_end": load,
            "seconds": round(elapsed, 1),
            "profile": profile,
            **results,
        }
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=2, default=str)
            fh.write("\n")
    return 1 if failed else 0
