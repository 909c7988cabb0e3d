"""Sections that load the servers: image save and load, 200 concurrent clients, and the flame
graphs of the hot paths (--profile).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import subprocess
import sys
import tarfile
import threading
import time

from .. import REPO
from .common import CONCURRENCY_RATIO, MB, P99_ADDED_MS, SIDES, BenchError, say
from .profiles import summarize
from .report import median, row
from .stack import agent_pids, gateway_pids, parent_pid

BENCH_DIR = os.path.join(REPO, "bench")
PROFILES_DIR = os.path.join(BENCH_DIR, "profiles")
IMAGE_TAG = "moorage-bench-big:latest"


def image_archive(size: int) -> tuple[bytes, str]:
    """A `docker save` archive of a one-layer image holding `size` random bytes, and its ID.

    Random bytes, so that no hop's compression could flatter a side.
    """

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))

    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.USTAR_FORMAT) as layer:
        add(layer, "big", os.urandom(size))
    layer_tar = layer_buf.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["true"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "bench/run"}],
            "created": "2026-01-01T00:00:00Z",
        }
    ).encode()
    config_id = hashlib.sha256(config).hexdigest()
    layer_dir = diff_id.split(":", 1)[1]
    manifest = [
        {"Config": f"{config_id}.json", "RepoTags": [IMAGE_TAG], "Layers": [f"{layer_dir}/layer.tar"]}
    ]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        add(tar, f"{config_id}.json", config)
        add(tar, f"{layer_dir}/layer.tar", layer_tar)
        add(tar, "manifest.json", json.dumps(manifest).encode())
    return out.getvalue(), "sha256:" + config_id


class LoadSections:
    """save/load, concurrency, profile (a Bench mixin)."""

    # -- docker save / docker load ----------------------------------------------------------------
    def saveload(self) -> None:
        size = self.p["image_mb"] * MB
        archive, image_id = image_archive(size)
        self.images.append(image_id)

        def load(name: str) -> tuple[int, float]:
            t0 = time.perf_counter()
            r = self.call(
                name,
                "POST",
                "/images/load",
                200,
                params={"quiet": "1"},
                body=archive,
                headers={"Content-Type": "application/x-tar"},
            )
            seconds = time.perf_counter() - t0
            if b"errorDetail" in r.body:
                raise BenchError(f"load via {name}: {r.text()}")
            return len(archive), seconds

        load("direct")  # the first load unpacks the layer; the figures are of later loads
        load("moorage")
        self._stream_figure(
            f"load, {len(archive) // MB} MB image", len(archive), load, "random bytes, layer present"
        )
        refs = {"direct": image_id, "moorage": self._moorage_ref(image_id)}
        self._stream_figure(
            f"save, {len(archive) // MB} MB image",
            size,
            lambda name: self._read(name, f"/images/{refs[name]}/get", {}),
            f"by {'ID' if refs['moorage'] == image_id else 'tag through the gateway'}",
        )

    def _moorage_ref(self, image_id: str) -> str:
        """The name the gateway knows the loaded image by: its ID if the tenant may use that."""
        if self.call("moorage", "GET", f"/images/{image_id}/json").status == 200:
            return image_id
        if self.call("moorage", "GET", f"/images/{IMAGE_TAG}/json").status == 200:
            return IMAGE_TAG
        raise BenchError(f"the gateway knows the loaded image neither as {image_id[:19]} nor as {IMAGE_TAG}")

    # -- 200 concurrent clients -------------------------------------------------------------------
    def concurrency(self) -> None:
        target = self.create("moorage", ["sleep", "3600"])
        self.created.append(target)
        self.start("moorage", target)
        paths = ["/containers/json", f"/containers/{target}/json"]
        # The same requests again and again (as a polling client sends them), then every request
        # unlike the last (an X-Request-Id each): nothing replays, the gateway's whole path.
        for unique in (False, True):
            self._concurrency(paths, unique)
        self.drop(target)

    def _concurrency(self, paths: list[str], unique: bool) -> None:
        clients, duration, reps = self.p["clients"], self.p["duration"], self.p["repeat"]
        runs: dict[str, list[dict]] = {name: [] for name in SIDES}
        for r in range(reps):
            for name in self.order(r):
                spec = {
                    "unique": unique,
                    "endpoint": self.endpoints[name],
                    "headers": self.headers[name],
                    "prefix": f"/v{self.api}",
                    "paths": paths,
                    "clients": clients,
                    "duration": duration,
                }
                proc = subprocess.run(
                    [sys.executable, "-m", "moorage_bench.run.hammer", json.dumps(spec)],
                    cwd=BENCH_DIR,
                    capture_output=True,
                    text=True,
                    timeout=duration + 120,
                )
                if proc.returncode != 0:
                    raise BenchError(f"the concurrent client failed: {proc.stderr.strip()[-500:]}")
                res = json.loads(proc.stdout)
                runs[name].append(res)
                say(
                    f"{clients} clients via {name}{' (each request new)' if unique else ''}: "
                    f"{res['rps']:.0f} req/s, {res['errors']} errors, p99 {res['p99']:.1f} ms"
                )
        fig = {
            name: {
                k: median([x[k] for x in runs[name]]) for k in ("rps", "p50", "p99", "client_cpu_ms_per_req")
            }
            for name in SIDES
        }
        errors = {name: sum(x["errors"] for x in runs[name]) for name in SIDES}
        samples = [s for x in runs["moorage"] for s in x["samples"]][:3]
        label = f"{clients} clients (ps + inspect{', each request new' if unique else ''})"
        self.rows += [
            row(
                "concurrency",
                f"{label} req/s",
                "req/s",
                fig["direct"]["rps"],
                fig["moorage"]["rps"],
                None if unique else ("min_ratio", CONCURRENCY_RATIO),
                f"{duration:g} s per side, median of {reps}; gevent greenlets, raw sockets, no extra hop"
                + ("; nothing replays: the gateway's whole path, no target" if unique else ""),
                {name: [x["rps"] for x in runs[name]] for name in SIDES},
            ),
            row(
                "concurrency",
                f"{label} errors",
                "errors",
                errors["direct"],
                errors["moorage"],
                ("zero", 0),
                "; ".join(samples),
            ),
            row("concurrency", f"{label} p50", "ms", fig["direct"]["p50"], fig["moorage"]["p50"]),
            row(
                "concurrency",
                f"{label} p99",
                "ms",
                fig["direct"]["p99"],
                fig["moorage"]["p99"],
                note=f"no target here (the single-client p99 is <= +{P99_ADDED_MS:g} ms)",
            ),
            row(
                "concurrency",
                f"{label} client CPU per request",
                "ms CPU",
                fig["direct"]["client_cpu_ms_per_req"],
                fig["moorage"]["client_cpu_ms_per_req"],
                note="the client process's rusage: it shares the 2 CPUs with the servers",
            ),
        ]
        self.extra["concurrency-unique" if unique else "concurrency"] = runs

    # -- flame graphs ------------------------------------------------------------------------------
    def profile(self) -> None:
        """py-spy flame graphs of the gateway (master + workers) and the agent while ps, inspect
        and logs run through the gateway, into bench/profiles/: ps and inspect as a polling
        client sends them (the same request: the gateway replays it), and each request new
        (an X-Request-Id of its own: the gateway's whole path, what the CPU target measures)."""
        seconds = 4 if self.mode == "quick" else 10
        os.makedirs(PROFILES_DIR, exist_ok=True)
        gw = gateway_pids(self.config_path)
        agents = agent_pids(self.env["MOORAGE_DIRECT_HOST"])
        if not gw or not agents:
            raise BenchError(
                "the profile needs the gateway and agent on this machine (py-spy attaches to them)"
            )
        master = next(p for p in gw if parent_pid(p) not in gw)
        target = self.create("moorage", ["sleep", "3600"])
        self.created.append(target)
        self.start("moorage", target)
        logs = self.run_kept(["sh", "-c", f"yes {'a' * 99} | head -c {50 * MB}"], timeout=900)
        loads = {
            "ps": lambda c: c.request("GET", "/containers/json"),
            "inspect": lambda c: c.request("GET", f"/containers/{target}/json"),
            "ps-new": lambda c: c.request("GET", "/containers/json", headers=_new_request()),
            "inspect-new": lambda c: c.request("GET", f"/containers/{target}/json", headers=_new_request()),
            "logs": lambda c: c.request(
                "GET", f"/containers/{logs}/logs?stdout=1&stderr=1", sink=lambda b: None
            ),
        }
        summary: list[str] = []
        for name, one in loads.items():
            stop = threading.Event()
            count = [0]

            def drive(one=one, stop=stop, count=count) -> None:
                conn = self.conn("moorage")
                while not stop.is_set():
                    one(conn)
                    count[0] += 1
                conn.close()

            t = threading.Thread(target=drive, daemon=True)
            t.start()
            procs = [
                self._spy(["--pid", str(pid), *more], f"{name}-{who}", fmt, seconds)
                for who, pid, more in (("gateway", master, ["--subprocesses"]), ("agent", agents[0], []))
                for fmt in ("flamegraph", "raw")
            ]
            for p in procs:
                _, err = p.communicate(timeout=seconds + 60)
                if p.returncode != 0:
                    raise BenchError(f"py-spy failed: {err.strip()[-300:]}")
            stop.set()
            t.join(timeout=120)
            done = f"{count[0]} {name} requests through the gateway in {seconds} s"
            say(f"profiled {done}")
            for who in ("gateway", "agent"):
                text = summarize(os.path.join(PROFILES_DIR, f"{name}-{who}.folded"))
                summary.append(f"== {name}, {who} ({done})\n{text}")
        with open(os.path.join(PROFILES_DIR, "summary.txt"), "w") as fh:
            fh.write(
                "bench/run --profile: py-spy on the gateway (gunicorn master + workers) and the agent\n"
                f"while one client loops each request through the gateway; load average {os.getloadavg()}\n\n"
            )
            fh.write("\n".join(summary))
        say("bench/profiles/: flame graphs (NAME-gateway.svg, NAME-agent.svg), stacks, summary.txt")
        self.drop(logs)
        self.drop(target)

    @staticmethod
    def _spy(who: list[str], name: str, fmt: str, seconds: int) -> subprocess.Popen:
        out = os.path.join(PROFILES_DIR, f"{name}.{'svg' if fmt == 'flamegraph' else 'folded'}")
        cmd = ["py-spy", "record", *who, "--duration", str(seconds), "--rate", "200", "--nonblocking"]
        cmd += ["--format", fmt, "--output", out]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _new_request() -> dict[str, str]:
    """Headers that make a request unlike any before it (dockerd ignores X-Request-Id)."""
    return {"X-Request-Id": f"bench-{secrets.token_hex(8)}"}
