"""Sections measured per byte streamed: logs, cp both ways, and the gateway's RSS under load."""

from __future__ import annotations

import statistics
import threading
import time

from .client import create, expect, remove, row, run_to_end, start, tar_stream, wait
from .common import MB, REQUEST_TIMEOUT, RSS_GROWTH_MB, SIDES, STREAM_RATIO, BenchError, say
from .stack import agent_pids, gateway_pids, rss_of


class StreamSections:
    """Logs, cp and the gateway's RSS: streamed bytes (a Bench mixin)."""

    def _read(self, name: str, path: str, params: dict) -> tuple[int, float]:
        side, s = self.sides[name], self.sessions[name]
        t0 = time.perf_counter()
        # identity: dockerd gzips archives for clients that accept it (requests and Go's client
        # do by default), and a file of one repeated byte would then cross the wire as a few
        # hundred KB; the bench measures the bytes that really flow through each hop.
        with s.get(
            side.url(path),
            params=params,
            stream=True,
            timeout=REQUEST_TIMEOUT,
            headers={"Accept-Encoding": "identity"},
        ) as r:
            if r.status_code != 200:
                raise BenchError(f"GET {path} via {name} answered {r.status_code}: {r.text[:200]}")
            if r.headers.get("Content-Encoding", "identity") != "identity":
                raise BenchError(f"GET {path} via {name} came {r.headers['Content-Encoding']}-encoded")
            total = 0
            for chunk in r.raw.stream(1 << 20, decode_content=False):
                total += len(chunk)
        return total, time.perf_counter() - t0

    def _put(self, name: str, path: str, params: dict, size: int) -> float:
        side, s = self.sides[name], self.sessions[name]
        t0 = time.perf_counter()
        r = s.put(
            side.url(path),
            params=params,
            data=tar_stream(size),
            timeout=REQUEST_TIMEOUT,
            headers={"Content-Type": "application/x-tar"},
        )
        expect(r, 200)
        return time.perf_counter() - t0

    def _compare_reads(self, label: str, path: str, params: dict, size: int) -> None:
        reps = self.p["stream_reps"]
        got, mbps = {}, {"direct": [], "moorage": []}
        self._read("direct", path, params)  # warm the page cache; not counted
        for i in range(reps):
            for name in SIDES[::-1] if i % 2 == 0 else SIDES:
                total, dt = self._read(name, path, params)
                if total < size:
                    raise BenchError(f"{label} via {name}: {total} bytes, expected at least {size}")
                got[name] = total
                mbps[name].append(total / MB / dt)
        self._stream_rows(label, mbps, note=f"{got['moorage'] / MB:.0f} MB read, median of {reps}")

    def _stream_rows(self, label: str, mbps: dict, note: str) -> None:
        d, m = statistics.median(mbps["direct"]), statistics.median(mbps["moorage"])
        self.rows.append(
            row(
                "streams",
                label,
                "MB/s",
                d,
                m,
                better="higher",
                target=f">={STREAM_RATIO:.2f}x",
                result="PASS" if m >= STREAM_RATIO * d else "MISS",
                note=note,
            )
        )
        self.extra.setdefault("streams_mbps", {})[label] = mbps
        say(f"{label}: direct {d:.0f} MB/s, moorage {m:.0f} MB/s")

    def logs(self) -> None:
        size = self.p["stream_mb"] * MB
        gw, gs = self.sides["moorage"], self.sessions["moorage"]
        say(f"writing {size // MB} MB of logs")
        cid = self.keep(create(gw, gs, ["sh", "-c", f"head -c {size} /dev/zero | tr '\\0' a"]))
        start(gw, gs, cid)
        if wait(gw, gs, cid, timeout=600) != 0:
            raise BenchError("the log writer failed")
        self._compare_reads(
            f"docker logs {size // MB} MB", f"/containers/{cid}/logs", {"stdout": "1", "stderr": "1"}, size
        )
        remove(gw, gs, cid, force=True)
        self.created["moorage"].remove(cid)

    def cp(self) -> None:
        size = self.p["stream_mb"] * MB
        gw, gs = self.sides["moorage"], self.sessions["moorage"]
        say(f"writing a {size // MB} MB file in a container")
        cid = self.keep(run_to_end(gw, gs, ["sh", "-c", f"head -c {size} /dev/zero > /big"]))
        self._compare_reads(
            f"docker cp out {size // MB} MB", f"/containers/{cid}/archive", {"path": "/big"}, size
        )
        reps = self.p["stream_reps"]
        mbps = {"direct": [], "moorage": []}
        self._put("direct", f"/containers/{cid}/archive", {"path": "/tmp"}, size)  # warm-up
        for i in range(reps):
            for name in SIDES[::-1] if i % 2 == 0 else SIDES:
                dt = self._put(name, f"/containers/{cid}/archive", {"path": "/tmp"}, size)
                mbps[name].append(size / MB / dt)
        self._stream_rows(
            f"docker cp in {size // MB} MB", mbps, note=f"chunked from a generator, median of {reps}"
        )
        remove(gw, gs, cid, force=True)
        self.created["moorage"].remove(cid)

    # -- memory while streaming -------------------------------------------------------------------
    def rss(self) -> None:
        size = self.p["rss_mb"] * MB
        pids = gateway_pids(self.config_path)
        if not pids:
            raise BenchError(
                f"no gateway process found (cmdline with moorage, serve and {self.config_path}); "
                "is the stack on this machine?"
            )
        agents = agent_pids(self.env["MOORAGE_DIRECT_HOST"])
        gw, gs = self.sides["moorage"], self.sessions["moorage"]
        say(f"writing {size // MB} MB of logs for the memory run")
        cid = self.keep(run_to_end(gw, gs, ["sh", "-c", f"head -c {size} /dev/zero | tr '\\0' a"]))
        groups = {"gateway": pids, "agent": agents}
        time.sleep(0.5)
        before = {g: rss_of(p) for g, p in groups.items()}
        peak_each = {g: dict(v) for g, v in before.items()}
        peak_total = {g: sum(v.values()) for g, v in before.items()}
        stop = threading.Event()
        samples = [0]

        def sampler() -> None:
            while not stop.is_set():
                samples[0] += 1
                for g, group_pids in groups.items():
                    now = rss_of(group_pids)
                    for pid, kb in now.items():
                        peak_each[g][pid] = max(peak_each[g].get(pid, 0), kb)
                    peak_total[g] = max(peak_total[g], sum(now.values()))
                stop.wait(0.02)

        t = threading.Thread(target=sampler, daemon=True)
        t.start()
        try:
            total, dt = self._read("moorage", f"/containers/{cid}/logs", {"stdout": "1", "stderr": "1"})
        finally:
            stop.set()
            t.join()
        time.sleep(2)
        after = {g: rss_of(p) for g, p in groups.items()}
        remove(gw, gs, cid, force=True)
        self.created["moorage"].remove(cid)
        if total < size:
            raise BenchError(f"memory run: read {total} bytes, expected at least {size}")
        self.extra["rss"] = {"stream_bytes": total, "stream_mbps": total / MB / dt, "samples": samples[0]}
        for g, group_pids in groups.items():
            if not group_pids:
                continue
            b, p, a = sum(before[g].values()) / 1024, peak_total[g] / 1024, sum(after[g].values()) / 1024
            growth = p - b
            per_proc = {
                pid: {
                    "before_mb": round(before[g].get(pid, 0) / 1024, 1),
                    "peak_mb": round(peak_each[g].get(pid, 0) / 1024, 1),
                    "after_mb": round(after[g].get(pid, 0) / 1024, 1),
                }
                for pid in group_pids
            }
            worst = max(v["peak_mb"] - v["before_mb"] for v in per_proc.values())
            label = f"{g} RSS, {total / MB:.0f} MB log stream"
            note = f"{len(group_pids)} process(es), sum; worst one +{worst:.1f} MB"
            if g == "gateway":
                self.rows.append(row("rss", f"{label}: before", "MB", None, b, note=note))
                self.rows.append(row("rss", f"{label}: peak", "MB", None, p))
                self.rows.append(row("rss", f"{label}: after", "MB", None, a))
                self.rows.append(
                    row(
                        "rss",
                        f"{label}: growth",
                        "MB",
                        None,
                        growth,
                        target=f"<{RSS_GROWTH_MB:g} MB",
                        result="PASS" if growth < RSS_GROWTH_MB else "MISS",
                        note=f"stream ran at {total / MB / dt:.0f} MB/s; {samples[0]} samples",
                    )
                )
            else:  # informational: the agent carries the same bytes
                self.rows.append(
                    row(
                        "rss",
                        f"{label}: growth",
                        "MB",
                        None,
                        growth,
                        note=f"before {b:.1f}, peak {p:.1f}, after {a:.1f} MB (no target)",
                    )
                )
            self.extra["rss"][g] = {
                "pids": per_proc,
                "before_mb": b,
                "peak_mb": p,
                "after_mb": a,
                "growth_mb": growth,
            }
            say(f"{g} RSS: before {b:.1f} MB, peak {p:.1f} MB, after {a:.1f} MB")
