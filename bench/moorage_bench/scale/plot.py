"""bench/scale --plot: the cost curve (bench/scale.png) from the runs' --json files.

    bench/scale --plot                         # bench/scale-data/*.json -> bench/scale.png
    bench/scale --plot a.json b.json --png out.png

Four panels over the number of instances (log scale): the latencies (info, merged ps,
placement, run scheduling alone and under 200 concurrent creates), the gateway's CPU per read,
heartbeat and run, memory (each replica, the
simulators, PostgreSQL, the database) and the heartbeats' load (received and store writes per
second, the gateway's CPU on them).
"""

from __future__ import annotations

import glob
import json
import os

from .. import REPO
from ..run.common import say
from ..run.report import row
from .common import PROFILES

DATA = os.path.join(REPO, "bench", "scale-data")
PNG = os.path.join(REPO, "bench", "scale.png")


def figure(doc: dict, prefix: str, having: str = "") -> float | None:
    """The value of the first row whose name starts with ``prefix`` (and holds ``having``)."""
    for r in doc["rows"]:
        if r["name"].startswith(prefix) and having in r["name"] and isinstance(r["moorage"], int | float):
            return float(r["moorage"])
    return None


def derive(doc: dict) -> None:
    """Runs from before measure.py wrote it: the reads' CPU less the heartbeats' background."""
    name = "gateway CPU per read, heartbeats' share taken out"
    if any(r["name"] == name for r in doc["rows"]):
        return
    per_read, per_beat, beats = (
        figure(doc, "gateway CPU per read"),
        figure(doc, "gateway CPU per heartbeat"),
        figure(doc, "heartbeats received"),
    )
    if None in (per_read, per_beat, beats) or "reads" not in doc.get("seconds", {}):
        return
    profile = PROFILES["quick" if doc.get("quick") else "full"]
    count = 4 * (profile["reads"] + profile["warm"])
    value = per_read - per_beat * beats / 1000 * doc["seconds"]["reads"] * 1000 / count
    at = next(i for i, r in enumerate(doc["rows"]) if r["name"].startswith("gateway CPU per read")) + 1
    doc["rows"].insert(at, row("reads", name, "ms CPU", None, value, note="derived by --plot"))


LATENCY = [
    ("docker info p99", "", "docker info p99"),
    ("docker ps p99, 600 containers, over", "", "docker ps p99, 600 containers over 20 instances"),
    ("docker ps p99, 600 containers, one", "", "docker ps p99, 600 containers on one instance"),
    ("placement decision p99", "", "placement decision p99 (in process)"),
    ("run scheduling p99, one at a time", "", "run scheduling p99, one at a time"),
    ("run scheduling p99, ", "concurrent", "run scheduling p99, 200 concurrent"),
]
CPU = [
    ("gateway CPU per read, heartbeats", "gateway CPU per read (info, ps x3), less the heartbeats'"),
    ("gateway CPU per heartbeat", "gateway CPU per heartbeat"),
    ("gateway CPU per create + start", "gateway CPU per run (create + start), concurrent"),
]
LOAD = [
    ("heartbeats received", "heartbeats received /s"),
    ("store row writes", "store row writes /s"),
    ("store commits", "store transactions /s"),
]


def plot(paths: list[str], png: str | None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = paths or sorted(glob.glob(os.path.join(DATA, "*.json")))
    docs = []
    for path in paths:
        with open(path) as fh:
            doc = json.load(fh)
        if not doc.get("failed") and doc.get("rows"):
            derive(doc)
            docs.append(doc)
    if not docs:
        say(f"scale: no completed run among {paths or DATA}")
        return 1
    docs.sort(key=lambda d: d["instances"])
    xs = [d["instances"] for d in docs]
    fig, axes = plt.subplots(1, 4, figsize=(22, 5.4))
    ax = axes[0]
    for prefix, having, label in LATENCY:
        points = [
            (x, v) for x, d in zip(xs, docs, strict=True) if (v := figure(d, prefix, having)) is not None
        ]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=label)
    for y, label in ((5, "5 ms"), (50, "50 ms"), (100, "100 ms")):
        ax.axhline(y, color="grey", linestyle=":", linewidth=0.8)
        ax.annotate(label, (xs[0], y), fontsize=7, color="grey")
    ax.set(xscale="log", yscale="log", xlabel="instances", ylabel="ms", title="Latency (p99)")
    ax.legend(fontsize=7)
    ax = axes[1]
    for prefix, label in CPU:
        points = [(x, v) for x, d in zip(xs, docs, strict=True) if (v := figure(d, prefix)) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=label)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="instances",
        ylabel="ms of CPU (both replicas)",
        title="Gateway CPU per operation",
    )
    ax.legend(fontsize=7)
    ax = axes[2]
    for key, label in (("replica1", "gateway replica 1 RSS"), ("replica2", "gateway replica 2 RSS"),
                       ("sim", "simulators RSS"), ("postgres", "PostgreSQL PSS")):  # fmt: skip
        ax.plot(xs, [d["rss_mb"].get(key, 0) for d in docs], marker="o", label=label)
    ax.plot(xs, [d.get("db_bytes", 0) / 1e6 for d in docs], marker="s", label="database size")
    ax.set(xscale="log", yscale="log", xlabel="instances", ylabel="MB", title="Memory")
    ax.legend(fontsize=7)
    ax = axes[3]
    for prefix, label in LOAD:
        ax.plot(xs, [figure(d, prefix) or 0 for d in docs], marker="o", label=label)
    cpu = [
        (figure(d, "gateway CPU per heartbeat") or 0) * (figure(d, "heartbeats received") or 0) / 10
        for d in docs
    ]
    ax.plot(xs, cpu, marker="^", label="gateway CPU on heartbeats, % of one CPU")
    ax.set(xscale="log", yscale="log", xlabel="instances", title="Heartbeats' load")
    ax.legend(fontsize=7)
    heads = ", ".join(
        f"{d['instances']}: {d['containers']} containers, {d['projects']} projects, interval "
        f"{d['heartbeat_interval']:g} s, {figure(d, 'bench wall time') or 0:.0f} s"
        + (f" ({d['note']})" if d.get("note") else "")
        for d in docs
    )
    fig.suptitle(f"bench/scale on {docs[-1]['machine']}\n{heads}", fontsize=8)
    fig.tight_layout()
    out = png or PNG
    fig.savefig(out, dpi=90)
    say(f"scale: wrote {out} from {len(docs)} run(s)")
    print(markdown(docs))
    return 0


def markdown(docs: list[dict]) -> str:
    """One row per figure, one column per run (bench/README.md's table), with the target and
    its result in each run."""
    from . import cli

    names = []
    for d in docs:
        for r in d["rows"]:
            if r["name"] not in names:
                names.append(r["name"])
    heads = [
        f"{d['instances']:,} (interval {d['heartbeat_interval']:g} s"
        + (f", {d['note']})" if d.get("note") else ")")
        for d in docs
    ]
    out = ["| figure | " + " | ".join(heads) + " | target |", "|---|" + "--:|" * len(docs) + "---|"]
    for name in names:
        cells, target = [], ""
        for d in docs:
            r = next((r for r in d["rows"] if r["name"] == name), None)
            if r is None:
                cells.append("")
                continue
            value = cli.value(r) if r["moorage"] is not None else "-"
            unit = "" if r["unit"] in ("x", "errors", "rows") else f" {r['unit']}"
            cells.append(f"{value}{unit}" + (f" **{r['result']}**" if r["result"] == "short" else ""))
            target = target or r["target"]
        out.append(f"| {name} | " + " | ".join(cells) + f" | {target} |")
    heads = "; ".join(
        f"{d['instances']:,}: load average {d['load'][0]:.1f} -> {d['load'][1]:.1f}" for d in docs
    )
    return "\n".join([*out, "", f"({heads}; **short**: the target is missed)"])
