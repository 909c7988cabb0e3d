"""Many concurrent clients in one process: gevent greenlets, each with its own raw keep-alive
connection (raw.py), cycling through a few paths for a fixed time. With ``unique`` in SPEC every
request carries an X-Request-Id of its own, so that no two are alike (the gateway replays a
repeated read, gateway/replay.py; dockerd ignores the header).

bench/run starts it as a child process (`python3 -m moorage_bench.run.hammer SPEC`, SPEC a JSON
object) once per side, so that gevent's monkey-patching stays out of the bench itself and the
client's own CPU can be read from its rusage. It prints one JSON object: requests answered 200,
errors (other statuses or broken connections, with a few samples), latency p50/p99, req/s and
the CPU the client process used.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402 (after monkey-patching, as gevent requires)
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402

from .raw import Conn  # noqa: E402
from .report import pct  # noqa: E402


def hammer(spec: dict) -> dict:
    clients, duration, paths = spec["clients"], spec["duration"], spec["paths"]
    go = Event()
    deadline = [0.0]
    out = {"ok": 0, "errors": 0, "samples": [], "lat": []}

    def client(k: int) -> None:
        conn = Conn(spec["endpoint"], spec["headers"], prefix=spec["prefix"], timeout=30)
        try:
            conn.connect()
        except OSError as exc:
            out["errors"] += 1
            out["samples"].append(f"connect: {exc}")
            return
        go.wait()
        i = k
        lat = out["lat"]
        unique = bool(spec.get("unique"))
        run = os.getpid()  # another run's requests are not these
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline[0]:
                break
            path = paths[i % len(paths)]
            i += 1
            try:
                headers = {"X-Request-Id": f"bench-{run}-{k}-{i}"} if unique else None
                r = conn.request("GET", path, headers=headers)
            except OSError as exc:
                conn.close()
                out["errors"] += 1
                if len(out["samples"]) < 5:
                    out["samples"].append(f"{type(exc).__name__}: {str(exc)[:100]}")
                continue
            if r.status == 200:
                out["ok"] += 1
                lat.append((time.perf_counter() - t0) * 1000)
                # A greenlet whose answers are already buffered would otherwise run on without
                # yielding and starve the others, which shows as a p99 of the client, not the server.
                gevent.sleep(0)
            else:
                out["errors"] += 1
                if len(out["samples"]) < 5:
                    out["samples"].append(f"HTTP {r.status}: {r.text()[:100]}")
        conn.close()

    greenlets = [gevent.spawn(client, k) for k in range(clients)]
    gevent.sleep(0.5)  # let every client connect before the clock starts
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    deadline[0] = t0 + duration
    go.set()
    gevent.joinall(greenlets, timeout=duration + 60)
    elapsed = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    lat = out["lat"] or [float("nan")]
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return {
        "clients": clients,
        "ok": out["ok"],
        "errors": out["errors"],
        "samples": out["samples"],
        "seconds": round(elapsed, 3),
        "rps": out["ok"] / elapsed,
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "client_cpu_ms_per_req": cpu * 1000 / max(out["ok"] + out["errors"], 1),
    }


if __name__ == "__main__":
    print(json.dumps(hammer(json.loads(sys.argv[1]))))
