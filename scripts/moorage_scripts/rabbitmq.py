"""A private RabbitMQ node (Debian's rabbitmq-server) on loopback, as devstack's --notifications
broker (devstack/broker.py) and the nova lane's (nova/backends.py) run one: every file of the node
under one directory, its environment, and the epmd the first Erlang node starts and leaves behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def prepare(base: str) -> None:
    """The node's directory: no plugins, empty config files (the environment names them, so that
    nothing of /etc/rabbitmq is read)."""
    os.makedirs(os.path.join(base, "log"), exist_ok=True)
    with open(os.path.join(base, "enabled_plugins"), "w") as fh:
        fh.write("[].\n")
    for name in ("rabbitmq.conf", "rabbitmq-env.conf"):
        with open(os.path.join(base, name), "a"):
            pass


def node_env(base: str, node: str, port: int, dist: int) -> dict:
    """The RABBITMQ_*/ERL_* settings of a node on 127.0.0.1 whose files are all under `base`."""
    return {
        "HOME": base,
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_MNESIA_BASE": os.path.join(base, "mnesia"),
        "RABBITMQ_LOG_BASE": os.path.join(base, "log"),
        "RABBITMQ_PID_FILE": os.path.join(base, "rabbit.pid"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": os.path.join(base, "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": os.path.join(base, "rabbitmq"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": os.path.join(base, "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": os.path.join(base, "rabbitmq-env.conf"),
    }


def epmd_pids() -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{name}/comm") as fh:
                if fh.read().strip() == "epmd":
                    found.append(int(name))
    return found


def forget_epmd() -> None:
    """TERM epmd once no Erlang node is registered with it: for the epmd our node started, after
    that node stopped (it deregisters when its connection to epmd closes; up to 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        names = subprocess.run(["epmd", "-names"], capture_output=True, timeout=10).stdout.decode()
        if "name " not in names or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    if "name " not in names:
        for pid in epmd_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
