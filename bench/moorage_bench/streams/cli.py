"""bench/streams: 1 GB through each kind of stream, and the gateway's memory meanwhile.

    bench/streams [--env DIR/env] [--mb N] [--only NAMES] [--json FILE]

Each stream moves N MB (default 1000) through the gateway as the tenant in DOCKER_CONFIG:

    logs-follow   `docker logs -f` of a container writing N MB, from its start to its end
    attach-out    `docker attach`: N MB of the container's stdout on the hijacked connection
    attach-in     `docker run -i IMAGE wc -c < FILE`: N MB into its stdin, half-closed at the
                  end; the container's count must equal N MB
    cp-out        `docker cp CONTAINER:/big .` of an N MB file
    cp-in         `docker cp FILE CONTAINER:/tmp`, the tar made as it is sent (chunked)
    save          `docker save` of an image holding the N MB file (committed first, untimed)

While each runs, the VmRSS of every gateway process of the stack (each replica's gunicorn
master and workers: command lines naming moorage, serve and the stack's config) is read every
20 ms; the row gives the sum before, its peak, 2 s after, and the growth (peak - before),
against issue 18's target of less than 20 MB. The agent's growth is shown too (no target).
Without --env it brings up its own stack (scripts/devstack up --hosts 1) and takes it down at
the end. It exits 0 whatever the figures, 1 if it could not take them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import threading
import time

import requests

from ..run.client import Side
from ..run.common import MB, BenchError, read_env, say
from ..run.stack import OwnStack, agent_pids, gateway_config_path, gateway_pids, rss_of
from .cases import Cases

NAMES = ("logs-follow", "attach-out", "attach-in", "cp-out", "cp-in", "save")
TARGET_MB = 20.0  # issue 18: the gateway's RSS grows by less than this over a 1 GB stream
SAMPLE_EVERY = 0.02


class Memory:
    """Peak of the summed VmRSS of each group of processes, sampled in a thread."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = groups
        self.stop = threading.Event()
        self.samples = 0

    def total(self) -> dict[str, int]:
        return {g: sum(rss_of(p).values()) for g, p in self.groups.items()}

    def __enter__(self):
        time.sleep(0.5)
        self.before = self.total()
        self.peak = dict(self.before)
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.is_set():
            self.samples += 1
            for g, kb in self.total().items():
                self.peak[g] = max(self.peak[g], kb)
            self.stop.wait(SAMPLE_EVERY)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        time.sleep(2)
        self.after = self.total()


def measure(env: dict[str, str], args) -> list[dict]:
    with open(os.path.join(env["DOCKER_CONFIG"], "config.json")) as fh:
        headers = json.load(fh)["HttpHeaders"]
    side = Side("moorage", env["DOCKER_HOST"], headers, "1.41")
    config = gateway_config_path(env)
    groups = {"gateway": gateway_pids(config), "agent": agent_pids(env["MOORAGE_DIRECT_HOST"])}
    if not groups["gateway"]:
        raise BenchError(f"no gateway process names {config}: is the stack on this machine?")
    size = args.mb * MB
    made: dict[str, list[str]] = {"containers": [], "images": []}
    rows = []
    with side.session() as s:
        cases = Cases(side, s, size, made)
        try:
            for name in args.only:
                method = name.replace("-", "_")
                prepare = getattr(cases, f"prepare_{method}", None)
                if prepare is not None:
                    say(f"{name}: preparing")
                    prepare()
                say(f"{name}: {args.mb} MB")
                with Memory(groups) as mem:
                    t0 = time.monotonic()
                    moved = getattr(cases, method)()
                    took = time.monotonic() - t0
                if moved < size:
                    raise BenchError(f"{name}: {moved} bytes crossed, fewer than {size}")
                growth = (mem.peak["gateway"] - mem.before["gateway"]) / 1024
                rows.append(
                    {
                        "stream": name,
                        "mb": round(moved / MB, 1),
                        "seconds": round(took, 1),
                        "mb_per_s": round(moved / MB / took, 1),
                        "gateway_before_mb": round(mem.before["gateway"] / 1024, 1),
                        "gateway_peak_mb": round(mem.peak["gateway"] / 1024, 1),
                        "gateway_after_mb": round(mem.after["gateway"] / 1024, 1),
                        "gateway_growth_mb": round(growth, 1),
                        "agent_growth_mb": round((mem.peak["agent"] - mem.before["agent"]) / 1024, 1),
                        "samples": mem.samples,
                        "result": "PASS" if growth < TARGET_MB else "MISS",
                    }
                )
                say(f"{name}: {moved / MB:.0f} MB in {took:.1f} s, gateway RSS +{growth:.1f} MB")
        finally:
            for cid in made["containers"]:
                s.delete(side.url(f"/containers/{cid}"), params={"force": "1"}, timeout=120)
            for image in made["images"]:
                s.delete(side.url(f"/images/{image}"), params={"force": "1"}, timeout=120)
    return rows


def report(rows: list[dict], args, load: tuple[float, float], procs: int) -> None:
    print(
        f"Moorage streams bench, {_dt.datetime.now().isoformat(timespec='seconds')}: {os.cpu_count()} "
        f"CPUs, load average {load[0]:.2f} at start, {load[1]:.2f} at end; {args.mb} MB a stream; "
        f"gateway RSS = the sum over its {procs} processes"
    )
    head = ("stream", "MB", "s", "MB/s", "RSS before", "peak", "after", "growth", "agent +", "result")
    keys = (
        "stream",
        "mb",
        "seconds",
        "mb_per_s",
        "gateway_before_mb",
        "gateway_peak_mb",
        "gateway_after_mb",
        "gateway_growth_mb",
        "agent_growth_mb",
        "result",
    )
    print(" ".join(f"{h:>11}" for h in head))
    for r in rows:
        print(" ".join(f"{r[k]!s:>11}" for k in keys))
    misses = [r["stream"] for r in rows if r["result"] != "PASS"]
    print(
        f"target: gateway RSS growth < {TARGET_MB:g} MB a stream: {len(rows) - len(misses)} PASS, "
        f"{len(misses)} MISS" + (f" ({', '.join(misses)})" if misses else "")
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/streams", description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", metavar="FILE", help="use this stack's env file (DIR/env)")
    ap.add_argument("--mb", type=int, default=1000, help="MB per stream (default 1000)")
    ap.add_argument("--only", metavar="NAMES", help=f"comma-separated subset of {','.join(NAMES)}")
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    args.only = [n.strip() for n in (args.only or ",".join(NAMES)).split(",") if n.strip()]
    unknown = [n for n in args.only if n not in NAMES]
    if unknown:
        ap.error(f"unknown stream(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    stack = None
    load0 = os.getloadavg()[0]
    try:
        if args.env:
            env = read_env(args.env)
        else:
            stack = OwnStack(["--hosts", "1"])
            env = stack.up()
        procs = len(gateway_pids(gateway_config_path(env)))
        rows = measure(env, args)
    except (BenchError, requests.RequestException, OSError, KeyError, subprocess.SubprocessError) as exc:
        say(f"cannot run: {type(exc).__name__}: {exc}")
        return 1
    finally:
        if stack is not None and stack.up_ok:
            stack.down()
    load = (load0, os.getloadavg()[0])
    report(rows, args, load, procs)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "loadavg": load, "rows": rows}, fh, indent=2)
    return 0
