"""bench/run: Moorage against the dockerd behind it, side by side, measured honestly.

    bench/run [--quick] [--env DIR/env] [--repeat N] [--only SECTIONS] [--json FILE] [--profile]

Without --env it brings up its own stack (scripts/devstack up) in a temporary directory and
takes it down at the end; with --env it uses that stack and leaves it running. Every figure is
taken through the gateway (DOCKER_HOST, with the tenant's headers) and straight at the daemon
the gateway forwards to (MOORAGE_DIRECT_HOST) with the same light client (raw.py), the two sides
interleaved request by request (or run by run for streams and the concurrent clients), each
figure repeated --repeat times (default 5) and reported as the median of the repetitions.

Sections (--only takes a comma-separated subset): latency, lifecycle, cpu, concurrency, logs,
attach, cp, saveload. --profile also records py-spy flame graphs of ps, inspect and logs into
bench/profiles/ (alone: `--only profile`). It is a benchmark, never a test: it exits 0 whatever
the figures, 1 if it could not take them, 2 on a usage error. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import signal
import subprocess
import time
import traceback

from .bench import Bench
from .common import PROFILES, SECTIONS, BenchError, read_env, say
from .report import markdown, table
from .stack import OwnStack


def machine() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            mem = f", {int(fh.readline().split()[1]) / 1024 / 1024:.0f} GB RAM"
    except (OSError, ValueError, IndexError):
        pass
    model = model or platform.processor() or "unknown"
    return f"{os.cpu_count()} CPUs ({model}){mem}, Linux {platform.release()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="bench/run", description="Moorage vs the dockerd behind it, side by side."
    )
    ap.add_argument(
        "--quick", action="store_true", help="small sizes, one repetition (under a minute): a smoke test"
    )
    ap.add_argument(
        "--env", metavar="FILE", help="use this stack's env file (DIR/env) instead of a new stack"
    )
    ap.add_argument(
        "--repeat", type=int, metavar="N", help="repetitions per figure, median reported (default 5)"
    )
    ap.add_argument("--json", metavar="FILE", help="also write every figure (and every repetition) to FILE")
    ap.add_argument("--markdown", metavar="FILE", help="also write Markdown tables (README)")
    choices = (*SECTIONS, "profile")
    ap.add_argument("--only", metavar="SECTIONS", help=f"comma-separated subset of {','.join(choices)}")
    ap.add_argument(
        "--profile", action="store_true", help="also write py-spy flame graphs to bench/profiles/"
    )
    args = ap.parse_args(argv)
    only = list(SECTIONS)
    if args.only:
        only = [x.strip() for x in args.only.split(",") if x.strip()]
        unknown = [x for x in only if x not in choices]
        if unknown:
            ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(choices)}")
    if args.profile and "profile" not in only:
        only.append("profile")
    mode = "quick" if args.quick else "full"
    profile = dict(PROFILES[mode])
    if args.repeat is not None:
        if args.repeat < 1:
            ap.error("--repeat takes a positive count")
        profile["repeat"] = args.repeat

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    load_at_start = os.getloadavg()
    say(f"load average at start: {' '.join(f'{x:.2f}' for x in load_at_start)}")
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
            f"{mode} run: moorage {env['DOCKER_HOST']} vs dockerd {env['MOORAGE_DIRECT_HOST']} "
            f"(API {bench.api})"
        )
        for section in (*SECTIONS, "profile"):
            if section not in only:
                continue
            t0 = time.monotonic()
            try:
                getattr(bench, section)()
            except (BenchError, OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
                failed = True
                msg = f"{section}: {type(exc).__name__}: {exc}"
                bench.errors.append(msg)
                say(f"section failed: {msg}")
                if os.environ.get("BENCH_DEBUG"):
                    traceback.print_exc()
                sick = bench.gateway_trouble()
                if sick:
                    bench.errors.append(sick)
                    say(f"stopping: {sick}")
                    break
            say(f"{section} took {time.monotonic() - t0:.0f} s")
        bench.rss_rows()
    except KeyboardInterrupt:
        failed = True
        say("interrupted")
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
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
    load = os.getloadavg()
    when = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    print(f"Moorage bench, {mode} run ({profile['repeat']} repetitions per figure), {when}, {elapsed:.0f} s")
    print(f"machine: {machine()}")
    print(
        f"load average (1/5/15 min): {' '.join(f'{x:.2f}' for x in load_at_start)} at start, "
        f"{' '.join(f'{x:.2f}' for x in load)} at end"
    )
    print(
        f"moorage = {bench.env['DOCKER_HOST']} (gateway -> agent -> dockerd); "
        f"dockerd = {bench.env['MOORAGE_DIRECT_HOST']}"
    )
    if max(load_at_start[0], load[0]) > (os.cpu_count() or 1):
        print(
            "note: the load average exceeded the CPU count: other work shared the machine; figures are noisy"
        )
    print()
    print(table(bench.rows))
    judged = [r for r in bench.rows if r["result"]]
    short = [r["name"].strip() for r in judged if r["result"] == "short"]
    print()
    print(
        f"targets: {len(judged) - len(short)} ok, {len(short)} short"
        + (f" ({'; '.join(short)})" if short else "")
    )
    for msg in bench.errors:
        print(f"ERROR {msg}")
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(
                markdown(
                    bench.rows,
                    f"{mode} run, {when}, {profile['repeat']} repetitions per figure (medians), "
                    f"{elapsed:.0f} s; "
                    f"{machine()}; load average {load_at_start[0]:.2f} at start, {load[0]:.2f} at end",
                )
            )
    if args.json:
        doc = {
            "mode": mode,
            "when": when,
            "machine": machine(),
            "loadavg_start": load_at_start,
            "loadavg_end": load,
            "seconds": round(elapsed, 1),
            "moorage": bench.env["DOCKER_HOST"],
            "dockerd": bench.env["MOORAGE_DIRECT_HOST"],
            "profile": profile,
            "rows": bench.rows,
            "extra": bench.extra,
            "errors": bench.errors,
        }
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=2, default=str)
            fh.write("\n")
    return 1 if failed else 0
