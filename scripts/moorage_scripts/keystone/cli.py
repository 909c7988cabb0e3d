"""keystone: a real OpenStack Keystone on loopback, for devstack and tests.

    scripts/keystone up DIR [--port P] [--venv V] [--token-expiration SECONDS] [--admin-password PW]
    scripts/keystone down DIR [--purge]       # --purge: also its database, keys and state
    scripts/keystone status DIR               # exit 0 when it answers, 1 otherwise
    scripts/keystone install [--venv V]       # only make the virtualenv (CI can warm it)

`up` installs PyPI `keystone` and gunicorn, pinned by keystone-constraints.txt at the top of the
repository, into a virtualenv of their own (default ${XDG_CACHE_HOME:-~/.cache}/moorage/keystone-venv,
shared by every stack and rebuilt only when the constraints change; $MOORAGE_KEYSTONE_VENV or --venv
pick another), writes DIR/keystone.conf (SQLite, fernet tokens, [cache] on, bcrypt cost 4: test
settings), runs db_sync, fernet_setup, credential_setup and bootstrap (admin user, project and role;
roles member, reader, manager), and serves Keystone's public WSGI app with gunicorn (one worker,
no control socket) on 127.0.0.1:P. It writes the admin's OS_* variables to DIR/openrc and prints
them as `export` lines on stdout (progress goes to stderr), so `eval "$(scripts/keystone up DIR)"`
works. Tokens live --token-expiration seconds (default 7 days, so that tokens issued for a
development stack outlive a CI run). Every command is idempotent: `up` on a running Keystone only
checks it (and restarts it when its settings changed). Stdlib only.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import os
import pwd
import secrets
import shutil
import sys
import time

from .. import dispatch
from ..ports import free_port, port_free
from ..procs import alive, proc_start, stop_process
from .api import admin_token, answers
from .common import DEFAULT_EXPIRATION, SHIM, STOP_TIMEOUT, Fail, say, write_private
from .service import Keystone, keystone_conf, openrc, start, stray_gunicorns
from .venv import default_venv, ensure_venv


def cmd_up(args) -> int:
    t0 = time.monotonic()
    ks = Keystone(args.dir)
    os.makedirs(ks.dir, mode=0o700, exist_ok=True)
    os.chmod(ks.dir, 0o700)
    lock = ks.lock()
    try:
        ks.load()
        venv = ensure_venv(args.venv or ks.state.get("venv") or default_venv())
        ks.state["venv"] = venv
        running = alive(ks.proc)
        ks.state.setdefault("admin_password", secrets.token_urlsafe(18))
        password_changed = bool(args.admin_password) and args.admin_password != ks.state["admin_password"]
        if args.admin_password:
            ks.state["admin_password"] = args.admin_password
        if args.token_expiration is not None:
            if args.token_expiration < 1:
                raise Fail("--token-expiration must be at least 1 second")
            ks.state["token_expiration"] = args.token_expiration
        ks.state.setdefault("token_expiration", DEFAULT_EXPIRATION)

        old_port = ks.state.get("port")
        if args.port:
            ks.state["port"] = args.port
        elif not old_port or (not running and not port_free(old_port)):
            ks.state["port"] = free_port()
        port = ks.state["port"]
        if running and port != old_port:
            say(f"moving Keystone from port {old_port} to {port}")
            stop_process(ks.proc, "gunicorn", timeout=STOP_TIMEOUT, say=say)
            ks.state.pop("proc", None)
            running = False
        if not running and not port_free(port):
            raise Fail(f"port {port} on 127.0.0.1 is taken by another process; pick another with --port")

        conf = keystone_conf(ks)
        conf_path = ks.path("keystone.conf")
        try:
            with open(conf_path) as fh:
                conf_changed = fh.read() != conf
        except FileNotFoundError:
            conf_changed = True
        write_private(conf_path, conf)
        with open(ks.path("keystone_wsgi.py"), "w") as fh:
            fh.write(SHIM)

        setup = ks.state.get("setup", {})
        t1 = None
        if not setup.get("db") or not os.path.exists(ks.path("keystone.db")):
            setup = {}
            t1 = time.monotonic()
            say(f"setting up Keystone in {ks.dir} (db_sync, keys, bootstrap)")
            ks.manage(venv, "db_sync")
            setup["db"] = True
        # the default owner is a `keystone` system user, which does not exist here
        user = [
            "--keystone-user",
            pwd.getpwuid(os.getuid()).pw_name,
            "--keystone-group",
            grp.getgrgid(os.getgid()).gr_name,
        ]
        if not os.path.exists(ks.path("fernet-keys", "0")):
            ks.manage(venv, "fernet_setup", *user)
        if not os.path.exists(ks.path("credential-keys", "0")):
            ks.manage(venv, "credential_setup", *user)
        if setup.get("bootstrap_port") != port or password_changed:
            ks.manage(
                venv,
                "bootstrap",
                f"--bootstrap-password={ks.state['admin_password']}",
                "--bootstrap-username",
                "admin",
                "--bootstrap-project-name",
                "admin",
                "--bootstrap-role-name",
                "admin",
                "--bootstrap-region-id",
                "RegionOne",
                "--bootstrap-admin-url",
                ks.url,
                "--bootstrap-public-url",
                ks.url,
                "--bootstrap-internal-url",
                ks.url,
            )
            setup["bootstrap_port"] = port
            if t1 is not None:
                say(f"set up in {time.monotonic() - t1:.1f} s")
        ks.state["setup"] = setup
        ks.save()

        if running and (conf_changed or password_changed or not answers(port)):
            say(
                "restarting Keystone: "
                + (
                    "its settings changed"
                    if conf_changed or password_changed
                    else f"it does not answer on {ks.url}"
                )
            )
            stop_process(ks.proc, "gunicorn", timeout=STOP_TIMEOUT, say=say)
            ks.state.pop("proc", None)
            running = False
        if not running:
            say(f"starting Keystone on {ks.url}")
            start(ks, venv)
        admin_token(port, ks.state["admin_password"])  # the workers run and the database answers
        text = openrc(ks)
        write_private(ks.path("openrc"), text)
        ks.state["up"] = True
        ks.save()
    finally:
        lock.close()
    say(
        f"Keystone up on {ks.url} in {time.monotonic() - t0:.1f} s (admin credentials: `. "
        f"{ks.path('openrc')}`)"
    )
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0


def cmd_down(args) -> int:
    ks = Keystone(args.dir)
    if not os.path.isdir(ks.dir):
        say(f"no Keystone at {ks.dir}")
        return 0
    lock = ks.lock()
    try:
        existed = ks.load()
        was = alive(ks.proc)
        if ks.proc:
            stop_process(ks.proc, "gunicorn", timeout=STOP_TIMEOUT, say=say)
            ks.state.pop("proc", None)
        for pid in stray_gunicorns(ks):
            start_time = proc_start(pid)
            if start_time:
                say(f"stopping a gunicorn of this Keystone that was not recorded (pid {pid})")
                stop_process({"pid": pid, "start": start_time}, "gunicorn", timeout=STOP_TIMEOUT, say=say)
                was = True
        if existed:
            ks.state["up"] = False
            ks.save()
        if args.purge:
            for name in (
                "keystone.db",
                "fernet-keys",
                "credential-keys",
                "keystone.json",
                "openrc",
                "keystone.conf",
                "keystone_wsgi.py",
                "keystone.pid",
            ):
                target = ks.path(name)
                if os.path.isdir(target):
                    shutil.rmtree(target, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(target)
    finally:
        lock.close()
    say(f"Keystone at {ks.dir} stopped" if was else f"Keystone at {ks.dir} was not running")
    return 0


def cmd_status(args) -> int:
    ks = Keystone(args.dir)
    if not ks.load() or not alive(ks.proc):
        print(f"stopped ({ks.dir})")
        return 1
    ok = answers(ks.state["port"])
    print(f"{'running' if ok else 'not answering'} on {ks.url} (pid {ks.proc['pid']})")
    return 0 if ok else 1


def cmd_install(args) -> int:
    venv = ensure_venv(args.venv or default_venv())
    print(venv)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="keystone",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="set up (once) and start Keystone under DIR; prints the admin's openrc")
    up.add_argument("dir", metavar="DIR")
    up.add_argument("--port", type=int, help="port on 127.0.0.1 (default: a free one, kept across restarts)")
    up.add_argument("--venv", help=f"the virtualenv to install into (default {default_venv()})")
    up.add_argument(
        "--token-expiration",
        type=int,
        metavar="SECONDS",
        help=f"token lifetime (default {DEFAULT_EXPIRATION}, or what the last `up` set)",
    )
    up.add_argument("--admin-password", help="the admin's password (default: a random one, kept)")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop the Keystone under DIR")
    down.add_argument("dir", metavar="DIR")
    down.add_argument("--purge", action="store_true", help="also remove its database, keys and state")
    down.set_defaults(func=cmd_down)
    status = sub.add_parser("status", help="is the Keystone under DIR running and answering?")
    status.add_argument("dir", metavar="DIR")
    status.set_defaults(func=cmd_status)
    install = sub.add_parser("install", help="only create the virtualenv (prints its path)")
    install.add_argument("--venv")
    install.set_defaults(func=cmd_install)
    args = parser.parse_args(argv)
    return dispatch("keystone", args)
