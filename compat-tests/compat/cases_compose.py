"""docker-compose v1 (Debian's 1.29.2): a two-service project with a build, a named network,
a named volume, environment, ports and depends_on; up -d, ps, logs, exec, run --rm, down -v.

Skipped, with a line saying how to install it, when docker-compose is not on PATH.
"""

from __future__ import annotations

import os
import re
import subprocess

from compat.harness import SUITE_LABEL, Ctx, register

COMPOSE_FILE = """\
version: "3.7"
services:
  db:
    image: busybox
    command: ["sh", "-c", "echo db-ready; echo stored > /data/x; exec sleep 300"]
    labels:
      {label}: compose
    volumes:
      - data:/data
    networks:
      - back
  web:
    build: ./web
    image: {prefix}-web:1
    labels:
      {label}: compose
    environment:
      GREETING: hello-from-env
    ports:
      - "0:8080"
    depends_on:
      - db
    volumes:
      - data:/data
    networks:
      - back
networks:
  back:
    labels:
      {label}: compose
volumes:
  data:
    labels:
      {label}: compose
"""

DOCKERFILE = """\
FROM busybox
ENV CASE={prefix}
RUN mkdir -p /www && echo web-content > /www/index.html
COPY start.sh /start.sh
CMD ["sh", "/start.sh"]
"""

START = """\
echo "web starting: $GREETING"
ping -c1 -W2 db >/dev/null && echo "db reachable"
exec httpd -f -p 8080 -h /www
"""


def compose(ctx: Ctx, project_dir: str, *args: str, timeout: float = 90, numbers: bool = False) -> dict:
    env = ctx.cli_env(
        {
            "COMPOSE_PROJECT_NAME": ctx.prefix,
            "COMPOSE_DOCKER_CLI_BUILD": "0",
            "COMPOSE_INTERACTIVE_NO_CLI": "1",
        }
    )
    argv = ["docker-compose", "--ansi", "never", *args]
    try:
        proc = subprocess.run(
            argv, cwd=project_dir, env=env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
        rc, out, err = (
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
    except subprocess.TimeoutExpired as exc:
        rc, out, err = -9, (exc.stdout or b"").decode(errors="replace"), f"<timeout after {timeout}s>"
    norm = ctx.norm

    def lines(text):
        text = norm.text(text, columns=True, numbers=numbers)
        # build steps and container start order interleave differently run to run
        text = text.replace(" ---> Using cache\n", "")
        # table rules are as wide as the widest cell (PIDs, times)
        text = re.sub(r"^-{10,}$", "----", text, flags=re.M)
        return sorted(
            {
                ln.strip()
                for ln in text.splitlines()
                if ln.strip() and not ln.startswith(" ---> ") and "Sending build context" not in ln
            }
        )

    return {"argv": list(args), "rc": rc, "stdout": lines(out), "stderr": lines(err)}


def _project(ctx: Ctx) -> str:
    project = os.path.join(ctx.tmp, "proj")
    os.makedirs(os.path.join(project, "web"))
    with open(os.path.join(project, "docker-compose.yml"), "w") as fh:
        fh.write(COMPOSE_FILE.format(label=SUITE_LABEL, prefix=ctx.prefix))
    with open(os.path.join(project, "web", "Dockerfile"), "w") as fh:
        fh.write(DOCKERFILE.format(prefix=ctx.prefix))
    with open(os.path.join(project, "web", "start.sh"), "w") as fh:
        fh.write(START)
    ctx.on_cleanup(lambda: compose(ctx, project, "down", "-v", "--rmi", "local", "--remove-orphans"))
    ctx.track_image(f"{ctx.prefix}-web:1")
    return project


def compose_project(ctx: Ctx):
    project = _project(ctx)
    steps = [compose(ctx, project, "up", "-d", timeout=150)]
    steps.append(compose(ctx, project, "ps"))
    steps.append(compose(ctx, project, "ps", "-q"))
    import time

    time.sleep(1)
    steps.append(compose(ctx, project, "logs", "--no-color"))
    steps.append(compose(ctx, project, "exec", "-T", "web", "sh", "-c", "echo $GREETING; cat /data/x"))
    steps.append(compose(ctx, project, "exec", "-T", "web", "sh", "-c", "exit 3"))
    steps.append(compose(ctx, project, "port", "web", "8080"))
    steps.append(compose(ctx, project, "top", numbers=True))
    steps.append(compose(ctx, project, "down", "-v"))
    leftovers = ctx.docker("ps", "-a", "--filter", f"name={ctx.prefix}_", "--format", "{{.Names}}")
    vols = ctx.docker("volume", "ls", "-q", "--filter", f"name={ctx.prefix}_")
    steps.append({"leftover-containers": leftovers.out.split(), "leftover-volumes": vols.out.split()})
    return steps


def compose_run(ctx: Ctx):
    """`run` attaches with docker-py's attach_socket(), which sends no HttpHeaders."""
    project = _project(ctx)
    steps = [compose(ctx, project, "up", "-d", "db", timeout=150)]
    steps.append(
        compose(ctx, project, "run", "--rm", "-T", "web", "sh", "-c", "echo run-ok; cat /data/x", timeout=150)
    )
    steps.append(compose(ctx, project, "down", "-v"))
    return steps


def compose_version(ctx: Ctx):
    return compose(ctx, ctx.tmp, "version", "--short")


register(
    "compose.v1.project",
    compose_project,
    (
        "ImageBuild",
        "NetworkCreate",
        "VolumeCreate",
        "ContainerCreate",
        "ContainerStart",
        "ContainerList",
        "ContainerLogs",
        "ContainerExec",
        "ExecStart",
        "ContainerAttach",
        "ContainerWait",
        "ContainerStop",
        "ContainerDelete",
        "NetworkDelete",
        "VolumeDelete",
        "ContainerTop",
    ),
    timeout=300,
    requires="compose",
)
register(
    "compose.v1.run",
    compose_run,
    (
        "ImageBuild",
        "ContainerCreate",
        "ContainerAttach",
        "ContainerStart",
        "ContainerWait",
        "ContainerDelete",
    ),
    timeout=300,
    requires="compose",
    divergence="attach-socket-headers",
)
register("compose.v1.version", compose_version, ("SystemVersion",), requires="compose")
