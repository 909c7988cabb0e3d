"""nova: a real OpenStack Nova control plane on loopback, for devstack and tests.

    scripts/nova up DIR --keystone-openrc FILE   # Keystone's admin openrc (scripts/keystone writes one)
    scripts/nova down DIR [--purge]              # --purge: also its databases and state
    scripts/nova status DIR
    scripts/nova install                         # only the apt packages and the virtualenv (CI can warm it)

`up` runs, all on 127.0.0.1 with free ports and every file under DIR:
  - MariaDB and RabbitMQ from Debian (apt-get installs mariadb-server and rabbitmq-server when
    missing), each with its data under DIR, started by hand (no systemd);
  - placement, neutron (API only: ml2 with no mechanism drivers, no agents) and nova-api under
    gunicorn through argv shims; nova-conductor, nova-scheduler and nova-compute with
    compute_driver = fake.FakeDriverWithoutFakeNodes (no hypervisor; servers go ACTIVE in ~1 s);
  - in Keystone: project `service` with users nova, placement and neutron (roles admin and
    service), the endpoints of compute, placement and network, and the project `moorage` with
    user `moorage` (member): the gateway's service credentials for its nova provider;
  - the flavor m1.moorage (1 vCPU, 256 MB, ephemeral 1 GB: boots without Glance).
Python packages come from PyPI, pinned by nova-constraints.txt, in a virtualenv of their own
(default ${XDG_CACHE_HOME:-~/.cache}/moorage/nova-venv, rebuilt only when the pins change;
$MOORAGE_NOVA_VENV picks another). `up` prints the gateway's [nova] credentials as `export`
lines (also in DIR/novarc); progress goes to stderr. Every command is idempotent; every
process is recorded in DIR/nova.json and stopped by PID. Stdlib only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import sys
import time

from .. import dispatch, rabbitmq
from ..procs import alive, stop_process
from .backends import start_mariadb, start_rabbitmq
from .common import SERVICES, STOP_TIMEOUT, Fail, parse_exports, say, write_private
from .configs import db_sync, write_configs
from .identity import Keystone, setup_keystone
from .install import default_venv, ensure_apt, ensure_venv
from .services import ensure_flavor, novarc, start_services, wait_compute, wait_services
from .state import Nova


def cmd_up(args) -> int:
    t0 = time.monotonic()
    if os.geteuid() != 0:
        raise Fail("must run as root (MariaDB and RabbitMQ run as root here; apt)")
    try:
        with open(args.keystone_openrc) as fh:
            admin = parse_exports(fh.read())
    except OSError as exc:
        raise Fail(f"cannot read --keystone-openrc: {exc}") from exc
    if not admin.get("OS_AUTH_URL") or not admin.get("OS_PASSWORD"):
        raise Fail(f"{args.keystone_openrc} has no OS_AUTH_URL/OS_PASSWORD")
    nv = Nova(args.dir)
    os.makedirs(nv.dir, mode=0o700, exist_ok=True)
    os.makedirs(nv.path("logs"), exist_ok=True)
    lock = nv.lock()
    try:
        nv.load()
        nv.state.setdefault("procs", {})
        ensure_apt()
        venv = ensure_venv(args.venv or nv.state.get("venv") or default_venv())
        nv.state["venv"] = venv
        for key in ("db_password", "service_password", "moorage_password"):
            nv.state.setdefault(key, secrets.token_hex(12))
        for name in ("placement", "neutron", "nova-api"):
            nv.port(name)
        nv.save()
        start_mariadb(nv)
        start_rabbitmq(nv)
        setup_keystone(nv, admin)
        nv.save()
        if write_configs(nv, admin, venv):
            running = [n for n in SERVICES if alive(nv.proc(n))]
            if running:
                say(f"configuration changed: restarting {', '.join(running)}")
                for name in running:
                    stop_process(nv.proc(name), name, timeout=STOP_TIMEOUT, say=say)
        db_sync(nv, venv)
        start_services(nv, venv)
        ks = Keystone(admin["OS_AUTH_URL"])
        token = ks.login(admin["OS_USERNAME"], admin["OS_PASSWORD"], admin["OS_PROJECT_NAME"])
        wait_compute(nv, venv, token)
        wait_services(nv, token, nv.state.get("services_started", 0))
        ensure_flavor(nv, token)
        text = novarc(nv, admin)
        write_private(nv.path("novarc"), text)
        nv.state["up"] = True
        nv.save()
    finally:
        lock.close()
    say(f"Nova up on http://127.0.0.1:{nv.state['ports']['nova-api']}/v2.1 in {time.monotonic() - t0:.0f} s")
    sys.stdout.write(text)
    return 0


def stop_all(nv: Nova) -> bool:
    was = False
    order = [
        "nova-api",
        "nova-compute",
        "nova-scheduler",
        "nova-conductor",
        "neutron",
        "placement",
        "rabbitmq",
        "mariadb",
    ]
    procs = nv.state.get("procs", {})
    for name in order + [n for n in procs if n not in order]:
        rec = procs.get(name)
        if not rec:
            continue
        if alive(rec):
            was = True
            stop_process(rec, name, timeout=30 if name in ("rabbitmq", "mariadb") else STOP_TIMEOUT, say=say)
        procs.pop(name, None)
        nv.save()
    if nv.state.get("epmd_ours"):
        rabbitmq.forget_epmd()  # no Erlang node left: the epmd our RabbitMQ started goes too
        nv.state["epmd_ours"] = False
    return was


def cmd_down(args) -> int:
    nv = Nova(args.dir)
    if not os.path.isdir(nv.dir):
        say(f"no Nova at {nv.dir}")
        return 0
    lock = nv.lock()
    try:
        existed = nv.load()
        was = stop_all(nv)
        if existed:
            nv.state["up"] = False
            nv.save()
        if args.purge:
            for name in ("mysql", "rabbitmq", "state", "lock", "etc"):
                shutil.rmtree(nv.path(name), ignore_errors=True)
            for name in ("nova.json", "novarc", "mysql.sock"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(nv.path(name))
    finally:
        lock.close()
    say(f"Nova at {nv.dir} stopped" if was else f"Nova at {nv.dir} was not running")
    return 0


def cmd_status(args) -> int:
    nv = Nova(args.dir)
    if not nv.load():
        print(f"stopped ({nv.dir})")
        return 1
    down = [n for n in ("mariadb", "rabbitmq", *SERVICES) if not alive(nv.proc(n))]
    if down:
        print(f"not running: {', '.join(down)}")
        return 1
    print(f"running: nova-api on http://127.0.0.1:{nv.state['ports']['nova-api']}/v2.1")
    return 0


def cmd_install(args) -> int:
    ensure_apt()
    print(ensure_venv(args.venv or default_venv()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nova",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="set up (once) and start Nova under DIR; prints the gateway's credentials")
    up.add_argument("dir", metavar="DIR")
    up.add_argument("--keystone-openrc", required=True, metavar="FILE", help="Keystone's admin openrc")
    up.add_argument("--venv", help=f"the virtualenv (default {default_venv()})")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop everything of the Nova under DIR")
    down.add_argument("dir", metavar="DIR")
    down.add_argument("--purge", action="store_true", help="also its databases, queues and state")
    down.set_defaults(func=cmd_down)
    status = sub.add_parser("status", help="is the Nova under DIR running?")
    status.add_argument("dir", metavar="DIR")
    status.set_defaults(func=cmd_status)
    install = sub.add_parser("install", help="only the apt packages and the virtualenv (prints its path)")
    install.add_argument("--venv")
    install.set_defaults(func=cmd_install)
    args = parser.parse_args(argv)
    return dispatch("nova", args)
