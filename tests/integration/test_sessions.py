"""Hijacked sessions through the relay: stdin, EOF, exit codes, TTYs, compared with dockerd."""

import os
import pty
import select
import time

import pytest

from tests.integration.conftest import DOCKER


def both(stack, *args, **kw):
    ours = stack.docker(*args, **kw)
    theirs = stack.docker(*args, direct=True, **kw)
    return ours, theirs


@pytest.mark.parametrize(
    "args,stdin,expect_out,expect_rc",
    ids=["echo", "exit-3", "stdin", "big-stdin", "empty-stdin", "stderr"],
    argvalues=[
        (("run", "--rm", "busybox", "echo", "hello"), None, b"hello\n", 0),
        (("run", "--rm", "busybox", "sh", "-c", "exit 3"), None, b"", 3),
        (("run", "--rm", "-i", "busybox", "cat"), b"piped\nlines\n", b"piped\nlines\n", 0),
        (("run", "--rm", "-i", "busybox", "wc", "-c"), b"x" * 300000, b"300000\n", 0),
        (("run", "--rm", "-i", "busybox", "cat"), b"", b"", 0),
        (("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 4"), None, b"out\n", 4),
    ],
)
def test_run_matches_dockerd(stack, args, stdin, expect_out, expect_rc):
    ours, theirs = both(stack, *args, input=stdin)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (expect_rc, expect_out)
    assert ours.stderr == theirs.stderr


def test_exec_stdin_eof_and_exit_codes(stack, unique):
    assert stack.docker("run", "-d", "--name", unique, "busybox", "sleep", "120").returncode == 0
    try:
        fed = stack.docker("exec", "-i", unique, "sh", "-c", "cat; echo done; exit 5", input=b"abc\n")
        assert (fed.returncode, fed.stdout) == (5, b"abc\ndone\n")
        assert stack.docker("exec", unique, "false").returncode == 1
        missing = stack.docker("exec", unique, "no-such-binary")
        assert missing.returncode in {126, 127}
    finally:
        stack.docker("rm", "-f", unique)


def drive_pty(argv, env, keys, settle=1.0, limit=30, prompt=b"# "):
    """Run ``argv`` on a terminal, type ``keys`` once the shell's ``prompt`` has shown (and
    ``settle`` seconds have passed), and return (exit status, everything it printed). Typing
    on the prompt, not on a clock: on a loaded machine keys typed before the shell is up are
    echoed by the terminal ahead of its banner, and the two sides' bytes then differ."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(argv[0], argv, env)
    out, start, sent = b"", time.time(), False
    while time.time() - start < limit:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            out += data
        if not sent and time.time() - start > settle and prompt in out:
            for key in keys:
                os.write(fd, key)
                time.sleep(0.3)
            sent = True
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            while select.select([fd], [], [], 0.2)[0]:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    break
                if not data:
                    break
                out += data
            return os.waitstatus_to_exitcode(status), out
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return "hung", out


def cli_env(stack, direct):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_HOST"] = stack.direct if direct else stack.env["DOCKER_HOST"]
    if not direct:
        env["DOCKER_CONFIG"] = stack.env["MOORAGE_CONFIG_alpha"]
    return env


def test_run_it_is_byte_identical(stack):
    keys = [b"echo tty-$((6*7))\r", b"exit 7\r"]
    results = [
        drive_pty([DOCKER, "run", "--rm", "-it", "busybox", "sh"], cli_env(stack, direct), keys)
        for direct in (False, True)
    ]
    assert results[0][0] == results[1][0] == 7
    assert b"tty-42" in results[0][1]
    assert results[0][1] == results[1][1]


def test_exec_it_exit_code(stack, unique):
    assert stack.docker("run", "-d", "--name", unique, "busybox", "sleep", "120").returncode == 0
    try:
        code, out = drive_pty(
            [DOCKER, "exec", "-it", unique, "sh"], cli_env(stack, False), [b"echo in-$((1+1))\r", b"exit 9\r"]
        )
        assert code == 9 and b"in-2" in out
    finally:
        stack.docker("rm", "-f", unique)


def test_logs_follow_streams_and_ends_with_the_container(stack, unique):
    script = "for i in 1 2 3; do echo line$i; sleep 0.3; done"
    assert stack.docker("run", "-d", "--name", unique, "busybox", "sh", "-c", script).returncode == 0
    try:
        follow = stack.docker("logs", "-f", unique, timeout=30)
        assert follow.returncode == 0 and follow.stdout == b"line1\nline2\nline3\n"
    finally:
        stack.docker("rm", "-f", unique)
