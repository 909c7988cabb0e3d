"""The services Nova stands on, each with its data under DIR: MariaDB and RabbitMQ."""

from __future__ import annotations

import contextlib
import os
import shutil

from .. import rabbitmq
from ..procs import alive
from .api import tcp_open
from .common import quiet_env, run, say
from .state import Nova


def mysql(nv: Nova, sql: str) -> None:
    run(
        ["mariadb", "--no-defaults", f"--socket={nv.path('mysql.sock')}", "-uroot"],
        input=sql.encode(),
        timeout=60,
        log=nv.path("logs", "mysql-setup.log"),
    )


def start_mariadb(nv: Nova) -> None:
    datadir = nv.path("mysql")
    port = nv.port("mariadb")
    if not os.path.isdir(os.path.join(datadir, "mysql")):
        say("initialising MariaDB")
        shutil.rmtree(datadir, ignore_errors=True)
        run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={datadir}",
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            timeout=180,
            log=nv.path("logs", "mysql-setup.log"),
        )
    if not alive(nv.proc("mariadb")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(nv.path("mysql.sock"))
        nv.spawn(
            "mariadb",
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={datadir}",
                "--user=root",
                "--bind-address=127.0.0.1",
                f"--port={port}",
                f"--socket={nv.path('mysql.sock')}",
                f"--pid-file={nv.path('mysql.pid')}",
                "--skip-name-resolve",
                "--max-connections=500",
                "--innodb-buffer-pool-size=64M",
                f"--log-error={nv.path('logs', 'mariadb.log')}",
            ],
            quiet_env(),
            nv.path("logs", "mariadb.out"),
        )
    nv.wait(
        "mariadb",
        f"MariaDB on 127.0.0.1:{port}",
        lambda: tcp_open(port) and os.path.exists(nv.path("mysql.sock")),
    )
    pw = nv.state["db_password"]
    dbs = ("nova_api", "nova", "nova_cell0", "placement", "neutron")
    mysql(
        nv,
        "".join(f"CREATE DATABASE IF NOT EXISTS {d};\n" for d in dbs)
        + f"CREATE USER IF NOT EXISTS 'openstack'@'127.0.0.1' IDENTIFIED BY '{pw}';\n"
        + f"ALTER USER 'openstack'@'127.0.0.1' IDENTIFIED BY '{pw}';\n"
        + "".join(f"GRANT ALL PRIVILEGES ON {d}.* TO 'openstack'@'127.0.0.1';\n" for d in dbs),
    )


def db_url(nv: Nova, name: str) -> str:
    return (
        f"mysql+pymysql://openstack:{nv.state['db_password']}@127.0.0.1:{nv.state['ports']['mariadb']}/{name}"
    )


# --- RabbitMQ ----------------------------------------------------------------------------------


def rabbit_env(nv: Nova) -> dict:
    ports = nv.state["ports"]
    node = f"moorage{nv.hash}@localhost"
    return quiet_env(
        **rabbitmq.node_env(nv.path("rabbitmq"), node, ports["rabbitmq"], ports["rabbitmq-dist"])
    )


def start_rabbitmq(nv: Nova) -> None:
    port = nv.port("rabbitmq")
    nv.port("rabbitmq-dist")
    rabbitmq.prepare(nv.path("rabbitmq"))
    if not alive(nv.proc("rabbitmq")):
        had_epmd = bool(rabbitmq.epmd_pids())
        nv.spawn(
            "rabbitmq",
            [rabbitmq.SERVER],
            rabbit_env(nv),
            nv.path("logs", "rabbitmq.out"),
        )
        nv.state["epmd_ours"] = not had_epmd
        nv.save()
    nv.wait("rabbitmq", f"RabbitMQ on 127.0.0.1:{port}", lambda: tcp_open(port), timeout=180)


# --- Keystone ----------------------------------------------------------------------------------
