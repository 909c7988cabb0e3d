"""A throwaway PostgreSQL for tests: Debian's server binaries, a fresh cluster in a temporary
directory, loopback only, a random port, trust auth, gone when the test session ends.

PostgreSQL refuses to run as root: as root, the cluster is made and run as the `postgres`
user (Debian's package creates it). Tests that need it skip, saying why, only when the server
binaries are absent (scripts/install-deps installs them).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowawayPostgres:
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
        self._user = None

    def _demote(self):
        if self._user is not None:
            os.setgid(self._user.pw_gid)
            os.setuid(self._user.pw_uid)

    def start(self) -> ThrowawayPostgres:
        if self.bin is None:
            raise RuntimeError(
                "PostgreSQL server binaries not found (apt-get install postgresql; scripts/install-deps)"
            )
        if os.geteuid() == 0:
            self._user = pwd.getpwnam("postgres")
        self.dir = tempfile.mkdtemp(prefix="moorage-pg-")
        if self._user is not None:
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)
        data = os.path.join(self.dir, "data")
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        subprocess.run(
            [
                os.path.join(self.bin, "initdb"),
                "-D",
                data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            preexec_fn=self._demote,
            cwd="/",
            env=env,
            timeout=120,
        )
        self.port = _free_port()
        self.log = open(os.path.join(self.dir, "postgres.log"), "wb")  # noqa: SIM115
        options = [arg for name, value in self.settings.items() for arg in ("-c", f"{name}={value}")]
        self.proc = subprocess.Popen(
            [os.path.join(self.bin, "postgres"), "-D", data, "-p", str(self.port), *options],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=self._demote,
            cwd="/",
            env=env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: see {self.dir}/postgres.log")
            if (
                subprocess.run(
                    [os.path.join(self.bin, "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                    capture_output=True,
                ).returncode
                == 0
            ):
                return self
            time.sleep(0.1)
        raise RuntimeError(f"postgres not ready within 30 s: see {self.dir}/postgres.log")

    def createdb(self, name: str) -> str:
        """A fresh database; its URL."""
        subprocess.run(
            [
                os.path.join(self.bin, "..", "bin", "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                name,
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

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
