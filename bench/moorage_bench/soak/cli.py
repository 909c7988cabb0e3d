"""bench/soak: many concurrent clients for minutes through two replicas; do latency and the
gateway's memory, file descriptors and greenlets stay flat?

    bench/soak [--env DIR/env] [--clients N] [--minutes D] [--containers K] [--think S]
               [--json FILE]

N clients (default 200, threads, each with its own keep-alive connection) run for D minutes
(default 10), half as tenant alpha and half as beta, spread over every replica in
MOORAGE_GATEWAYS. Each picks an operation at random, waits S seconds (default 1, 0.5 S to
1.5 S at random) and picks again:

    ps       30 %   GET /containers/json
    inspect  25 %   GET /containers/ID/json of one of its tenant's K running containers
    logs     20 %   GET /containers/ID/logs?tail=20 of the same
    exec     15 %   exec create + start (`echo soak`), the output read
    run      10 %   create, start, wait and remove of `busybox true`

Any answer the daemon would not give here (every one of these succeeds on a healthy stack)
is an error: an exception, a timeout, a status other than the operation's success. Each
minute it prints the requests, errors, p50 and p99 latency (an operation's whole time: for
exec and run, every call of it), and, sampled at the minute's end, the gateway's RSS and open
file descriptors (every replica's master and workers, from /proc) and greenlets (the sum of
every replica's moorage_greenlets) and the load average. The baseline is taken before the
clients start, and again 65 s after they stop (each worker counts its greenlets once a
minute, gateway/upkeep.py). Without --env it brings up its own stack (scripts/devstack up --hosts 2
--postgres --replicas 2) and takes it down at the end. It exits 0 whatever the figures, 1 if
it could not take them. See bench/README.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as _dt
import json
import math
import os
import random
import subprocess
import threading
import time
import urllib.parse

import requests

from ..run.client import Side, expect, pct
from ..run.common import BENCH_LABEL, IMAGE, BenchError, read_env, say
from ..run.stack import OwnStack, gateway_config_path, gateway_pids, rss_of

OPS = (("ps", 30), ("inspect", 25), ("logs", 20), ("exec", 15), ("run", 10))
TENANTS = ("alpha", "beta")
AGENT_PORT = 2376  # where the gateway reaches each agent (devstack's, and the default)
TIMEOUT = 120  # seconds a call may take before it counts as an error (a hang)
SETTLE = 65  # seconds after the clients stop before the last sample (greenlets: once a minute)


def sides(env: dict[str, str]) -> dict[str, list[Side]]:
    """Per tenant, one Side per replica."""
    out = {}
    for tenant in TENANTS:
        with open(os.path.join(env[f"MOORAGE_CONFIG_{tenant}"], "config.json")) as fh:
            headers = json.load(fh)["HttpHeaders"]
        gateways = env.get("MOORAGE_GATEWAYS", "").split() or [env["DOCKER_HOST"]]
        out[tenant] = [Side(tenant, g, headers, "1.41") for g in gateways]
    return out


class Client:
    """One client: its tenant, replica, container and random stream of operations."""

    def __init__(self, k: int, side: Side, container: str, deadline: float, think: float, record):
        self.side, self.container, self.deadline, self.think = side, container, deadline, think
        self.rng = random.Random(k)
        self.record = record
        self.ops = [name for name, weight in OPS for _ in range(weight)]

    def call(self, s: requests.Session, method: str, path: str, ok: int, **kw) -> requests.Response:
        r = s.request(method, self.side.url(path), timeout=TIMEOUT, **kw)
        if r.status_code != ok:
            what = path.partition("?")[0]
            raise BenchError(f"{method} {what} {r.status_code}: {r.text[:120].strip()}")
        return r

    def one(self, s: requests.Session, op: str) -> None:
        cid = self.container
        if op == "ps":
            self.call(s, "GET", "/containers/json", 200).json()
        elif op == "inspect":
            self.call(s, "GET", f"/containers/{cid}/json", 200).json()
        elif op == "logs":
            _ = self.call(s, "GET", f"/containers/{cid}/logs?stdout=1&tail=20", 200).content
        elif op == "exec":
            body = {"Cmd": ["echo", "soak"], "AttachStdout": True}
            eid = self.call(s, "POST", f"/containers/{cid}/exec", 201, json=body).json()["Id"]
            out = self.call(s, "POST", f"/exec/{eid}/start", 200, json={"Detach": False}).content
            if b"soak" not in out:
                raise BenchError(f"exec start: output {out[:80]!r}")
        else:
            body = {"Image": IMAGE, "Cmd": ["true"], "Labels": {BENCH_LABEL: "1"}}
            new = self.call(s, "POST", "/containers/create", 201, json=body).json()["Id"]
            try:
                self.call(s, "POST", f"/containers/{new}/start", 204)
                code = self.call(s, "POST", f"/containers/{new}/wait", 200).json()["StatusCode"]
                if code != 0:
                    raise BenchError(f"run: exit {code}")
            finally:
                self.call(s, "DELETE", f"/containers/{new}?force=1", 204)

    def run(self) -> None:
        s = self.side.session()
        time.sleep(self.rng.uniform(0, self.think))  # the clients' first calls spread out
        while time.monotonic() < self.deadline:
            op = self.rng.choice(self.ops)
            t0 = time.monotonic()
            error = None
            try:
                self.one(s, op)
            except (BenchError, requests.RequestException, ValueError, KeyError) as exc:
                error = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"[:160]
                s.close()
                s = self.side.session()  # a broken connection is not reused
            self.record(t0, op, time.monotonic() - t0, error)
            time.sleep(self.rng.uniform(0.5, 1.5) * self.think)
        s.close()


def tcp_sockets(pid: int) -> dict[int, tuple[int, int, str]]:
    """inode -> (local port, remote port, state) of the TCP sockets in pid's network namespace."""
    table = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{name}") as fh:
            next(fh)
            for line in fh:
                f = line.split()
                local, remote = int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16)
                table[int(f[9])] = (local, remote, f[3])
    return table


def open_fds(pids: list[int], database_port: int) -> collections.Counter:
    """The gateway's open file descriptors by kind: a leak shows in "clients" (connections
    the clients closed, still held) or "files"; "database" and "agents" are the connection
    pools (up to a pool's size per worker), "listening" and the rest are fixed."""
    kinds: collections.Counter = collections.Counter()
    table = tcp_sockets(pids[0]) if pids else {}
    listening = {local for local, _, state in table.values() if state == "0A"}
    for pid in pids:
        with contextlib.suppress(OSError):  # a worker that just exited
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if not target.startswith("socket:["):
                        kinds["files"] += 1
                        continue
                    local, remote, state = table.get(int(target[8:-1]), (0, 0, ""))
                    if not state:
                        kinds["unix"] += 1
                    elif state == "0A":
                        kinds["listening"] += 1
                    elif local in listening:
                        kinds["clients"] += 1
                    elif remote == database_port:
                        kinds["database"] += 1
                    elif remote == AGENT_PORT:
                        kinds["agents"] += 1
                    else:
                        kinds["other"] += 1
    return kinds


def database_port(config: str) -> int:
    import tomllib

    with open(config, "rb") as fh:
        url = tomllib.load(fh).get("gateway", {}).get("database", "")
    return urllib.parse.urlsplit(url).port or 0 if url.startswith("postgres") else 0


def gauges(env: dict[str, str], config: str) -> dict:
    """The gateway's RSS (MB), open fds (and by kind) and greenlets now, and the load average."""
    pids = gateway_pids(config)
    kinds = open_fds(pids, database_port(config))
    fds = sum(kinds.values())
    greenlets = 0.0
    for url in env.get("MOORAGE_METRICS_URLS", "").split():
        text = requests.get(url, timeout=10).text
        greenlets += sum(
            float(line.split()[-1]) for line in text.splitlines() if line.startswith("moorage_greenlets ")
        )
    return {
        "processes": len(pids),
        "rss_mb": round(sum(rss_of(pids).values()) / 1024, 1),
        "fds": fds,
        "fds_by_kind": dict(kinds),
        "greenlets": int(greenlets),
        "load1": round(os.getloadavg()[0], 2),
    }


def containers(env: dict[str, str], by_tenant: dict[str, list[Side]], k: int) -> dict[str, list[str]]:
    """Each tenant's long-running containers (they tick once a second, so logs have lines)."""
    made: dict[str, list[str]] = {}
    for tenant, (side, *_) in by_tenant.items():
        made[tenant] = []
        with side.session() as s:
            for _ in range(max(1, k // len(TENANTS))):
                body = {
                    "Image": IMAGE,
                    "Cmd": ["sh", "-c", "while :; do echo tick; sleep 1; done"],
                    "Labels": {BENCH_LABEL: "1"},
                }
                cid = expect(s.post(side.url("/containers/create"), json=body, timeout=TIMEOUT), 201).json()[
                    "Id"
                ]
                made[tenant].append(cid)
                expect(s.post(side.url(f"/containers/{cid}/start"), timeout=TIMEOUT), 204)
    return made


def remove(by_tenant: dict[str, list[Side]], made: dict[str, list[str]]) -> None:
    """The long-running containers, and whatever a failed `run` left (the bench's label)."""
    flt = json.dumps({"label": [BENCH_LABEL]})
    for tenant, ids in made.items():
        side = by_tenant[tenant][0]
        with side.session() as s:
            with contextlib.suppress(requests.RequestException, ValueError):
                left = s.get(
                    side.url("/containers/json"), params={"all": "1", "filters": flt}, timeout=TIMEOUT
                )
                ids = list(dict.fromkeys([*ids, *(c["Id"] for c in left.json())]))
            for cid in ids:
                try:
                    s.delete(side.url(f"/containers/{cid}"), params={"force": "1"}, timeout=TIMEOUT)
                except requests.RequestException as exc:
                    say(f"could not remove {cid[:12]}: {exc}")


def soak(env: dict[str, str], args) -> dict:
    config = gateway_config_path(env)
    by_tenant = sides(env)
    say(f"{args.containers} containers to inspect, exec in and read logs of")
    made = containers(env, by_tenant, args.containers)
    try:
        time.sleep(SETTLE)
        baseline = gauges(env, config)
        say(f"baseline: {baseline}")
        samples: list[tuple[float, str, float, str | None]] = []
        lock = threading.Lock()
        start = time.monotonic()

        def record(t0: float, op: str, took: float, error: str | None) -> None:
            with lock:
                samples.append((t0 - start, op, took, error))

        deadline = start + args.minutes * 60
        clients = []
        for k in range(args.clients):
            tenant = TENANTS[k % len(TENANTS)]
            replicas = by_tenant[tenant]
            ids = made[tenant]
            client = Client(
                k,
                replicas[(k // len(TENANTS)) % len(replicas)],
                ids[k % len(ids)],
                deadline,
                args.think,
                record,
            )
            clients.append(threading.Thread(target=client.run, daemon=True))
        say(f"{args.clients} clients for {args.minutes:g} min over {len(by_tenant['alpha'])} replica(s)")
        for t in clients:
            t.start()
        minutes = []
        for m in range(math.ceil(args.minutes)):
            time.sleep(max(0.0, min(start + (m + 1) * 60, deadline) - time.monotonic()))
            g = gauges(env, config)
            minutes.append(g)
            with lock:
                this = [x for x in samples if m * 60 <= x[0] < (m + 1) * 60]
            ok = [x[2] * 1000 for x in this if x[3] is None]
            say(
                f"minute {m + 1}: {len(this)} ops, {len(this) - len(ok)} errors, p99 "
                f"{pct(ok, 99) if ok else float('nan'):.0f} ms, {g}"
            )
        for t in clients:
            t.join(timeout=TIMEOUT + 30)
        stuck = sum(t.is_alive() for t in clients)
        time.sleep(SETTLE)
        after = gauges(env, config)
    finally:
        remove(by_tenant, made)
    return {"baseline": baseline, "after": after, "minutes": minutes, "samples": samples, "stuck": stuck}


def report(result: dict, args, load: tuple[float, float]) -> dict:
    samples = result["samples"]
    rows = []
    for m, g in enumerate(result["minutes"]):
        this = [x for x in samples if m * 60 <= x[0] < (m + 1) * 60]
        ok = [x[2] * 1000 for x in this if x[3] is None]
        rows.append(
            {
                "minute": m + 1,
                "ops": len(this),
                "errors": len(this) - len(ok),
                "p50_ms": round(pct(ok, 50), 1) if ok else None,
                "p99_ms": round(pct(ok, 99), 1) if ok else None,
                **g,
            }
        )
    errors = collections.Counter(f"{op}: {e}" for _, op, _, e in samples if e is not None)
    per_op = {}
    for op, _ in OPS:
        ok = [x[2] * 1000 for x in samples if x[1] == op and x[3] is None]
        per_op[op] = {
            "n": len(ok),
            "p50_ms": round(pct(ok, 50), 1) if ok else None,
            "p99_ms": round(pct(ok, 99), 1) if ok else None,
        }
    base, after = result["baseline"], result["after"]
    print(
        f"Moorage soak, {_dt.datetime.now().isoformat(timespec='seconds')}: {os.cpu_count()} CPUs, load "
        f"average {load[0]:.2f} at start, {load[1]:.2f} at end; {args.clients} clients, "
        f"{args.minutes:g} min, "
        f"think {args.think:g} s, {args.containers} containers, {base['processes']} gateway processes"
    )
    head = ("minute", "ops", "errors", "p50 ms", "p99 ms", "RSS MB", "fds", "greenlets", "load")
    keys = ("minute", "ops", "errors", "p50_ms", "p99_ms", "rss_mb", "fds", "greenlets", "load1")
    print(" ".join(f"{h:>9}" for h in head))
    print(
        " ".join(
            f"{x!s:>9}"
            for x in (
                "base",
                "-",
                "-",
                "-",
                "-",
                base["rss_mb"],
                base["fds"],
                base["greenlets"],
                base["load1"],
            )
        )
    )
    for r in rows:
        print(" ".join(f"{r[k]!s:>9}" for k in keys))
    print(
        " ".join(
            f"{x!s:>9}"
            for x in (
                "after",
                "-",
                "-",
                "-",
                "-",
                after["rss_mb"],
                after["fds"],
                after["greenlets"],
                after["load1"],
            )
        )
    )
    print(
        "per operation: "
        + ", ".join(f"{op} n={v['n']} p50 {v['p50_ms']} p99 {v['p99_ms']} ms" for op, v in per_op.items())
    )
    total = sum(errors.values())
    print(f"errors: {total} of {len(samples)} operations" + ("" if total else " (target: 0)"))
    for text, n in errors.most_common(10):
        print(f"  {n} x {text}")
    if result["stuck"]:
        print(f"clients still in a call {TIMEOUT + 30} s after the end: {result['stuck']}")
    print(
        f"after vs baseline: fds {after['fds'] - base['fds']:+d}, "
        f"greenlets {after['greenlets'] - base['greenlets']:+d}, "
        f"RSS {after['rss_mb'] - base['rss_mb']:+.1f} MB"
    )
    kinds = sorted(set(base["fds_by_kind"]) | set(after["fds_by_kind"]))
    print(
        "fds by kind, baseline -> after: "
        + ", ".join(f"{k} {base['fds_by_kind'].get(k, 0)} -> {after['fds_by_kind'].get(k, 0)}" for k in kinds)
    )
    return {"rows": rows, "per_op": per_op, "errors": dict(errors), "baseline": base, "after": after}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", metavar="FILE", help="use this stack's env file (DIR/env)")
    ap.add_argument("--clients", type=int, default=200, help="concurrent clients (default 200)")
    ap.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    ap.add_argument(
        "--containers", type=int, default=20, help="running containers, split between tenants (default 20)"
    )
    ap.add_argument(
        "--think", type=float, default=1.0, help="mean seconds between a client's operations (default 1)"
    )
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    stack = None
    load0 = os.getloadavg()[0]
    try:
        if args.env:
            env = read_env(args.env)
        else:
            stack = OwnStack(["--hosts", "2", "--postgres", "--replicas", "2"])
            env = stack.up()
        result = soak(env, args)
    except (BenchError, requests.RequestException, OSError, KeyError, subprocess.SubprocessError) as exc:
        say(f"cannot run: {type(exc).__name__}: {exc}")
        return 1
    finally:
        if stack is not None and stack.up_ok:
            stack.down()
    figures = report(result, args, (load0, os.getloadavg()[0]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), **figures}, fh, indent=2)
    return 0
