"""One Keystone under DIR: its paths, state and lock, keystone.conf, openrc, and its gunicorn."""

from __future__ import annotations

import os
import shlex
import subprocess
import time

from ..files import ToolDir
from ..procs import alive, proc_start, spawn
from .api import answers
from .common import LOCK_TIMEOUT, MANAGE_TIMEOUT, START_TIMEOUT, Fail, quiet_env, run, tail


class Keystone(ToolDir):
    def __init__(self, directory: str):
        super().__init__(
            directory, state_name="keystone.json", tool="scripts/keystone", lock_timeout=LOCK_TIMEOUT
        )

    @property
    def proc(self) -> dict | None:
        return self.state.get("proc")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.state['port']}/v3"

    def manage(self, venv: str, *args: str) -> None:
        argv = [
            os.path.join(venv, "bin", "keystone-manage"),
            "--config-file",
            self.path("keystone.conf"),
            *args,
        ]
        run(argv, timeout=MANAGE_TIMEOUT, env=quiet_env(), log=self.path("keystone-manage.log"))


def keystone_conf(ks: Keystone) -> str:
    return f"""\
# written by scripts/keystone; rewritten by every `up`. TEST SETTINGS (bcrypt cost 4).
[DEFAULT]
log_file = {ks.path("keystone.log")}
use_stderr = false

[database]
# timeout: how long a writer waits for SQLite's lock (pysqlite's default is 5 s). Nova's services
# authenticate all at once when they start; on a loaded machine 5 s was not enough, Keystone
# answered 500 and nova-conductor stopped.
connection = sqlite:///{ks.path("keystone.db")}?timeout=60

[token]
provider = fernet
expiration = {int(ks.state["token_expiration"])}

[fernet_tokens]
key_repository = {ks.path("fernet-keys")}

[fernet_receipts]
key_repository = {ks.path("fernet-keys")}

[credential]
key_repository = {ks.path("credential-keys")}

[identity]
password_hash_rounds = 4

[cache]
enabled = true
backend = dogpile.cache.memory
"""


def openrc(ks: Keystone) -> str:
    values = [
        ("OS_AUTH_URL", ks.url),
        ("OS_USERNAME", "admin"),
        ("OS_PASSWORD", ks.state["admin_password"]),
        ("OS_PROJECT_NAME", "admin"),
        ("OS_USER_DOMAIN_NAME", "Default"),
        ("OS_PROJECT_DOMAIN_NAME", "Default"),
        ("OS_IDENTITY_API_VERSION", "3"),
    ]
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values)


def gunicorn_argv(ks: Keystone, venv: str) -> list[str]:
    gunicorn = os.path.join(venv, "bin", "gunicorn")
    argv = [
        gunicorn,
        "--chdir",
        ks.dir,
        "--bind",
        f"127.0.0.1:{ks.state['port']}",
        "--workers",
        "1",
        "--threads",
        "4",
        "--timeout",
        "60",
        "--graceful-timeout",
        "3",
        "--pid",
        ks.path("keystone.pid"),
        "--error-logfile",
        ks.path("gunicorn.log"),
        "--name",
        f"keystone:{ks.dir}",
    ]
    help_text = subprocess.run([gunicorn, "--help"], capture_output=True, timeout=30).stdout.decode()
    if "--no-control-socket" in help_text:  # gunicorn >= 27 would share ~/.gunicorn/gunicorn.ctl
        argv.append("--no-control-socket")
    return [*argv, "keystone_wsgi:application"]


def start(ks: Keystone, venv: str) -> None:
    port = ks.state["port"]
    log = ks.path("gunicorn.out")
    env = quiet_env()
    env["OS_KEYSTONE_CONFIG_DIR"] = ks.dir
    argv = gunicorn_argv(ks, venv)
    proc = spawn(argv, log, env=env, cwd=ks.dir)
    ks.state["proc"] = {"pid": proc.pid, "start": proc_start(proc.pid) or ""}
    ks.save()
    deadline = time.monotonic() + START_TIMEOUT
    while not answers(port):
        if proc.poll() is not None or not alive(ks.proc):
            raise Fail(
                f"gunicorn exited during start-up (exit {proc.poll()}); see {ks.path('gunicorn.log')}:\n"
                + (tail(ks.path("gunicorn.log")) or tail(log))
            )
        if time.monotonic() > deadline:
            raise Fail(
                f"Keystone did not answer GET {ks.url} within {START_TIMEOUT} s; see "
                f"{ks.path('gunicorn.log')} and {ks.path('keystone.log')}:\n"
                + (tail(ks.path("keystone.log")) or tail(ks.path("gunicorn.log")))
            )
        time.sleep(0.2)


def stray_gunicorns(ks: Keystone) -> list[int]:
    """gunicorn masters serving this DIR that the state does not record (a lost keystone.json)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                argv = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
        except OSError:
            continue
        if (
            any(a.endswith("/gunicorn") or a == "gunicorn" for a in argv[:2])
            and "keystone_wsgi:application" in argv
            and f"keystone:{ks.dir}" in argv
        ):
            found.append(int(name))
    return found
