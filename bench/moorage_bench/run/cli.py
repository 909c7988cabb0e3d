"""bench/run: Moorage against the daemon behind it, side by side, in one run.

    bench/run [--quick] [--env DIR/env] [--json FILE] [--only SECTIONS]

Without --env it brings up its own stack (scripts/devstack up) in a temporary directory and
takes it down at the end; with --env it uses that stack and leaves it running. Every figure is
measured twice, through the gateway (DOCKER_HOST, with the tenant's headers) and straight at
the daemon the gateway forwards to (MOORAGE_DIRECT_HOST), with the same client code, and the
two are interleaved where that is possible so that noise from the machine hits both alike.

Sections (--only takes a comma-separated subset): latency, lifecycle, concurrency, logs, cp,
rss. It is a benchmark, never a test: it exits 0 whatever the figures, 1 if it could not take
them (no stack, a section that failed), 2 on a usage error. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import signal
import subprocess
import time
import traceback

import requests

from .bench import Bench
from .client import table
from .common import PROFILES, SECTIONS, BenchError, read_env, say
from .stack import OwnStack


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/run", description="Moorage vs the direct daemon, side by side.")
    ap.add_argument("--quick", action="store_true", help="smaller sizes and counts (< 2 min), to smoke-test")
    ap.add_argument(
        "--env", metavar="FILE", help="use this stack's env file (DIR/env) instead of a new stack"
    )
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    ap.add_argument("--only", metavar="SECTIONS", help=f"comma-separated subset of {','.join(SECTIONS)}")
    args = ap.parse_args(argv)
    only = SECTIONS
    if args.only:
        only = tuple(x.strip() for x in args.only.split(",") if x.strip())
        unknown = [x for x in only if x not in SECTIONS]
        if unknown:
            ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    mode = "quick" if args.quick else "full"
    profile = PROFILES[mode]

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    load_at_start = os.getloadavg()[0]
    stack = None
    bench = None
    failed = False
    try:
        if args.env:
            env = read_env(args.env)
        else:
            stack = OwnStack()
            env = stack.up()
        bench = Bench(env, profile, mode)
        say(
            f"{mode} run: moorage {env['DOCKER_HOST']} vs direct {env['MOORAGE_DIRECT_HOST']} "
            f"(API {bench.sides['direct'].api})"
        )
        for section in SECTIONS:
            if section not in only:
                continue
            t0 = time.monotonic()
            try:
                getattr(bench, section)()
            except (BenchError, requests.RequestException, OSError, ValueError, KeyError) as exc:
                failed = True
                msg = f"{section}: {type(exc).__name__}: {exc}"
                bench.errors.append(msg)
                say(f"section failed: {msg}")
                if os.environ.get("BENCH_DEBUG"):
                    traceback.print_exc()
            say(f"{section} took {time.monotonic() - t0:.0f} s")
    except KeyboardInterrupt:
        failed = True
        say("interrupted")
    except (BenchError, requests.RequestException, OSError, subprocess.SubprocessError) as exc:
        failed = True
        say(f"cannot run: {exc}")
    finally:
        if bench is not None:
            bench.cleanup()
        if stack is not None and stack.up_ok:
            stack.down()
        elif stack is not None:
            say(f"the stack did not come up; its logs are in {stack.dir}")
    if bench is None:
        return 1

    elapsed = time.monotonic() - started
    nproc = os.cpu_count()
    load = os.getloadavg()
    print(
        f"Moorage bench, {mode} run, {_dt.datetime.now().isoformat(timespec='seconds')}: "
        f"{nproc} CPUs, load average {load_at_start:.2f} at start, {load[0]:.2f} at end, "
        f"{elapsed:.0f} s"
    )
    print(
        f"moorage = {bench.env['DOCKER_HOST']} (gateway → agent → dockerd); "
        f"direct = {bench.env['MOORAGE_DIRECT_HOST']}; ratio = moorage / direct"
    )
    if max(load_at_start, load[0]) > (nproc or 1):
        print(
            f"note: the load average exceeded the {nproc} CPUs: other work shared the machine, "
            "so the figures are noisier than usual"
        )
    print()
    print(table(bench.rows))
    steps = bench.extra.get("lifecycle_steps_p50_ms")
    misses = [r["name"] for r in bench.rows if r["result"] == "MISS"]
    print()
    print(
        f"targets: {sum(r['result'] == 'PASS' for r in bench.rows)} PASS, {len(misses)} MISS"
        + (f" ({'; '.join(misses)})" if misses else "")
    )
    for msg in bench.errors:
        print(f"ERROR {msg}")
    if args.json:
        doc = {
            "mode": mode,
            "when": _dt.datetime.now().isoformat(timespec="seconds"),
            "cpus": nproc,
            "loadavg_start": load_at_start,
            "loadavg_end": load,
            "seconds": round(elapsed, 1),
            "moorage": bench.env["DOCKER_HOST"],
            "direct": bench.env["MOORAGE_DIRECT_HOST"],
            "profile": profile,
            "rows": bench.rows,
            "lifecycle_steps_p50_ms": steps,
            "extra": bench.extra,
            "errors": bench.errors,
        }
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=2, default=str)
            fh.write("\n")
    return 1 if failed else 0
