"""--postgres: the stack's own PostgreSQL cluster under /var/lib/moorage/devstack/HASH, on the shared
helper in moorage_scripts/postgres.py.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal

from ..ports import free_port, port_free
from ..postgres import (
    ENV,
    SERVICE_USER,
    PostgresError,
    initdb,
    is_ready,
    server_argv,
    server_bin,
    service_user,
)
from .common import Fail, run, say
from .procs import rec_alive, signal_pid, wait_gone
from .state import Stack

PG_BASE = "/var/lib/moorage/devstack"  # the postgres user must reach it: not under DIR (often 0700)
PG_USER = SERVICE_USER
PG_START_TIMEOUT = 60
PG_STOP_TIMEOUT = 30


def pg_bin() -> str:
    """The server binaries (moorage_scripts/postgres.py finds Debian's newest)."""
    bindir = server_bin()
    if bindir is None:
        raise Fail(
            "PostgreSQL server binaries not found under /usr/lib/postgresql (run scripts/install-deps)"
        )
    return bindir


def pg_home(st: Stack) -> str:
    return f"{PG_BASE}/{st.hash}"


def pg_data(st: Stack) -> str:
    return os.path.join(pg_home(st), "data")


def pg_sock(st: Stack) -> str:
    return os.path.join(pg_home(st), "sock")


def database_url(st: Stack) -> str:
    if not st.state.get("postgres"):
        return "sqlite:///" + st.path("moorage.db")
    pg = st.state["pg"]
    return f"postgresql://moorage:{pg['password']}@127.0.0.1:{pg['port']}/moorage"


def pg_ready(st: Stack) -> bool:
    return is_ready(pg_bin(), st.state["pg"]["port"])


def pg_sql(st: Stack, sql: str) -> str:
    """Run SQL as the cluster's superuser over its private socket (local trust); its output."""
    argv = [
        os.path.join(pg_bin(), "psql"),
        "-h",
        pg_sock(st),
        "-p",
        str(st.state["pg"]["port"]),
        "-U",
        PG_USER,
        "-d",
        "postgres",
        "-v",
        "ON_ERROR_STOP=1",
        "-qAtX",
        "-c",
        sql,
    ]
    return run(argv, timeout=30).stdout.decode().strip()


def claim_pg_home(st: Stack) -> None:
    """Create PG_BASE/HASH for this DIR (0755 up to it, so the postgres user reaches its data)."""
    home = pg_home(st)
    os.makedirs(PG_BASE, mode=0o755, exist_ok=True)
    owner_file = os.path.join(home, "dir")
    try:
        with open(owner_file) as fh:
            owner = fh.read().strip()
    except FileNotFoundError:
        owner = None
    if owner and owner != st.dir:
        if os.path.exists(os.path.join(owner, "state.json")):
            raise Fail(f"hash collision: {home} belongs to the stack at {owner}; use another DIR")
        say(f"removing {home}, left by a stack at {owner} that no longer exists")
        shutil.rmtree(home)
    os.makedirs(home, mode=0o755, exist_ok=True)
    with open(owner_file, "w") as fh:
        fh.write(st.dir + "\n")
    user = pg_user()
    for sub in (pg_data(st), pg_sock(st)):
        os.makedirs(sub, mode=0o700, exist_ok=True)
        os.chown(sub, user.pw_uid, user.pw_gid)


def pg_user() -> pwd.struct_passwd:
    """The `postgres` user, which owns and runs the cluster (devstack runs as root)."""
    try:
        user = service_user()
    except PostgresError as exc:
        raise Fail(str(exc)) from None
    assert user is not None
    return user


def start_postgres(st: Stack) -> None:
    """PostgreSQL for the stack, and its role and database `moorage` (idempotent)."""
    pg = st.state["pg"]
    if st.alive("postgres") and pg_ready(st):
        return
    if st.proc("postgres"):
        st.stop("postgres", "PostgreSQL", PG_STOP_TIMEOUT)
    bindir = pg_bin()
    claim_pg_home(st)
    if not os.path.exists(os.path.join(pg_data(st), "PG_VERSION")):
        say(f"initialising a PostgreSQL cluster in {pg_data(st)}")
        try:
            initdb(bindir, pg_data(st), ["--auth-local=trust", "--auth-host=scram-sha-256"], pg_user())
        except PostgresError as exc:
            raise Fail(str(exc)) from None
    if not pg.get("port") or not port_free(pg["port"]):
        pg["port"] = free_port()
        st.save()
    stale = os.path.join(pg_data(st), "postmaster.pid")  # of a postmaster that was killed
    if os.path.exists(stale):
        os.unlink(stale)
    say(f"starting PostgreSQL on 127.0.0.1:{pg['port']}")
    settings = {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": pg_sock(st),
        "max_connections": "300",
        "shared_buffers": "32MB",
    }
    st.spawn(
        "postgres",
        server_argv(bindir, pg_data(st), pg["port"], settings),
        st.path("postgres.log"),
        env=dict(ENV),
        user=PG_USER,
    )
    st.wait_for("postgres", f"PostgreSQL on 127.0.0.1:{pg['port']}", lambda: pg_ready(st), PG_START_TIMEOUT)
    password = pg["password"]
    pg_sql(
        st,
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'moorage') THEN "
        f"CREATE ROLE moorage LOGIN PASSWORD '{password}'; ELSE ALTER ROLE moorage LOGIN PASSWORD "
        f"'{password}'; END IF; END $$",
    )
    if pg_sql(st, "SELECT 1 FROM pg_database WHERE datname = 'moorage'") != "1":
        pg_sql(st, "CREATE DATABASE moorage OWNER moorage")


def stop_postgres(st: Stack) -> None:
    rec = st.proc("postgres")
    if rec and rec_alive(rec):
        signal_pid(rec["pid"], signal.SIGINT)  # fast shutdown: sessions end, data is flushed
        wait_gone(lambda: rec_alive(rec), PG_STOP_TIMEOUT)
    if rec:
        st.stop("postgres", "PostgreSQL", PG_STOP_TIMEOUT)


def pg_home_owner(st: Stack) -> str | None:
    try:
        with open(os.path.join(pg_home(st), "dir")) as fh:
            return fh.read().strip()
    except FileNotFoundError:
        return None
