"""The `requests`-based side, calls, rows, streamed tar and table that bench/fairness,
bench/placement, bench/streams and bench/soak use.

bench/run itself no longer uses them: it measures with raw.py's keep-alive client and reports
through report.py (requests cost about 0.6 ms a request, more than the figures it timed).
"""

from __future__ import annotations

import math
import tarfile
import time

import requests
from docker.transport import UnixHTTPAdapter

from .common import BENCH_LABEL, IMAGE, REQUEST_TIMEOUT, BenchError


class Side:
    """One way of reaching the daemon: through Moorage, or straight at it."""

    def __init__(self, name: str, endpoint: str, headers: dict[str, str], api: str):
        self.name = name
        self.endpoint = endpoint
        self.headers = headers
        self.api = api
        if endpoint.startswith("unix://"):
            self.base = "http+docker://localhost"
        elif endpoint.startswith("tcp://"):
            self.base = "http://" + endpoint[len("tcp://") :]
        else:
            raise BenchError(f"unsupported endpoint {endpoint!r}")

    def session(self) -> requests.Session:
        s = requests.Session()
        s.headers.update(self.headers)
        s.headers["User-Agent"] = "moorage-bench"
        if self.endpoint.startswith("unix://"):
            s.mount(
                "http+docker://",
                UnixHTTPAdapter("http+unix://" + self.endpoint[len("unix://") :], timeout=REQUEST_TIMEOUT),
            )
        return s

    def url(self, path: str) -> str:
        return f"{self.base}/v{self.api}{path}"


def expect(resp: requests.Response, *codes: int) -> requests.Response:
    if resp.status_code not in codes:
        raise BenchError(
            f"{resp.request.method} {resp.request.path_url} answered {resp.status_code}: "
            f"{resp.text[:300].strip()}"
        )
    return resp


def create(side: Side, s: requests.Session, cmd: list[str], **extra) -> str:
    body = {"Image": IMAGE, "Cmd": cmd, "Labels": {BENCH_LABEL: "1"}, **extra}
    r = expect(s.post(side.url("/containers/create"), json=body, timeout=REQUEST_TIMEOUT), 201)
    return r.json()["Id"]


def start(side: Side, s: requests.Session, cid: str) -> None:
    expect(s.post(side.url(f"/containers/{cid}/start"), timeout=REQUEST_TIMEOUT), 204, 304)


def wait(side: Side, s: requests.Session, cid: str, timeout: float = REQUEST_TIMEOUT) -> int:
    r = expect(s.post(side.url(f"/containers/{cid}/wait"), timeout=timeout), 200)
    return r.json().get("StatusCode", -1)


def remove(side: Side, s: requests.Session, cid: str, force: bool = False) -> None:
    params = {"force": "1", "v": "1"} if force else None
    expect(s.delete(side.url(f"/containers/{cid}"), params=params, timeout=REQUEST_TIMEOUT), 204)


def run_to_end(side: Side, s: requests.Session, cmd: list[str], timeout: float = 600) -> str:
    cid = create(side, s, cmd)
    start(side, s, cid)
    code = wait(side, s, cid, timeout=timeout)
    if code != 0:
        raise BenchError(f"container {cid[:12]} ({' '.join(cmd)}) exited {code}")
    return cid


# --- statistics and rows ---------------------------------------------------------------------------


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def row(
    section: str,
    name: str,
    unit: str,
    direct,
    moorage,
    *,
    target: str = "",
    result: str | None = None,
    note: str = "",
    better: str = "lower",
) -> dict:
    ratio = None
    if isinstance(direct, int | float) and isinstance(moorage, int | float) and direct:
        ratio = moorage / direct
    return dict(
        section=section,
        name=name,
        unit=unit,
        direct=direct,
        moorage=moorage,
        ratio=ratio,
        target=target,
        result=result,
        note=note,
        better=better,
    )


# --- sections ------------------------------------------------------------------------------------


def tar_stream(size: int, name: str = "moorage-bench.bin"):
    """A tar archive of one ``size``-byte file, produced as it is sent (never held whole)."""
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


# --- output ------------------------------------------------------------------------------------------


def fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if unit == "count":
        return f"{value:d}" if isinstance(value, int) else f"{value:g}"
    if unit == "ms":
        return f"{value:.2f}" if value < 100 else f"{value:.0f}"
    return f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def table(rows: list[dict]) -> str:
    head = ("measurement", "unit", "direct", "moorage", "ratio", "target", "result", "note")
    lines = []
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        lines.append(
            (
                r["name"],
                r["unit"],
                fmt(r["direct"], r["unit"]),
                fmt(r["moorage"], r["unit"]),
                ratio,
                r["target"] or "",
                r["result"] or "",
                r["note"] or "",
            )
        )
    widths = [max(len(str(x[i])) for x in [head, *lines]) for i in range(len(head) - 1)]
    out = []
    for k, line in enumerate([head, *lines]):
        cells = [
            str(c).ljust(w) if i in (0, 1, 5, 6) else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(line[:-1], widths, strict=True))
        ]
        out.append("  ".join(cells) + ("  " + line[-1] if line[-1] else ""))
        if k == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * 4)
    return "\n".join(out)
