"""PostgreSQL from Debian's server binaries: the one helper behind devstack's --postgres cluster and
the tests' throwaway server (tests/pgserver.py re-exports ThrowawayPostgres and server_bin).

PostgreSQL refuses to run as root: as root, clusters are made and run as the `postgres` user
(Debian's package creates it); as anyone else, as that user. Stdlib only.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time

from .ports import free_port

SERVICE_USER = "postgres"
# initdb and postgres see only this environment: no locale or PG* variable of the caller leaks in.
ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
INITDB_TIMEOUT = 120


class PostgresError(RuntimeError):
    """PostgreSQL could not be set up; the message says why in one line."""


def server_bin() -> str | None:
    """The newest /usr/lib/postgresql/N/bin holding initdb and postgres, or one on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def service_user() -> pwd.struct_passwd | None:
    """The user the server runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise PostgresError(
            f"no `{SERVICE_USER}` user: install Debian's postgresql package (scripts/install-deps)"
        ) from None


def as_user(user: pwd.struct_passwd | None) -> dict:
    """subprocess keyword arguments that run a child as `user` (no supplementary groups)."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def initdb(bindir: str, data: str, options: list[str], user: pwd.struct_passwd | None) -> None:
    """A new cluster in `data` with superuser `postgres`, UTF-8 and the C.UTF-8 locale; `options`
    add initdb's own (authentication methods, --no-sync)."""
    argv = [os.path.join(bindir, "initdb"), "-D", data, "-U", SERVICE_USER, "-E", "UTF8", "--locale=C.UTF-8"]
    try:
        proc = subprocess.run(
            argv + options,
            capture_output=True,
            timeout=INITDB_TIMEOUT,
            env=ENV,
            cwd="/",
            stdin=subprocess.DEVNULL,
            **as_user(user),
        )
    except subprocess.TimeoutExpired as exc:
        raise PostgresError(f"initdb did not finish within {INITDB_TIMEOUT} s") from exc
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip().splitlines()
        raise PostgresError(f"initdb failed (exit {proc.returncode}): {err[-1] if err else ''}")


def server_argv(bindir: str, data: str, port: int, settings: dict[str, str]) -> list[str]:
    """The postgres command line for the cluster in `data` on `port`, each setting as -c NAME=VALUE."""
    options = [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
    return [os.path.join(bindir, "postgres"), "-D", data, "-p", str(port), *options]


def is_ready(bindir: str, port: int, host: str = "127.0.0.1", timeout: float = 10) -> bool:
    """Does the server on host:port accept connections (pg_isready)?"""
    try:
        proc = subprocess.run(
            [os.path.join(bindir, "pg_isready"), "-q", "-h", host, "-p", str(port)],
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


class ThrowawayPostgres:
    """A fresh cluster in a temporary directory, loopback only, a free port, trust auth; `stop`
    removes it all. Tests that need it skip when server_bin() is None."""

    def __init__(self, settings: dict[str, str] | None = None):
        """``settings``: server settings (``-c NAME=VALUE``) over the defaults below, which suit
        tests (fsync off); the placement bench asks for durable commits (fsync on)."""
        self.settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": "",
            "fsync": "off",
            "max_connections": "200",
            **(settings or {}),
        }
        self.bin = server_bin()
        self.dir = ""
        self.port = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> ThrowawayPostgres:
        if self.bin is None:
            raise RuntimeError(
                "PostgreSQL server binaries not found (apt-get install postgresql; scripts/install-deps)"
            )
        user = service_user()
        self.dir = tempfile.mkdtemp(prefix="moorage-pg-")
        if user is not None:
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        data = os.path.join(self.dir, "data")
        initdb(self.bin, data, ["-A", "trust", "--no-sync"], user)
        self.port = free_port()
        self.log = open(os.path.join(self.dir, "postgres.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            server_argv(self.bin, data, self.port, self.settings),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd="/",
            env=ENV,
            **as_user(user),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: see {self.dir}/postgres.log")
            if is_ready(self.bin, self.port):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"postgres not ready within 30 s: see {self.dir}/postgres.log")

    def createdb(self, name: str) -> str:
        """A fresh database; its URL."""
        assert self.bin is not None
        subprocess.run(
            [
                os.path.join(self.bin, "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SERVICE_USER,
                name,
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return f"postgresql://{SERVICE_USER}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT: fast shutdown
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
