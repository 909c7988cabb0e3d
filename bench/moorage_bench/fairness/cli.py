"""bench/fairness: does one project hammering the gateway move another project's p99?

    bench/fairness [--env DIR/env] [--seconds S] [--rounds R] [--hammers N] [--rate R]
                   [--victim-rps V] [--json FILE]

The victim (the stack's tenant ``beta``) sends V requests a second (default 20, an open loop
over 4 threads: each request leaves at its time whether or not the last one has returned), half
``GET /containers/json`` and half an inspect of one of its running containers, and its latency is
recorded in each phase (S seconds each, default 10; the four phases repeat R times, default 3,
and each phase's samples are pooled, so that the load of other jobs on the machine lands on
every phase alike):

    baseline       the victim alone
    unlimited      tenant ``alpha`` hammers: N threads (default 16), each with its own keep-alive
                   connection, ``GET /containers/json?all=1`` back to back; no fair share
    limited        the same hammering, with alpha held to R requests a second (default 20:
                   ``moorage quota set ALPHA rate=R``); alpha ignores Retry-After and retries at once
    polite         the same limit, alpha's threads wait as Retry-After says

Target (issue 18): in ``limited`` the victim's p99 is at most 10 % above ``baseline``'s.
Without --env it brings up its own stack (scripts/devstack up --hosts 2) and takes it down at
the end. It exits 0 whatever the figures (1 if it could not take them).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import subprocess
import threading
import time

import requests

from .. import REPO
from ..run.client import Side, expect, pct
from ..run.common import BENCH_LABEL, IMAGE, BenchError, read_env, say
from ..run.stack import OwnStack

PHASES = ("baseline", "unlimited", "limited", "polite")
TARGET = 1.10  # limited p99 / baseline p99
VICTIM_THREADS = 4


def tenant(env: dict[str, str], name: str) -> tuple[Side, str]:
    with open(os.path.join(env[f"MOORAGE_CONFIG_{name}"], "config.json")) as fh:
        headers = json.load(fh)["HttpHeaders"]
    return Side(name, env["DOCKER_HOST"], headers, "1.41"), env[f"MOORAGE_PROJECT_{name}"]


def admin(env: dict[str, str], *words: str) -> None:
    """The operator's CLI on the stack's settings, from this checkout (as the gateway runs it)."""
    argv = [*shlex.split(env["MOORAGE_ADMIN"]), *words]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": REPO}
    )
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(words)}: {proc.stderr.strip()[-300:]}")


class Victim:
    """The measured project: an open loop of ps and inspect at a fixed rate."""

    def __init__(self, side: Side, cid: str, rps: float):
        self.side, self.cid, self.rps = side, cid, rps
        self.samples: list[float] = []
        self.errors = 0

    def run(self, seconds: float) -> None:
        self.samples, self.errors = [], 0
        lock = threading.Lock()
        start = time.monotonic() + 0.1
        interval = VICTIM_THREADS / self.rps

        def worker(k: int) -> None:
            s = self.side.session()
            paths = ["/containers/json", f"/containers/{self.cid}/json"]
            n = 0
            while True:
                due = start + (k / VICTIM_THREADS + n) * interval
                if due - start > seconds:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                t0 = time.monotonic()
                try:
                    ok = s.get(self.side.url(paths[(n + k) % 2]), timeout=60).status_code == 200
                except requests.RequestException:
                    ok = False
                # From when it was due: a request held up behind the last one counts its wait.
                took = time.monotonic() - min(t0, max(due, start))
                with lock:
                    if ok:
                        self.samples.append(took * 1000)
                    else:
                        self.errors += 1
                n += 1
            s.close()

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(VICTIM_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


class Hammer:
    """The noisy project: N threads sending back to back until told to stop."""

    def __init__(self, side: Side, threads: int, polite: bool):
        self.side, self.threads, self.polite = side, threads, polite
        self.stop = threading.Event()
        self.counts = {"ok": 0, "429": 0, "other": 0}
        self.lock = threading.Lock()
        self.workers: list[threading.Thread] = []

    def start(self) -> None:
        def worker() -> None:
            s = self.side.session()
            while not self.stop.is_set():
                try:
                    r = s.get(self.side.url("/containers/json"), params={"all": "1"}, timeout=60)
                    kind = "ok" if r.status_code == 200 else "429" if r.status_code == 429 else "other"
                except requests.RequestException:
                    kind, r = "other", None
                with self.lock:
                    self.counts[kind] += 1
                if kind == "429" and self.polite and r is not None:
                    self.stop.wait(float(r.headers.get("Retry-After", "1")))
            s.close()

        self.workers = [threading.Thread(target=worker) for _ in range(self.threads)]
        for t in self.workers:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.workers:
            t.join()


def measure(env: dict[str, str], args) -> list[dict]:
    beta, _ = tenant(env, "beta")
    alpha, alpha_project = tenant(env, "alpha")
    with beta.session() as s:
        body = {"Image": IMAGE, "Cmd": ["sleep", "3600"], "Labels": {BENCH_LABEL: "1"}}
        cid = expect(s.post(beta.url("/containers/create"), json=body, timeout=120), 201).json()["Id"]
        try:
            expect(s.post(beta.url(f"/containers/{cid}/start"), timeout=120), 204)
            return phases(env, args, Victim(beta, cid, args.victim_rps), alpha, alpha_project)
        finally:
            admin(env, "quota", "unset", alpha_project, "rate")
            s.delete(beta.url(f"/containers/{cid}"), params={"force": "1"}, timeout=120)


def phases(env, args, victim: Victim, alpha: Side, alpha_project: str) -> list[dict]:
    """The phases in rounds: baseline, unlimited, limited, polite, each ``--seconds`` long, the
    whole sequence ``--rounds`` times, so that a change in the machine's load (other jobs) lands
    on every phase alike. Samples of the same phase are pooled."""
    pooled: dict[str, dict] = {
        p: {"samples": [], "errors": 0, "ok": 0, "429": 0, "other": 0, "s": 0.0} for p in PHASES
    }
    victim.run(3)  # warm-up: connections, caches
    for round_ in range(args.rounds):
        for phase in PHASES:
            limited = phase in ("limited", "polite")
            admin(
                env,
                "quota",
                *(
                    ("set", alpha_project, f"rate={args.rate}")
                    if limited
                    else ("unset", alpha_project, "rate")
                ),
            )
            time.sleep(2.5)  # every worker's next exchange learns it (sync_interval 1 s)
            hammer = None
            if phase != "baseline":
                hammer = Hammer(alpha, args.hammers, polite=phase == "polite")
                hammer.start()
                time.sleep(1)
            say(f"round {round_ + 1}/{args.rounds}, phase {phase}: {args.seconds:.0f} s")
            victim.run(args.seconds)
            if hammer is not None:
                hammer.finish()
            into = pooled[phase]
            into["samples"] += victim.samples
            into["errors"] += victim.errors
            into["s"] += args.seconds + (1 if hammer else 0)
            for kind, n in hammer.counts.items() if hammer else ():
                into[kind] += n
    rows = []
    for phase, got in pooled.items():
        samples, hammered = got["samples"], phase != "baseline"
        rows.append(
            {
                "phase": phase,
                "victim_n": len(samples),
                "victim_errors": got["errors"],
                "p50_ms": round(pct(samples, 50), 2) if samples else None,
                "p99_ms": round(pct(samples, 99), 2) if samples else None,
                "max_ms": round(max(samples), 2) if samples else None,
                "hammer_ok_per_s": round(got["ok"] / got["s"], 1) if hammered else None,
                "hammer_429_per_s": round(got["429"] / got["s"], 1) if hammered else None,
                "hammer_other": got["other"] if hammered else None,
            }
        )
    return rows


def report(rows: list[dict], args, load: tuple[float, float]) -> None:
    base = next(r for r in rows if r["phase"] == "baseline")["p99_ms"]
    print(
        f"Moorage fairness bench, {_dt.datetime.now().isoformat(timespec='seconds')}: {os.cpu_count()} "
        f"CPUs, load average {load[0]:.2f} at start, {load[1]:.2f} at end; victim {args.victim_rps:g} "
        f"req/s, {args.hammers} hammering threads, limit {args.rate} req/s, {args.rounds} rounds of "
        f"{args.seconds:g} s a phase"
    )
    head = ["phase", "victim p50 ms", "p99 ms", "p99 vs base", "max ms", "n", "err", "alpha 200/s", "429/s"]
    print(" ".join(f"{h:>13}" for h in head))
    for r in rows:
        change = f"{(r['p99_ms'] / base - 1) * 100:+.0f}%" if base and r["p99_ms"] else "-"
        cells = [
            r["phase"],
            r["p50_ms"],
            r["p99_ms"],
            change,
            r["max_ms"],
            r["victim_n"],
            r["victim_errors"],
            r["hammer_ok_per_s"] if r["hammer_ok_per_s"] is not None else "-",
            r["hammer_429_per_s"] if r["hammer_429_per_s"] is not None else "-",
        ]
        print(" ".join(f"{c!s:>13}" for c in cells))
    limited = next(r for r in rows if r["phase"] == "limited")["p99_ms"]
    if base and limited:
        verdict = "PASS" if limited <= base * TARGET else "MISS"
        print(f"target: limited p99 <= {TARGET:.2f} x baseline p99: {limited / base:.2f}x {verdict}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/fairness", description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", metavar="FILE", help="use this stack's env file (DIR/env)")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each phase (default 10)")
    ap.add_argument("--rounds", type=int, default=3, help="how many times the phases repeat (default 3)")
    ap.add_argument("--hammers", type=int, default=16, help="alpha's threads (default 16)")
    ap.add_argument("--rate", type=int, default=20, help="alpha's limit, requests a second (default 20)")
    ap.add_argument("--victim-rps", type=float, default=20.0, help="beta's requests a second (default 20)")
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    stack = None
    load0 = os.getloadavg()[0]
    try:
        if args.env:
            env = read_env(args.env)
        else:
            stack = OwnStack(["--hosts", "2"])
            env = stack.up()
        rows = measure(env, args)
    except (BenchError, requests.RequestException, OSError, KeyError, subprocess.SubprocessError) as exc:
        say(f"cannot run: {type(exc).__name__}: {exc}")
        return 1
    finally:
        if stack is not None and stack.up_ok:
            stack.down()
    report(rows, args, (load0, os.getloadavg()[0]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows}, fh, indent=2)
    return 0
