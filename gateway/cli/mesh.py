"""`moorage mesh`: the routing mesh's listeners at one gateway address (gateway/mesh.py).

One process per address clients reach the gateway at ([mesh] address; it listens on [mesh]
bind, default the address). It reads the store's rows for that address every
[mesh] poll_interval seconds, opens and closes listeners to match (relay/mesh.py), and every
few seconds drops the rows of containers that stopped on their own and adds those of
containers their daemon restarted. Gateway replicas write the rows; this process needs only the
store and the agents, like the gateway.
"""

from __future__ import annotations

import logging
import signal
import sys
import time

RECONCILE_EVERY = 5.0  # seconds between the checks that the rows' containers still run


def cmd_mesh(args, settings_of) -> int:
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from gevent.event import Event

    from gateway import mesh, store
    from relay.mesh import Mesh

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = settings_of(args)
    if args.address:
        settings.mesh.address = args.address
    if args.bind:
        settings.mesh.bind = args.bind
    if not settings.mesh.address:
        print("moorage mesh: [mesh] address (or --address) is required", file=sys.stderr)
        return 2
    store.cooperative()
    store.init(settings.gateway.database)
    listeners = Mesh(settings.mesh.bind or settings.mesh.address, settings.mesh.udp_idle)
    stopping = Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stopping.set)
    logging.getLogger("moorage.mesh").info(
        "mesh for %s listening on %s", settings.mesh.address, listeners.bind
    )
    last_check = 0.0
    while not stopping.is_set():
        try:
            rows, wanted = mesh.wanted(settings)
            listeners.apply(wanted)
            mesh.listening(rows, listeners.listeners.keys())
            if time.monotonic() - last_check >= RECONCILE_EVERY:
                last_check = time.monotonic()
                if mesh.drop_stopped(rows) + mesh.adopt_running(settings):
                    listeners.apply(mesh.wanted(settings)[1])
        except Exception:  # the store or an agent away: keep the listeners, try again
            logging.getLogger("moorage.mesh").exception("mesh: this pass failed")
        finally:
            store.release_connection()
        stopping.wait(settings.mesh.poll_interval)
    listeners.close()
    return 0


def add_parser(subparsers, settings_of) -> None:
    p = subparsers.add_parser(
        "mesh",
        help="run the routing mesh: published ports at the gateway's address",
        description=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--address", help="the address clients are told (default: [mesh] address)")
    p.add_argument("--bind", help="the address to listen on (default: [mesh] bind, else the address)")
    p.set_defaults(func=lambda args: cmd_mesh(args, settings_of))
