"""--notifications: a RabbitMQ of the stack's own (Debian's rabbitmq-server) on loopback.

Its node name, ports and data are the stack's (rabbit node ``moorageHASH-n``, DIR/rabbitmq),
so it never meets the nova lane's broker (scripts/moorage_scripts/nova/backends.py) or another
stack's. The gateway gets ``[notifications] transport_url``; DIR/env gets MOORAGE_TRANSPORT_URL.
`stop-broker` / `start-broker` stop and start it for fault tests (nothing is lost meanwhile:
the gateway's outbox waits). epmd, which the first Erlang node starts and which outlives it,
goes at `down` when no node is left.
"""

from __future__ import annotations

import os
import subprocess

from .. import rabbitmq
from ..ports import free_port, port_free
from .common import Fail, say
from .endpoints import tcp_open
from .state import Stack

SERVER = rabbitmq.SERVER
START_TIMEOUT = 120
STOP_TIMEOUT = 30


def transport_url(st: Stack) -> str:
    return f"rabbit://guest:guest@127.0.0.1:{st.state['broker']['port']}/"


def _env(st: Stack) -> dict:
    ports = st.state["broker"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
    env.update(rabbitmq.node_env(st.path("rabbitmq"), _node(st), ports["port"], ports["dist"]))
    return env


def _node(st: Stack) -> str:
    return f"moorage{st.hash}-n@localhost"


def start_broker(st: Stack) -> None:
    """Start the stack's RabbitMQ unless it runs; wait until it takes connections."""
    if not os.path.exists(SERVER):
        raise Fail(f"--notifications needs RabbitMQ: {SERVER} is missing (apt-get install rabbitmq-server)")
    ports = st.state.setdefault("broker", {})
    if not st.alive("rabbitmq"):
        for key in ("port", "dist"):
            if not ports.get(key) or not port_free(ports[key]):
                ports[key] = free_port()
        st.save()
    rabbitmq.prepare(st.path("rabbitmq"))
    if not st.alive("rabbitmq"):
        say(f"starting RabbitMQ on 127.0.0.1:{ports['port']}")
        ports["epmd_ours"] = ports.get("epmd_ours") or not rabbitmq.epmd_pids()
        st.spawn("rabbitmq", [SERVER], st.path("logs", "rabbitmq.log"), env=_env(st))
    st.wait_for("rabbitmq", f"RabbitMQ on 127.0.0.1:{ports['port']}", lambda: _ready(st), START_TIMEOUT)


def _ready(st: Stack) -> bool:
    if not tcp_open("127.0.0.1", st.state["broker"]["port"]):
        return False
    # The AMQP port opens before the node has booted its default vhost and user.
    ctl = "/usr/lib/rabbitmq/bin/rabbitmqctl"
    proc = subprocess.run(
        [ctl, "-n", _node(st), "await_startup", "--timeout", "5"],
        env=_env(st),
        capture_output=True,
        timeout=30,
    )
    return proc.returncode == 0


def stop_broker(st: Stack) -> None:
    if st.proc("rabbitmq") is not None:
        st.stop("rabbitmq", "RabbitMQ", STOP_TIMEOUT)


def forget_epmd(st: Stack) -> None:
    """At `down`: the epmd our RabbitMQ started goes too, once no Erlang node is left."""
    ports = st.state.get("broker") or {}
    if not ports.get("epmd_ours"):
        return
    rabbitmq.forget_epmd()
    ports["epmd_ours"] = False
    st.save()


def cmd_stop_broker(args) -> int:
    st = Stack(args.dir)
    st.lock()
    st.load()
    stop_broker(st)
    return 0


def cmd_start_broker(args) -> int:
    st = Stack(args.dir)
    st.lock()
    st.load()
    if not st.state.get("notifications"):
        raise Fail(f"the stack at {st.dir} runs without --notifications")
    start_broker(st)
    return 0
