"""The docker CLI as a subprocess (and on a pseudo-terminal for the interactive cases).

Each case is a short session of docker commands; the observation is every command's exit
code, stdout and stderr, normalized. Commands use the machine's newest CLI (it negotiates
down to the daemon's API 1.41) unless a case pins DOCKER_API_VERSION or the 20.10 CLI.
"""

from __future__ import annotations

import os
import re
import time

from compat.harness import OLD_CLI, SUITE_LABEL, Ctx, make_tar, register

LABEL = f"{SUITE_LABEL}=cli"


class Session:
    """Run steps and collect their observations; {n} {P} {reg} {tmp} expand in arguments."""

    def __init__(self, ctx: Ctx):
        self.ctx = ctx
        self.steps: list = []

    def expand(self, arg: str) -> str:
        ctx = self.ctx
        return (
            arg.replace("{n}", ctx.name())
            .replace("{P}", ctx.prefix)
            .replace("{reg}", ctx.stack.registry)
            .replace("{tmp}", ctx.tmp)
        )

    def __call__(
        self,
        *args: str,
        stdin: bytes | None = None,
        out: str = "text",
        err: str = "text",
        timeout: float = 30,
        env: dict | None = None,
        cli: str | None = None,
        keep: bool = True,
        post=None,
        **norm,
    ):
        argv = [self.expand(a) for a in args]
        res = self.ctx.docker(*argv, stdin=stdin, timeout=timeout, env=env, cli=cli)
        norm.setdefault("columns", True)
        obs = self.ctx.cli_obs(res, out=out, err=err, **norm)
        if argv and argv[0] == "cp":
            obs = _tar_writer_noise(obs)
        if post is not None:
            obs = post(obs)
        if keep:
            self.steps.append(obs)
        return res

    def pty(self, *args: str, script=(), timeout: float = 20, post=None):
        argv = [self.expand(a) for a in args]
        res = self.ctx.docker_pty(*argv, script=script, timeout=timeout)
        obs = self.ctx.cli_obs(res, out="text", err="none", columns=True)
        if post is not None:
            obs = post(obs)
        self.steps.append(obs)
        return res

    def note(self, key: str, value) -> None:
        self.steps.append({key: value})


def cli_case(case_id: str, ops=(), **kw):
    ops = kw.pop("ops", ops)
    """Decorator: the function gets (ctx, session) and may return extra data."""

    def wrap(fn):
        def scenario(ctx: Ctx):
            s = Session(ctx)
            ctx.on_cleanup(lambda: _cleanup(ctx))
            extra = fn(ctx, s)
            return {"steps": s.steps, **({"extra": extra} if extra is not None else {})}

        register(case_id, scenario, ops, **kw)
        return fn

    return wrap


def _cleanup(ctx: Ctx):
    """Everything the CLI made carries the side's prefix in its name."""
    res = ctx.docker("ps", "-aq", "--filter", f"name={ctx.prefix}", timeout=20)
    ids = res.out.split()
    if ids:
        ctx.docker("rm", "-f", "-v", *ids, timeout=30)
    res = ctx.docker("images", "--format", "{{.Repository}}:{{.Tag}}", timeout=20)
    refs = [r for r in res.out.split() if ctx.prefix in r]
    if refs:
        ctx.docker("rmi", "-f", *refs, timeout=30)
    res = ctx.docker("volume", "ls", "-q", "--filter", f"name={ctx.prefix}", timeout=20)
    if res.out.split():
        ctx.docker("volume", "rm", "-f", *res.out.split(), timeout=20)
    res = ctx.docker("network", "ls", "-q", "--filter", f"name={ctx.prefix}", timeout=20)
    if res.out.split():
        ctx.docker("network", "rm", *res.out.split(), timeout=20)


RUN_D = ("run", "-d", "--label", LABEL)
# a person types a few hundred milliseconds after the prompt shows; the CLI sets the
# terminal size right after start, and a command typed before that sees none
TYPING = 0.4


# == run ================================================================================
@cli_case("cli.run.detach", ("ContainerCreate", "ContainerStart", "ContainerList"))
def _run_detach(ctx, d):
    d(*RUN_D, "--name", "{n}", "busybox", "sleep", "300")
    d("ps", "--filter", "name={n}", "--format", "{{.Names}}|{{.Status}}|{{.Image}}|{{.Command}}|{{.Ports}}")


@cli_case(
    "cli.run.rm", ("ContainerCreate", "ContainerStart", "ContainerWait", "ContainerDelete", "ContainerAttach")
)
def _run_rm(ctx, d):
    d("run", "--rm", "--name", "{n}", "busybox", "sh", "-c", "echo hello; echo oops >&2")
    d("ps", "-a", "-q", "--filter", "name={n}")


@cli_case("cli.run.env-workdir-user", ("ContainerCreate", "ContainerAttach"))
def _run_ewu(ctx, d):
    d(
        "run",
        "--rm",
        "-e",
        "A=1",
        "--env",
        "B=two words",
        "-w",
        "/tmp",
        "-u",
        "nobody",
        "busybox",
        "sh",
        "-c",
        'echo "$A|$B"; pwd; id -u',
    )


@cli_case("cli.run.exit-code", ("ContainerWait",))
def _run_exit(ctx, d):
    d("run", "--rm", "busybox", "sh", "-c", "exit 3")
    d("run", "--rm", "busybox", "nosuchcommand")


@cli_case("cli.run.publish", ("ContainerCreate", "ContainerInspect"))
def _run_publish(ctx, d):
    d(*RUN_D, "--name", "{n}", "-p", "0:80", "-p", "81/udp", "busybox", "httpd", "-f", "-p", "80")
    d("port", "{n}")
    d("inspect", "--format", "{{json .HostConfig.PortBindings}}", "{n}")
    d("ps", "--filter", "name={n}", "--format", "{{.Ports}}")


@cli_case("cli.run.publish-host-ip", ("ContainerCreate",), divergence="policy")
def _run_publish_host_ip(ctx, d):
    d(*RUN_D, "--name", "{n}", "-p", "127.0.0.1::81/udp", "busybox", "httpd", "-f", "-p", "80")


@cli_case("cli.run.restart", ("ContainerCreate", "ContainerInspect"))
def _run_restart(ctx, d):
    d(*RUN_D, "--name", "{n}", "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 1")
    d(*RUN_D, "--name", "{n}-always", "--restart", "always", "busybox", "sleep", "300")
    d(
        "inspect",
        "--format",
        "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}",
        "{n}",
        "{n}-always",
    )


@cli_case("cli.run.stdin-piped", ("ContainerAttach", "ContainerCreate"))
def _run_piped(ctx, d):
    d("run", "-i", "--rm", "busybox", "sh", "-c", "cat; echo done", stdin=b"piped line 1\npiped line 2\n")
    d("run", "-i", "--rm", "busybox", "wc", "-c", stdin=b"x" * 100000)


@cli_case("cli.run.stdin-devnull", ("ContainerAttach",))
def _run_devnull(ctx, d):
    d("run", "-i", "--rm", "busybox", "sh", "-c", "cat; echo eof")


@cli_case("cli.run.no-such-image", ("ContainerCreate",))
def _run_noimage(ctx, d):
    d("run", "--rm", "--pull", "never", "{P}-nosuch:1", "true")
    d("create", "--name", "{n}", "--pull", "never", "{P}-nosuch:1")


@cli_case("cli.run.name-conflict", ("ContainerCreate",))
def _run_conflict(ctx, d):
    d("create", "--label", LABEL, "--name", "{n}", "busybox")
    d("create", "--label", LABEL, "--name", "{n}", "busybox")


@cli_case("cli.run.it", ("ContainerAttach", "ContainerResize"))
def _run_it(ctx, d):
    d.pty(
        "run",
        "-it",
        "--rm",
        "--name",
        "{n}",
        "busybox",
        "sh",
        script=[("# ", b"echo $((6*7)); stty size\r", TYPING), ("42", b""), ("# ", b"exit 5\r")],
    )


@cli_case("cli.run.it-size", ("ContainerResize", "ContainerAttach"))
def _run_it_size(ctx, d):
    """The terminal's size reaches the container (the CLI resizes right after start)."""
    d.pty("run", "--rm", "-it", "busybox", "sh", "-c", "sleep 0.5; stty size")


@cli_case("cli.run.it-read", ("ContainerAttach",))
def _run_it_read(ctx, d):
    d.pty(
        "run",
        "--rm",
        "-it",
        "busybox",
        "sh",
        "-c",
        "echo ready; read x; echo got:$x",
        script=[("ready", b"abc\r")],
    )


@cli_case("cli.run.i-tty-detached", ("ContainerCreate", "ContainerStart"))
def _run_dit(ctx, d):
    d("run", "-dit", "--label", LABEL, "--name", "{n}", "busybox", "sh")
    d("exec", "{n}", "sh", "-c", "echo alive")


# == ps ===================================================================================
@cli_case("cli.ps", ("ContainerList",))
def _ps(ctx, d):
    d(*RUN_D, "--name", "{n}-a", "busybox", "sleep", "300", keep=False)
    d("run", "--label", LABEL, "--name", "{n}-b", "busybox", "true", keep=False)
    d("ps", "--filter", "name={n}", "--format", "{{.Names}}")
    d(
        "ps",
        "-a",
        "--filter",
        "name={n}",
        "--format",
        '{{.Names}}|{{.Status}}|{{.Command}}|{{.Label "' + SUITE_LABEL + '"}}',
    )
    d("ps", "-q", "--filter", "name={n}")
    d("ps", "-aq", "--filter", "name={n}")
    d("ps", "-a", "--filter", "name={n}", "--filter", "status=exited", "--format", "{{.Names}}")
    d("ps", "-a", "--filter", "name={n}", "--filter", "exited=0", "--format", "{{.Names}}")
    d("ps", "-a", "--filter", "name={n}")
    d("ps", "-a", "--no-trunc", "--filter", "name={n}", "--format", "{{.ID}} {{.Command}}")
    d("ps", "-a", "-s", "--filter", "name={n}", "--format", "{{.Names}}", sizes=True)
    d("ps", "-a", "--filter", "name={n}", "--format", "{{json .Names}}")
    d("ps", "-a", "-n", "1", "--filter", "name={n}", "--format", "{{.Names}}")
    d("ps", "--filter", "nosuchfilter=1")


@cli_case("cli.ps.anchored", ("ContainerList",))
def _ps_anchored(ctx, d):
    """Name filters as scripts write them: regular expressions over the name and its slash."""
    d(*RUN_D, "--name", "{n}-a", "busybox", "sleep", "300", keep=False)
    d("run", "--label", LABEL, "--name", "{n}-ab", "busybox", "true", keep=False)
    d("ps", "-q", "--filter", "name=^/{n}-a$")
    d("ps", "-a", "--filter", "name=^/{n}-a$", "--format", "{{.Names}}")
    d("ps", "-a", "--filter", "name=^{n}-a", "--format", "{{.Names}}", out="lines-sorted")
    d("ps", "-a", "--filter", "name={n}-ab$", "--format", "{{.Names}}")
    d(
        "ps",
        "-a",
        "--filter",
        "name=^/{n}-a$",
        "--filter",
        "name=^/{n}-ab$",
        "--format",
        "{{.Names}}",
        out="lines-sorted",
    )
    d("ps", "-a", "-n", "1", "--filter", "name=^/{n}-a", "--format", "{{.Names}}")
    d("ps", "-a", "--filter", "name=^/{n}-nosuch$", "--format", "{{.Names}}")


# == logs =================================================================================
def _logger(d, name="{n}"):
    d(
        *RUN_D,
        "--name",
        name,
        "busybox",
        "sh",
        "-c",
        "echo one; sleep 0.2; echo two >&2; sleep 0.2; echo three",
        keep=False,
    )
    d("wait", name, keep=False)


@cli_case("cli.logs", ("ContainerLogs",))
def _logs(ctx, d):
    _logger(d)
    d("logs", "{n}")
    d("logs", "--tail", "1", "{n}")
    d("logs", "-n", "2", "{n}")
    d("logs", "--timestamps", "{n}")
    d("logs", "--since", "2000-01-01T00:00:00", "{n}")
    d("logs", "--since", "1h", "{n}")
    d("logs", "--until", "2000-01-01T00:00:00", "{n}")
    d("logs", "--details", "{n}")
    d("logs", "{P}-missing")


@cli_case("cli.logs.follow", ("ContainerLogs",))
def _logs_follow(ctx, d):
    d(
        *RUN_D,
        "--name",
        "{n}",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo line $i; sleep 0.4; done",
        keep=False,
    )
    d("logs", "-f", "{n}")
    d("logs", "-f", "--tail", "1", "{n}")


# == exec =================================================================================
@cli_case("cli.exec", ("ContainerExec", "ExecStart", "ExecInspect"))
def _exec(ctx, d):
    d(*RUN_D, "--name", "{n}", "busybox", "sleep", "300", keep=False)
    d("exec", "{n}", "echo", "hi")
    d("exec", "{n}", "sh", "-c", "echo out; echo err >&2; exit 7")
    d("exec", "-e", "X=1", "-w", "/tmp", "-u", "nobody", "{n}", "sh", "-c", 'echo "$X"; pwd; id -u')
    d("exec", "{n}", "nosuchcommand")
    d("exec", "{P}-missing", "true")
    d("exec", "-d", "{n}", "touch", "/tmp/detached")
    time.sleep(0.3)
    d("exec", "{n}", "ls", "/tmp/detached")


@cli_case("cli.exec.stdin", ("ContainerExec", "ExecStart"))
def _exec_i(ctx, d):
    d(*RUN_D, "--name", "{n}", "busybox", "sleep", "300", keep=False)
    d("exec", "-i", "{n}", "sh", "-c", "cat; echo eof-seen", stdin=b"to exec\n")
    d("exec", "-i", "{n}", "cat")
    d("exec", "-i", "{n}", "sh", "-c", "wc -c; exit 2", stdin=b"y" * 50000)


@cli_case("cli.exec.t", ("ContainerExec", "ExecStart"))
def _exec_t(ctx, d):
    d(*RUN_D, "--name", "{n}", "busybox", "sleep", "300", keep=False)
    d("exec", "-t", "{n}", "sh", "-c", "echo tty-out; exit 3")


@cli_case("cli.exec.it", ("ContainerExec", "ExecStart", "ExecResize"))
def _exec_it(ctx, d):
    d(*RUN_D, "--name", "{n}", "busybox", "sleep", "300", keep=False)
    d.pty(
        "exec",
        "-it",
        "{n}",
        "sh",
        script=[("# ", b"echo $((40+2)); stty size\r", TYPING), ("42", b""), ("# ", b"exit 4\r")],
    )


@cli_case("cli.exec.stopped", ("ContainerExec",))
def _exec_stopped(ctx, d):
    d("create", "--label", LABEL, "--name", "{n}", "busybox", keep=False)
    d("exec", "{n}", "true")
    d(*RUN_D, "--name", "{n}-p", "busybox", "sleep", "300", keep=False)
    d("pause", "{n}-p")
    d("exec", "{n}-p", "true")


# == attach =================================================================================
@cli_case("cli.attach.detach-keys", ("ContainerAttach", "ContainerInspect"), unix=True)
def _attach_keys(ctx, d):
    d("run", "-dit", "--label", LABEL, "--name", "{n}", "busybox", "sh", keep=False)
    d.pty(
        "attach",
        "--detach-keys",
        "ctrl-x,x",
        "{n}",
        script=[(None, b"echo $((20+22))\r"), ("42", b"\x18x")],
        timeout=15,
        post=_strip_prompt_noise,
    )
    d("inspect", "--format", "{{.State.Running}}", "{n}")


@cli_case("cli.attach.default-keys", ("ContainerAttach",), unix=True)
def _attach_default(ctx, d):
    d("run", "-dit", "--label", LABEL, "--name", "{n}", "busybox", "sh", keep=False)
    d.pty(
        "attach",
        "{n}",
        script=[(None, b"echo $((20+22))\r"), ("42", b"\x10\x11")],
        timeout=15,
        post=_strip_prompt_noise,
    )
    d("inspect", "--format", "{{.State.Running}}", "{n}")


@cli_case("cli.attach.output", ("ContainerAttach",))
def _attach_out(ctx, d):
    d(
        *RUN_D,
        "--name",
        "{n}",
        "busybox",
        "sh",
        "-c",
        "sleep 1; echo late; echo late-err >&2; exit 6",
        keep=False,
    )
    d("attach", "{n}")
    d("attach", "{n}")


def _strip_prompt_noise(obs):
    """The shell's prompt may or may not be redrawn before the attach starts reading."""
    out = obs.get("stdout") or ""
    m = re.search(r"42\n", out)
    obs["stdout"] = ("42\n" + out[m.end() :].lstrip("/ #\n")) if m else out
    return obs


# == cp =================================================================================
@cli_case("cli.cp", ("PutContainerArchive", "ContainerArchive", "ContainerArchiveInfo"))
def _cp(ctx, d):
    src = os.path.join(ctx.tmp, "in")
    os.makedirs(os.path.join(src, "sub"))
    with open(os.path.join(src, "a.txt"), "w") as fh:
        fh.write("file a\n")
    with open(os.path.join(src, "sub", "b.txt"), "w") as fh:
        fh.write("file b\n")
    d(*RUN_D, "--name", "{n}", "busybox", "sleep", "300", keep=False)
    d("cp", "{tmp}/in/a.txt", "{n}:/tmp/")
    d("cp", "{tmp}/in", "{n}:/tmp/dir")
    d("exec", "{n}", "sh", "-c", "cat /tmp/a.txt /tmp/dir/sub/b.txt; ls -R /tmp/dir")
    os.makedirs(os.path.join(ctx.tmp, "out"))
    d("cp", "{n}:/etc/hostname", "{tmp}/out/")
    d("cp", "{n}:/tmp/dir", "{tmp}/out/dir")
    d.note(
        "out",
        sorted(
            os.path.relpath(os.path.join(r, f), os.path.join(ctx.tmp, "out"))
            for r, _, fs in os.walk(os.path.join(ctx.tmp, "out"))
            for f in fs
        ),
    )
    d("cp", "{n}:/tmp/a.txt", "-", out="none")
    d("cp", "{n}:/nonexistent", "{tmp}/out/")
    d("cp", "{tmp}/in/a.txt", "{n}:/nonexistent/dir/")
    d("cp", "{tmp}/in/a.txt", "{P}-missing:/tmp/")
    d("stop", "-t", "0", "{n}", keep=False)
    d("cp", "{tmp}/in/a.txt", "{n}:/a-after-stop.txt")
    d("cp", "{n}:/a-after-stop.txt", "-", out="none")


def _tar_writer_noise(obs):
    """When the daemon refuses an upload before the CLI has written all of it, the CLI may
    also log that its tar writer met a closed pipe: a race on either side, not a difference."""
    if isinstance(obs.get("stderr"), str):
        obs["stderr"] = "".join(
            line for line in obs["stderr"].splitlines(keepends=True) if "closed pipe" not in line
        )
    return obs


# == lifecycle ==========================================================================
STATE = (
    "inspect",
    "--format",
    "{{.State.Status}} running={{.State.Running}} paused={{.State.Paused}} exit={{.State.ExitCode}}",
)


@cli_case(
    "cli.lifecycle",
    (
        "ContainerStop",
        "ContainerStart",
        "ContainerKill",
        "ContainerRestart",
        "ContainerPause",
        "ContainerUnpause",
        "ContainerRename",
        "ContainerDelete",
    ),
    timeout=90,
)
def _lifecycle(ctx, d):
    d(*RUN_D, "--name", "{n}", "busybox", "sleep", "300", keep=False)
    d("pause", "{n}")
    d(*STATE, "{n}")
    d("pause", "{n}")
    d("unpause", "{n}")
    d("unpause", "{n}")
    d("stop", "-t", "1", "{n}")
    d(*STATE, "{n}")
    d("stop", "{n}")
    d("start", "{n}")
    d("start", "{n}")
    d("kill", "{n}")
    d(*STATE, "{n}")
    d("kill", "{n}")
    d("restart", "-t", "1", "{n}")
    d(*STATE, "{n}")
    d("kill", "-s", "SIGTERM", "{n}")
    d("rename", "{n}", "{n}-renamed")
    d("inspect", "--format", "{{.Name}}", "{n}-renamed")
    d("rename", "{n}", "{n}-x")
    d("rm", "-f", "{n}-renamed")
    d("rm", "-f", "{n}-renamed")
    d("start", "{P}-missing")
    d("stop", "{P}-missing")
    d("kill", "{P}-missing")
    d("restart", "{P}-missing")
    d("pause", "{P}-missing")


@cli_case("cli.wait", ("ContainerWait",))
def _wait(ctx, d):
    d(*RUN_D, "--name", "{n}", "busybox", "sh", "-c", "sleep 1; exit 3", keep=False)
    d("wait", "{n}")
    d("wait", "{n}")
    d("wait", "{P}-missing")


@cli_case("cli.rm", ("ContainerDelete",))
def _rm(ctx, d):
    d(*RUN_D, "--name", "{n}", "busybox", "sleep", "300", keep=False)
    d("rm", "{n}")
    d("rm", "-f", "{n}")
    d("create", "--label", LABEL, "--name", "{n}-v", "-v", "/data", "busybox", keep=False)
    d("rm", "-v", "{n}-v")
    d("rm", "{P}-missing")


@cli_case("cli.inspect", ("ContainerInspect",))
def _inspect(ctx, d):
    d(*RUN_D, "--name", "{n}", "-e", "K=v", "busybox", "sleep", "300", keep=False)
    d(
        "inspect",
        "--format",
        "{{.Name}} {{.Config.Image}} {{.State.Status}} {{json .Config.Cmd}} {{.Config.Env}}",
        "{n}",
    )
    d("inspect", "--type", "container", "--format", "{{.Path}} {{.Args}} {{.HostConfig.NetworkMode}}", "{n}")
    d("container", "inspect", "{n}", out="json")
    d("inspect", "-s", "--format", "{{.Name}}", "{n}")
    d("inspect", "{P}-missing")
    d("inspect", "--type", "image", "--format", "{{.Os}} {{.Config.Cmd}}", "busybox")


@cli_case("cli.top", ("ContainerTop",))
def _top(ctx, d):
    d(*RUN_D, "--name", "{n}", "busybox", "sleep", "300", keep=False)
    d("top", "{n}", numbers=True)
    d("top", "{n}", "-o", "pid,comm", numbers=True)
    d("top", "{P}-missing")


@cli_case("cli.stats", ("ContainerStats",))
def _stats(ctx, d):
    d(*RUN_D, "--name", "{n}", "busybox", "sleep", "300", keep=False)
    d("stats", "--no-stream", "{n}", numbers=True, sizes=True)
    d("stats", "--no-stream", "--format", "{{.Name}} {{.Container}}", "{n}")
    d("stats", "--no-stream", "{P}-missing")


@cli_case("cli.diff", ("ContainerChanges",))
def _diff(ctx, d):
    d(
        "run",
        "--label",
        LABEL,
        "--name",
        "{n}",
        "busybox",
        "sh",
        "-c",
        "mkdir /newdir; echo x > /newdir/f; rm /etc/shadow",
        keep=False,
    )
    d("diff", "{n}", out="lines-sorted")
    d("diff", "{P}-missing")


@cli_case("cli.prune", serial=True, ops=("ContainerPrune",))
def _prune(ctx, d):
    d("run", "--label", LABEL, "--label", "compat.case={P}", "--name", "{n}", "busybox", "true", keep=False)
    d("container", "prune", "-f", "--filter", "label=compat.case={P}", sizes=True)


# == images ===============================================================================
@cli_case("cli.export-import", ("ContainerExport", "ImageCreate", "ImageInspect"), timeout=90)
def _export_import(ctx, d):
    d("run", "--label", LABEL, "--name", "{n}", "busybox", "sh", "-c", "echo {P} > /hello", keep=False)
    d("export", "-o", "{tmp}/fs.tar", "{n}")
    d.note("tar", os.path.getsize(os.path.join(ctx.tmp, "fs.tar")) > 100000)
    d("import", "-c", 'CMD ["cat", "/hello"]', "{tmp}/fs.tar", "{P}-imported:1")
    d("run", "--rm", "{P}-imported:1")
    d("import", "-", "{P}-imported:2", stdin=make_tar({"hello": "from stdin\n"}))
    d("image", "inspect", "--format", "{{.Os}} {{.Architecture}} {{json .Config.Cmd}}", "{P}-imported:2")
    d("export", "{P}-missing", out="none")


@cli_case(
    "cli.commit-tag-rmi", ("ImageCommit", "ImageTag", "ImageList", "ImageDelete", "ImageHistory"), timeout=90
)
def _commit(ctx, d):
    d("run", "--label", LABEL, "--name", "{n}", "busybox", "sh", "-c", "echo {P} > /hello", keep=False)
    d("commit", "-c", 'CMD ["cat", "/hello"]', "-m", "msg", "{n}", "{P}-img:1")
    d("tag", "{P}-img:1", "{P}-img:2")
    d("tag", "{P}-img:1", "{P}-other")
    d("images", "{P}-img")
    d("images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}", "{P}-img")
    d("images", "-q", "{P}-img")
    d("images", "--filter", "reference={P}-*", "--format", "{{.Repository}}:{{.Tag}}", out="lines-sorted")
    d("history", "--format", "{{.CreatedBy}}|{{.Comment}}", "{P}-img:1")
    d("run", "--rm", "{P}-img:2")
    d("rmi", "{P}-img:2")
    d("rmi", "{P}-img:1", "{P}-other")
    d("rmi", "{P}-img:1")
    d("tag", "{P}-missing:1", "{P}-x:1")
    d("commit", "{P}-missing", "{P}-x:1")


@cli_case("cli.rmi-in-use", ("ImageDelete",))
def _rmi_in_use(ctx, d):
    d("run", "--label", LABEL, "--name", "{n}", "busybox", "sh", "-c", "echo {P} > /hello", keep=False)
    d("commit", "{n}", "{P}-img:1")
    d("create", "--label", LABEL, "--name", "{n}-user", "{P}-img:1", keep=False)
    d("rmi", "{P}-img:1")
    d("rmi", "-f", "{P}-img:1")


@cli_case("cli.save-load", ("ImageGet", "ImageGetAll", "ImageLoad"), timeout=90)
def _save_load(ctx, d):
    d("run", "--label", LABEL, "--name", "{n}", "busybox", "sh", "-c", "echo {P} > /hello", keep=False)
    d("commit", "{n}", "{P}-img:1", keep=False)
    d("save", "-o", "{tmp}/img.tar", "{P}-img:1")
    d("rmi", "{P}-img:1", keep=False)
    d("load", "-i", "{tmp}/img.tar")
    d("images", "--format", "{{.Repository}}:{{.Tag}}", "{P}-img")
    with open(os.path.join(ctx.tmp, "img.tar"), "rb") as fh:
        data = fh.read()
    d("rmi", "{P}-img:1", keep=False)
    d("load", "-q", stdin=data)
    d("save", "{P}-img:1", "busybox:latest", out="none")
    d("save", "{P}-missing:1", out="none")
    d("load", stdin=b"not a tarball" * 10)


@cli_case("cli.push-pull", ("ImagePush", "ImageCreate", "DistributionInspect"), timeout=120)
def _push_pull(ctx, d):
    d("run", "--label", LABEL, "--name", "{n}", "busybox", "sh", "-c", "echo {P} > /hello", keep=False)
    d("commit", "{n}", "{reg}/{P}-img:1", keep=False)
    d("push", "{reg}/{P}-img:1", timeout=60, post=_registry_noise)
    d("rmi", "{reg}/{P}-img:1", keep=False)
    d("pull", "{reg}/{P}-img:1", timeout=60, post=_registry_noise)
    d("pull", "-q", "{reg}/{P}-img:1", timeout=60)
    d("manifest", "inspect", "--insecure", "{reg}/{P}-img:1", out="shape", timeout=60)
    d("pull", "{reg}/{P}-nosuch:1", timeout=60)
    d("push", "{reg}/{P}-nosuch:1", timeout=60)


def _registry_noise(obs):
    """Which layers the registry and the daemon already had depends on the cases before (both
    sides push to one registry: on which side went first): the per-layer lines go, what is
    left is the verdict (digest, status, the image's name)."""
    for key in ("stdout", "stderr"):
        text = obs.get(key)
        if isinstance(text, str):
            lines = [line for line in text.split("\n") if not line.startswith("<SID>: ")]
            obs[key] = "\n".join(sorted(set(lines)))
    return obs


@cli_case("cli.pull-offline", ("ImageCreate", "ImageSearch"), timeout=200, isolated=True)
def _pull_offline(ctx, d):
    d("pull", "{P}-nosuch:latest", timeout=90)
    d("search", "busybox", timeout=90)


@cli_case("cli.build", ("ImageBuild", "ImageInspect"), timeout=120)
def _build(ctx, d):
    bdir = os.path.join(ctx.tmp, "ctx")
    os.makedirs(bdir)
    with open(os.path.join(bdir, "Dockerfile"), "w") as fh:
        fh.write(
            f"FROM busybox\nENV CASE={ctx.prefix}\nRUN echo built > /built\nCOPY hello.txt /hello.txt\n"
            'CMD ["cat", "/hello.txt", "/built"]\n'
        )
    with open(os.path.join(bdir, "hello.txt"), "w") as fh:
        fh.write("hello from build\n")
    d("build", "-t", "{P}-built:1", bdir, timeout=90, post=_build_noise)
    d("run", "--rm", "{P}-built:1")
    d("build", "-q", "-t", "{P}-built:2", bdir, timeout=90)
    d("image", "inspect", "--format", "{{json .Config.Cmd}} {{json .Config.Env}}", "{P}-built:1")
    with open(os.path.join(bdir, "Dockerfile.fail"), "w") as fh:
        fh.write(f"FROM busybox\nENV CASE={ctx.prefix}\nRUN exit 7\n")
    d("build", "--force-rm", "-f", os.path.join(bdir, "Dockerfile.fail"), bdir, timeout=90, post=_build_noise)
    d("build", "-f", "Nope", bdir, timeout=60)


def _build_noise(obs):
    if isinstance(obs.get("stdout"), str):
        obs["stdout"] = obs["stdout"].replace(" ---> Using cache\n", "")
        obs["stdout"] = re.sub(
            r"Sending build context to Docker daemon\s+\S+", "Sending build context", obs["stdout"]
        )
    return obs


# == volumes and networks =================================================================
@cli_case(
    "cli.volume", ("VolumeCreate", "VolumeList", "VolumeInspect", "VolumeDelete", "VolumePrune"), serial=True
)
def _volume(ctx, d):
    d("volume", "create", "--label", LABEL, "--label", "compat.case={P}", "{P}-vol")
    d("volume", "ls", "--filter", "name={P}")
    d("volume", "ls", "-q", "--filter", "name={P}")
    d("volume", "inspect", "--format", "{{.Name}} {{.Driver}} {{.Scope}} {{.Labels}}", "{P}-vol")
    d("volume", "inspect", "{P}-vol", out="json")
    d("run", "--rm", "-v", "{P}-vol:/data", "busybox", "sh", "-c", "echo kept > /data/f")
    d("run", "--rm", "-v", "{P}-vol:/data", "busybox", "cat", "/data/f")
    d("volume", "rm", "{P}-vol")
    d("volume", "rm", "{P}-vol")
    d("volume", "inspect", "{P}-vol")
    d("volume", "create", "--label", "compat.case={P}", "{P}-vol2", keep=False)
    d("volume", "prune", "-f", "--filter", "label=compat.case={P}", sizes=True)


@cli_case(
    "cli.network",
    (
        "NetworkCreate",
        "NetworkList",
        "NetworkInspect",
        "NetworkConnect",
        "NetworkDisconnect",
        "NetworkDelete",
        "NetworkPrune",
    ),
    timeout=90,
    serial=True,
)
def _network(ctx, d):
    d("network", "create", "--label", LABEL, "--label", "compat.case={P}", "{P}-net", out="none")
    d("network", "ls", "--filter", "name={P}", "--format", "{{.Name}} {{.Driver}} {{.Scope}}")
    d("network", "ls", "-q", "--filter", "name={P}")
    d("network", "inspect", "--format", "{{.Name}} {{.Driver}} {{.Labels}} {{.Internal}}", "{P}-net")
    d(
        *RUN_D,
        "--name",
        "{n}",
        "--network",
        "{P}-net",
        "--network-alias",
        "web",
        "busybox",
        "sleep",
        "300",
        keep=False,
    )
    d(
        "run",
        "--rm",
        "--network",
        "{P}-net",
        "busybox",
        "sh",
        "-c",
        "ping -c1 -W2 web >/dev/null && echo reachable",
    )
    d(*RUN_D, "--name", "{n}-2", "busybox", "sleep", "300", keep=False)
    d("network", "connect", "{P}-net", "{n}-2")
    d("network", "connect", "{P}-net", "{n}-2")
    d("inspect", "--format", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", "{n}-2")
    d("network", "disconnect", "{P}-net", "{n}-2")
    d("network", "rm", "{P}-net")
    d("rm", "-f", "{n}", keep=False)
    d("network", "rm", "{P}-net")
    d("network", "rm", "{P}-net")
    d("network", "create", "--label", "compat.case={P}", "{P}-net2", keep=False)
    d("network", "prune", "-f", "--filter", "label=compat.case={P}")


# == system ===============================================================================
@cli_case("cli.events", ("SystemEvents",))
def _events(ctx, d):
    t0 = int(time.time()) - 1
    d("run", "--label", LABEL, "--name", "{n}", "busybox", "true", keep=False)
    d("rm", "{n}", keep=False)
    time.sleep(1.1)
    t1 = int(time.time()) + 1
    d(
        "events",
        "--since",
        str(t0),
        "--until",
        str(t1),
        "--filter",
        "container={n}",
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
    )
    d(
        "events",
        "--since",
        str(t0),
        "--until",
        str(t1),
        "--filter",
        "container={n}",
        "--filter",
        "event=start",
    )
    d("events", "--since", "nonsense", "--until", str(t1))


@cli_case("cli.system-df", serial=True, ops=("SystemDataUsage",))
def _df(ctx, d):
    d("system", "df", numbers=True, sizes=True, post=lambda o: {**o, "stdout": o["stdout"].splitlines()[0]})
    d("system", "df", "--format", "{{.Type}}")
    d("system", "df", "-v", "--format", "{{json .}}", out="shape")


@cli_case("cli.info", ("SystemInfo",))
def _info(ctx, d):
    d("info", "--format", "{{.OSType}} {{.Architecture}} {{.Driver}} {{.CgroupDriver}} {{.ServerVersion}}")
    d("info", "--format", "{{json .}}", out="shape")
    d(
        "system",
        "info",
        numbers=True,
        sizes=True,
        post=lambda o: {
            **o,
            "stdout": [ln.split(":")[0] for ln in o["stdout"].splitlines() if ln.strip()][:12],
        },
    )


@cli_case("cli.version", ("SystemVersion", "SystemPing"))
def _version(ctx, d):
    d("version")
    d("version", "--format", "{{.Client.APIVersion}} {{.Server.APIVersion}} {{.Server.MinAPIVersion}}")
    d("version", "--format", "{{json .Server}}", out="json")


for _v in ("1.24", "1.41"):

    @cli_case(f"cli.api-{_v}", ("SystemVersion", "ContainerList", "ContainerCreate", "ContainerAttach"))
    def _api(ctx, d, _v=_v):
        env = {"DOCKER_API_VERSION": _v}
        d("version", "--format", "{{.Client.APIVersion}} {{.Server.APIVersion}}", env=env)
        d("run", "--rm", "--name", "{n}", "busybox", "echo", "at " + _v, env=env)
        d(*RUN_D, "--name", "{n}-d", "busybox", "sleep", "300", env=env, keep=False)
        d("ps", "--filter", "name={n}", "--format", "{{.Names}} {{.Status}}", env=env)
        d("exec", "{n}-d", "echo", "exec at " + _v, env=env)
        d("logs", "{n}-d", env=env)


@cli_case("cli.api-too-new", ("SystemVersion",))
def _api_new(ctx, d):
    d("version", "--format", "{{.Server.APIVersion}}", env={"DOCKER_API_VERSION": "1.99"})
    d("ps", env={"DOCKER_API_VERSION": "1.99"})


@cli_case(
    "cli.cli-20.10", ("SystemVersion", "ContainerCreate", "ContainerList", "ContainerAttach", "ExecStart")
)
def _old_cli(ctx, d):
    if not os.path.exists(OLD_CLI):
        d.note("skipped", "no 20.10 CLI")
        return
    d("version", "--format", "{{.Client.APIVersion}} {{.Server.APIVersion}}", cli=OLD_CLI)
    d("run", "--rm", "busybox", "echo", "old cli", cli=OLD_CLI)
    d(*RUN_D, "--name", "{n}", "busybox", "sleep", "300", cli=OLD_CLI, keep=False)
    d("ps", "--filter", "name={n}", "--format", "{{.Names}}", cli=OLD_CLI)
    d("exec", "-i", "{n}", "cat", stdin=b"old exec\n", cli=OLD_CLI)


@cli_case("cli.plugin", ("PluginList",), divergence="plugins")
def _plugin(ctx, d):
    d("plugin", "ls")


@cli_case("cli.no-auth", ("ContainerList",), divergence="auth-headers")
def _noauth(ctx, d):
    empty = os.path.join(ctx.tmp, "empty-config")
    os.makedirs(empty)
    d("ps", "-a", "--filter", "name={n}", env={"DOCKER_CONFIG": empty})
