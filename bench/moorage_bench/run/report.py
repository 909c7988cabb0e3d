"""bench/run's figures: one row per figure (dockerd, Moorage, ratio, target, ok or short), the
median over repetitions, and the printed table.
"""

from __future__ import annotations

import math
import statistics


def pct(samples: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of the samples."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# A target is (kind, value): "added" moorage <= dockerd + value; "max_ratio" moorage <=
# value x dockerd; "min_ratio" moorage >= value x dockerd; "max" moorage <= value (no dockerd
# figure to compare with); "zero" moorage == 0.
def judge(target: tuple[str, float] | None, dockerd, moorage) -> tuple[str, str]:
    if target is None:
        return "", ""
    kind, value = target
    if moorage is None or (isinstance(moorage, float) and math.isnan(moorage)):
        return _describe(kind, value), "short"
    if kind == "added":
        ok = moorage <= dockerd + value
    elif kind == "max_ratio":
        ok = moorage <= value * dockerd
    elif kind == "min_ratio":
        ok = moorage >= value * dockerd
    elif kind == "max":
        ok = moorage <= value
    elif kind == "zero":
        ok = moorage == 0
    else:
        raise ValueError(f"unknown target kind {kind!r}")
    return _describe(kind, value), "ok" if ok else "short"


def _describe(kind: str, value: float) -> str:
    return {
        "added": f"<= +{value:g} ms",
        "max_ratio": f"<= {value:.2f}x",
        "min_ratio": f">= {value:.2f}x",
        "max": f"<= {value:g}",
        "zero": "0",
    }[kind]


def row(
    section: str,
    name: str,
    unit: str,
    dockerd,
    moorage,
    target: tuple[str, float] | None = None,
    note: str = "",
    runs: dict | None = None,
) -> dict:
    ratio = None
    if isinstance(dockerd, int | float) and isinstance(moorage, int | float) and dockerd:
        ratio = None if math.isnan(moorage) or math.isnan(dockerd) else moorage / dockerd
    described, result = judge(target, dockerd, moorage)
    return dict(
        section=section,
        name=name,
        unit=unit,
        dockerd=dockerd,
        moorage=moorage,
        ratio=ratio,
        target=described,
        result=result,
        note=note,
        runs=runs or {},  # every repetition's figure per side, for --json
    )


def fmt(value, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if unit in ("count", "errors"):
        return f"{value:.0f}"
    if unit in ("ms", "ms CPU"):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"
    return f"{value:.1f}" if value < 1000 else f"{value:.0f}"


def table(rows: list[dict]) -> str:
    head = ("figure", "unit", "dockerd", "moorage", "ratio", "target", "result", "note")
    lines = [
        (
            r["name"],
            r["unit"],
            fmt(r["dockerd"], r["unit"]),
            fmt(r["moorage"], r["unit"]),
            f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-",
            r["target"],
            r["result"],
            r["note"],
        )
        for r in rows
    ]
    widths = [max(len(str(x[i])) for x in [head, *lines]) for i in range(len(head) - 1)]
    out = []
    for k, line in enumerate([head, *lines]):
        cells = [
            str(c).ljust(w) if i in (0, 1, 5, 6) else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(line[:-1], widths, strict=True))
        ]
        out.append("  ".join(cells) + ("  " + line[-1] if line[-1] else ""))
        if k == 0:
            out.append("  ".join("-" * w for w in widths) + "  ----")
    return "\n".join(out)


SECTION_TITLES = {
    "latency": "Latency of simple requests (one client, keep-alive)",
    "lifecycle": "Container lifecycle: create, start, wait, rm of `busybox true`",
    "cpu": "CPU per proxied `ps` (from /proc utime + stime)",
    "concurrency": "200 concurrent clients (`ps` and `inspect` alternating)",
    "streams": "Streams (MB/s; MB = 10^6 bytes)",
}
RERUN = {
    "latency": "latency",
    "lifecycle": "lifecycle",
    "cpu": "cpu",
    "concurrency": "concurrency",
}


def markdown(rows: list[dict], header: str) -> str:
    """The rows as one Markdown table per section, for bench/README.md (--markdown FILE)."""
    out = [header, ""]
    for section, title in SECTION_TITLES.items():
        mine = [r for r in rows if r["section"] == section]
        if not mine:
            continue
        out += [f"**{title}**", ""]
        out += [
            "| figure | dockerd | Moorage | ratio | target | result | rerun |",
            "|---|--:|--:|--:|---|---|---|",
        ]
        for r in mine:
            unit = "" if r["unit"] in ("count", "errors") else f" {r['unit']}"
            d, m = (
                fmt(v, r["unit"]) + (unit if isinstance(v, int | float) and not math.isnan(v) else "")
                for v in (r["dockerd"], r["moorage"])
            )
            ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else ""
            only = RERUN.get(section) or _stream_section(r["name"])
            out.append(
                f"| {r['name'].strip()} | {d} | {m} | {ratio} | {r['target']} | {r['result']} "
                f"| `bench/run --env DIR/env --only {only}` |"
            )
        out.append("")
    return "\n".join(out)


def _stream_section(name: str) -> str:
    for word, section in (("logs", "logs"), ("attach", "attach"), ("cp ", "cp"), ("save", "saveload")):
        if name.startswith(word):
            return section
    if name.startswith("load"):
        return "saveload"
    return "logs,attach,cp,saveload"
