"""Sections measured per byte streamed: logs (100-byte lines and long lines), attach, cp both
ways; and the gateway's RSS while they run (growth per GB streamed through it).
"""

from __future__ import annotations

import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .common import MB, RSS_MB_PER_GB, SIDES, STREAM_RATIO, BenchError, say
from .report import median, row
from .stack import cpu_seconds, every_agent_pid, gateway_pids, rss_of

LONG_WAIT = 900  # seconds a writer container may take (200 MB of 100-byte lines into json-file)
LINE = "a" * 99  # `yes LINE` prints LINE and a newline: 100-byte lines


def tar_stream(size: int, name: str = "moorage-bench.bin") -> Iterator[bytes]:
    """A tar archive of one `size`-byte file, produced as it is sent (never held whole)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = int(time.time())
    yield info.tobuf(format=tarfile.USTAR_FORMAT)
    block = b"a" * (1 << 20)
    left = size
    while left > 0:
        n = min(left, len(block))
        yield block if n == len(block) else block[:n]
        left -= n
    yield b"\0" * ((-size) % 512 + 1024)


def _discard(_: bytes) -> None:
    pass


class StreamSections:
    """Logs, attach, cp; the gateway's RSS (a Bench mixin)."""

    # -- one streamed figure, `repeat` times, the sides alternating which goes first --------------
    def _stream_figure(
        self, label: str, size: int, once: Callable[[str], tuple[int, float]], note: str
    ) -> None:
        reps = self.p["repeat"]
        mbps: dict[str, list[float]] = {name: [] for name in SIDES}
        cpu: dict[str, list[float]] = {name: [] for name in SIDES}
        # The relays' CPU per MB through Moorage: steadier than its MB/s, which moves with
        # whatever else the machine's 2 CPUs run (the ratio is of two such rates).
        relays = {"gateway": gateway_pids(self.config_path), "agent": every_agent_pid()}
        relay_cpu: dict[str, list[float]] = {g: [] for g in relays}
        with self.rss_watch():
            for i in range(reps):
                for name in self.order(i):
                    before = {g: cpu_seconds(p) for g, p in relays.items()} if name == "moorage" else {}
                    c0 = time.thread_time()
                    try:
                        total, seconds = once(name)
                    except (OSError, BenchError) as exc:
                        # The figure's row still shows what was measured, and why it stopped.
                        failed = f"failed via {name} in repetition {i + 1}: {type(exc).__name__}: {exc}"
                        self.rows.append(
                            row(
                                "streams",
                                label,
                                "MB/s",
                                median(mbps["direct"]),
                                float("nan"),
                                ("min_ratio", STREAM_RATIO),
                                failed,
                                mbps,
                            )
                        )
                        raise
                    cpu[name].append((time.thread_time() - c0) / max(total / MB, 1e-9) * 1000)
                    if total < size:
                        raise BenchError(f"{label} via {name}: {total} bytes, expected at least {size}")
                    if name == "moorage":
                        self.streamed_moorage += total
                        for g, p in relays.items():
                            relay_cpu[g].append((cpu_seconds(p) - before[g]) * 1000 / (total / MB))
                    mbps[name].append(total / MB / seconds)
        d, m = median(mbps["direct"]), median(mbps["moorage"])
        client = f"client {median(cpu['direct']):.1f}/{median(cpu['moorage']):.1f} ms CPU per MB"
        client += "; gateway {:.2f} + agent {:.2f} ms CPU per MB".format(
            *(median(relay_cpu[g]) for g in ("gateway", "agent"))
        )
        self.rows.append(
            row(
                "streams",
                label,
                "MB/s",
                d,
                m,
                ("min_ratio", STREAM_RATIO),
                f"{note}; median of {reps}; {client}",
                mbps,
            )
        )
        say(f"{label}: dockerd {d:.1f} MB/s, moorage {m:.1f} MB/s ({client})")

    def _read(self, name: str, path: str, params: dict) -> tuple[int, float]:
        # identity: dockerd gzips archives for clients that accept gzip, and a file of one byte
        # repeated would then cross the wire as a few hundred KB.
        t0 = time.perf_counter()
        r = self.call(
            name, "GET", path, 200, params=params, headers={"Accept-Encoding": "identity"}, sink=_discard
        )
        if r.headers.get("content-encoding", "identity") != "identity":
            raise BenchError(f"GET {path} via {name} came {r.headers['content-encoding']}-encoded")
        return r.length, time.perf_counter() - t0

    # -- logs -------------------------------------------------------------------------------------
    def logs(self) -> None:
        for mb_key, shape, cmd in (
            ("long_logs_mb", "long lines", "head -c {size} /dev/zero | tr '\\0' a"),
            ("logs_mb", "100-byte lines", f"yes {LINE} | head -c {{size}}"),
        ):
            size = self.p[mb_key] * MB
            say(f"writing {size // MB} MB of logs in {shape}")
            t0 = time.perf_counter()
            cid = self.run_kept(["sh", "-c", cmd.format(size=size)], timeout=LONG_WAIT)
            say(f"written in {time.perf_counter() - t0:.0f} s")
            path, params = f"/containers/{cid}/logs", {"stdout": "1", "stderr": "1"}
            self._read("direct", path, params)  # warm the page cache; not counted
            self._stream_figure(
                f"logs, {size // MB} MB in {shape}",
                size,
                lambda name, path=path, params=params: self._read(name, path, params),
                "json-file log read to its end",
            )
            self.drop(cid)

    # -- attach -----------------------------------------------------------------------------------
    def attach(self) -> None:
        size = self.p["attach_mb"] * MB
        self._stream_figure(
            f"attach, {size // MB} MB of stdout",
            size,
            lambda name: self._attach_once(name, size),
            "from the first byte to the container's exit",
        )

    def _attach_once(self, name: str, size: int) -> tuple[int, float]:
        cid = self.create(
            name,
            ["sh", "-c", f"head -c {size} /dev/zero"],
            AttachStdout=True,
            AttachStderr=True,
        )
        self.created.append(cid)
        stream = self.conn(name)
        try:
            head = stream.hijack_open(f"/containers/{cid}/attach?stream=1&stdout=1&stderr=1")
            if head.status not in (101, 200):
                raise BenchError(f"attach via {name} answered {head.status}")
            self.start(name, cid)
            resp = stream.hijack_read(head)
            end = time.perf_counter()
        finally:
            stream.close()
        self.remove(name, cid, force=True)
        self.created.remove(cid)
        return resp.length, max(end - resp.first_byte, 1e-9)

    # -- cp both ways -----------------------------------------------------------------------------
    def cp(self) -> None:
        size = self.p["cp_mb"] * MB
        say(f"writing a {size // MB} MB file in a container")
        cid = self.run_kept(["sh", "-c", f"head -c {size} /dev/zero > /big"], timeout=LONG_WAIT)
        path = f"/containers/{cid}/archive"
        self._read("direct", path, {"path": "/big"})  # warm-up; not counted
        self._stream_figure(
            f"cp out (GET archive), {size // MB} MB",
            size,
            lambda name: self._read(name, path, {"path": "/big"}),
            "a tar of one file",
        )

        def put(name: str) -> tuple[int, float]:
            t0 = time.perf_counter()
            self.call(
                name,
                "PUT",
                path,
                200,
                params={"path": "/tmp"},
                body=tar_stream(size),
                headers={"Content-Type": "application/x-tar"},
            )
            return size, time.perf_counter() - t0

        put("direct")  # warm-up; not counted
        self._stream_figure(f"cp in (PUT archive), {size // MB} MB", size, put, "sent chunked, 1 MiB pieces")
        self.drop(cid)

    # -- the gateway's RSS while streams flow -----------------------------------------------------
    @contextmanager
    def rss_watch(self):
        """Sample the gateway's RSS (master + workers, summed) every 20 ms while streams run."""
        state = self.extra.setdefault("rss", {})
        pids = state.get("pids") or gateway_pids(self.config_path)
        if not pids:
            say("no gateway process found on this machine: no RSS figures")
            yield
            return
        state["pids"] = pids
        now = sum(rss_of(pids).values()) / 1024
        state.setdefault("before_mb", now)
        state["peak_mb"] = max(state.get("peak_mb", now), now)
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                state["peak_mb"] = max(state["peak_mb"], sum(rss_of(pids).values()) / 1024)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()
            state["after_mb"] = sum(rss_of(pids).values()) / 1024

    def rss_rows(self) -> None:
        """After the streams: the gateway's RSS growth per GB streamed through it."""
        state = self.extra.get("rss") or {}
        if "before_mb" not in state or not self.streamed_moorage:
            return
        gb = self.streamed_moorage / 1e9
        growth = state["peak_mb"] - state["before_mb"]
        state["streamed_gb"] = gb
        self.rows.append(
            row(
                "streams",
                "gateway RSS growth per GB streamed",
                "MB",
                None,
                growth / gb,
                # Under 1 GB a few MB of buffers extrapolate to a large figure: not judged.
                ("max", RSS_MB_PER_GB) if gb >= 1 else None,
                ("" if gb >= 1 else "not judged under 1 GB; ")
                + f"peak {state['peak_mb']:.0f} MB - before {state['before_mb']:.0f} MB = {growth:.1f} MB "
                f"over {gb:.2f} GB; after {state['after_mb']:.0f} MB",
            )
        )
