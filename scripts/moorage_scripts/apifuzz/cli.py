"""scripts/api-fuzz: schemathesis against the gateway, with Docker's own API specs.

    scripts/api-fuzz [--env DIR/env] [--spec 1.41,1.55] [--max-examples N] [--max-time S]
                     [--phases examples,coverage,fuzzing] [--report-dir DIR]

For each spec (../shared/docker-api/vX.yaml beside the repository, or --spec-dir) it runs
`schemathesis run` against the gateway at /vX (as the stack's tenant alpha, with its headers)
with one check, hooks.py's ``moorage_answer``: every answer a success, Docker's error shape or
the daemon's own answer; never a traceback, never a 5xx of the gateway's own. Then it reads the
gateway's log for the run: an internal error logs a traceback there even when the client only
sees a 500. It prints the cases tried and the failures per spec, and exits 1 if any check
failed or any traceback was logged (0 otherwise; 2 on a usage error).

Without --env it brings up a stack of its own (scripts/devstack up --hosts 1) and takes it down.
It is a lane of its own, outside scripts/test: its cost is --max-time per spec (default 300 s).
A failure is a check's; schemathesis's own errors (a request timing out on a daemon that is
slow by design, a tar body it cannot generate) are counted in its summary and left to read in
the output.
Against a spec newer than the gateway's API (v1.55 today) the gateway answers every call 400
"client version ... is too new", which the check accepts: a 4xx in Docker's shape.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

from .. import REPO

DEVSTACK = os.path.join(REPO, "scripts", "devstack")
SCRIPTS = os.path.join(REPO, "scripts")


def read_env(path: str) -> dict[str, str]:
    env = {}
    with open(path) as fh:
        for line in fh:
            if line.startswith("export "):
                key, _, value = line[len("export ") :].strip().partition("=")
                env[key] = " ".join(shlex.split(value))
    return env


def gateway_logs(stack_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(stack_dir, "gateway-*.log")))


def log_sizes(paths: list[str]) -> dict[str, int]:
    return {p: os.path.getsize(p) for p in paths if os.path.exists(p)}


def new_tracebacks(sizes: dict[str, int]) -> list[str]:
    """The ERROR lines with a traceback written to the gateway logs since ``sizes``."""
    found = []
    for path, start in sizes.items():
        with open(path, errors="replace") as fh:
            fh.seek(start)
            text = fh.read()
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if "Traceback (most recent call last)" in line or '"exception": "Traceback' in line:
                context = lines[i - 1] if i and "Traceback" not in lines[i - 1] else line
                found.append(f"{os.path.basename(path)}: {context[:300]}")
    return found


def run_spec(spec: str, version: str, env: dict[str, str], args, report_dir: str) -> dict:
    with open(os.path.join(env["MOORAGE_CONFIG_alpha"], "config.json")) as fh:
        headers = json.load(fh)["HttpHeaders"]
    url = env["DOCKER_HOST"].replace("tcp://", "http://") + f"/v{version}"
    ndjson = os.path.join(report_dir, f"v{version}.ndjson")
    argv = [
        shutil.which("schemathesis") or "schemathesis",
        "run",
        spec,
        "--url",
        url,
        *[x for k, v in headers.items() for x in ("-H", f"{k}: {v}")],
        "--checks",
        "moorage_answer",
        "--phases",
        args.phases,
        "--max-examples",
        str(args.max_examples),
        "--max-time",
        str(args.max_time),
        "--request-timeout",
        "30",
        "--workers",
        str(args.workers),
        "--seed",
        str(args.seed),
        "--no-color",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        ndjson,
        "--warnings",
        "off",
    ]
    sizes = log_sizes(gateway_logs(env["MOORAGE_STACK_DIR"]))
    print(f"api-fuzz: v{version}: {spec} against {url}", file=sys.stderr, flush=True)
    out_path = os.path.join(report_dir, f"v{version}.txt")
    child_env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "moorage_scripts.apifuzz.hooks",
        "PYTHONPATH": os.pathsep.join([SCRIPTS, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    with open(out_path, "w") as out:
        # In the report directory: schemathesis keeps its cache (.schemathesis/) in its cwd.
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=child_env, cwd=report_dir)
    with open(out_path, errors="replace") as fh:
        text = fh.read()
    summary = [line.strip() for line in text.splitlines() if " generated" in line and "," in line]
    found = re.search(r"found (\d+) unique failures?", summary[-1]) if summary else None
    return {
        "version": version,
        "exit": proc.returncode,
        "cases": summary[-1] if summary else "(no summary: see the output)",
        # Errors (a request that timed out, a body schemathesis cannot serialise) are not the
        # gateway's answers; failures of the check are.
        "failures": int(found.group(1)) if found else (0 if summary else -1),
        "tracebacks": new_tracebacks(sizes),
        "output": out_path,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/api-fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", metavar="FILE", help="a running stack's env file (DIR/env)")
    ap.add_argument("--spec", default="1.41,1.55", help="API versions, comma-separated (default 1.41,1.55)")
    ap.add_argument("--spec-dir", default=os.path.join(os.path.dirname(REPO), "shared", "docker-api"))
    ap.add_argument("--max-examples", type=int, default=20, help="cases per operation and phase (default 20)")
    ap.add_argument("--max-time", type=int, default=300, help="seconds per spec (default 300)")
    ap.add_argument("--phases", default="examples,coverage,fuzzing")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--report-dir", help="where the outputs and NDJSON reports go (default: a temporary one)")
    args = ap.parse_args(argv)
    if not shutil.which("schemathesis"):
        print("api-fuzz: schemathesis is not installed (pip install -e '.[fuzz]')", file=sys.stderr)
        return 2
    report_dir = args.report_dir or tempfile.mkdtemp(prefix="moorage-api-fuzz-")
    os.makedirs(report_dir, exist_ok=True)
    own = None
    if args.env:
        env = read_env(args.env)
        env.setdefault("MOORAGE_STACK_DIR", os.path.dirname(os.path.abspath(args.env)))
    else:
        own = tempfile.mkdtemp(prefix="moorage-api-fuzz-stack-")
        up = subprocess.run(
            [sys.executable, DEVSTACK, "up", own, "--hosts", "1"], capture_output=True, text=True
        )
        if up.returncode != 0:
            print(f"api-fuzz: devstack up failed: {up.stderr.strip()[-500:]}", file=sys.stderr)
            return 1
        env = read_env(os.path.join(own, "env"))
    results = []
    try:
        for version in [v.strip() for v in args.spec.split(",") if v.strip()]:
            spec = os.path.join(args.spec_dir, f"v{version}.yaml")
            if not os.path.exists(spec):
                print(f"api-fuzz: no spec {spec}", file=sys.stderr)
                return 2
            results.append(run_spec(spec, version, env, args, report_dir))
    finally:
        if own:
            subprocess.run([sys.executable, DEVSTACK, "down", own, "--purge"], capture_output=True)
    bad = False
    for r in results:
        ok = r["failures"] == 0 and not r["tracebacks"]
        bad |= not ok
        print(f"v{r['version']}: {'PASS' if ok else 'FAIL'}: {r['cases']}; output {r['output']}")
        for line in r["tracebacks"]:
            print(f"  traceback in the gateway's log: {line}")
    print(f"reports in {report_dir}")
    return 1 if bad else 0
