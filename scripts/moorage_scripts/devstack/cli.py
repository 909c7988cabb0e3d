"""devstack: a complete Moorage stack on this machine, for development and tests.

    scripts/devstack up DIR [--hosts N] [--capacity K] [--docker-host unix:///PATH] [--keystone]
                            [--postgres] [--replicas R] [--tenancy dedicated|shared]
                            [--max-hosts N] [--release-grace SECONDS]
                            [--nova [--nova-grace SECONDS] [--nova-boot-timeout SECONDS]]
                            [--notifications] [--host-disk-mb N]
    scripts/devstack down DIR [--purge]     # --purge: also the daemons' data and moorage.db
    scripts/devstack hosts DIR
    scripts/devstack stop-host DIR I
    scripts/devstack start-host DIR I
    scripts/devstack stop-broker DIR         # --notifications: stop / start the stack's RabbitMQ
    scripts/devstack start-broker DIR
    scripts/devstack seed ENDPOINT          # import the offline busybox:latest into any daemon
    scripts/devstack busybox-tar FILE       # write the busybox rootfs tarball

`up` builds, under DIR (state, data, logs) and /run/moorage/HASH (sockets, exec roots):
  - a Linux bridge mrgHASH with 198.18.X.1/24 (X derived from HASH; 198.18.0.0/15 only);
  - per instance host I: a network namespace mrg-HASH-hI on a veth (198.18.X.(10+I)) with its
    own dockerd (vfs) entered with nsenter, seeded with an offline busybox:latest; its container
    networks come from 198.19.0.0/17 (docker0 198.19.0.1/24; the gateway's networks that span
    instances from 198.19.128.0/17), the same ranges in every host;
  - a registry v2 (Debian's docker-registry) on 198.18.X.1:5000;
  - the hosts' resolver on 198.18.X.1:53/udp, which refuses every name: each dockerd, in a mount
    namespace of its own, sees DIR/hosts/I/resolv.conf naming it and passes it to containers,
    so lookups of names outside the stack fail at once (resolver.py);
  - the embedded identity (DEVELOPMENT ONLY) with tenants alpha and beta and an operator; or,
    with --keystone, a real Keystone under DIR/keystone (scripts/keystone) with projects alpha and
    beta, a member user each (alpha-user, beta-user; the admin stays), their OS_* variables in
    DIR/tenants/T/openrc and project-scoped tokens (7 days) in DIR/tenants/T/config.json;
  - with --postgres, a PostgreSQL (Debian's server binaries, run as the `postgres` user) on
    127.0.0.1 and a free port, its cluster in /var/lib/moorage/devstack/HASH (kept by `down`,
    removed by `down --purge`, like DIR/moorage.db), with a role and database `moorage`;
  - the gateway (`moorage serve`): R replicas (--replicas R; R > 1 needs --postgres), each on
    its own port, on one database; one agent per host, inside the host's namespace, registered
    with the first replica (any would do: they share the database); each replica also listens
    with TLS on a port of its own (client certificates; the CA and the server certificate in
    DIR/tls), and each tenant's certificate, issued by the gateway, is in DIR/tenants/T/certs
    (MOORAGE_TLS_HOST, MOORAGE_CERTS_T in DIR/env);
  - with --nova (implies --keystone): a real Nova (scripts/nova) and no host at the start: the
    gateway's nova provider boots servers, and devstack plays cloud-init for each
    (moorage_scripts/devstack/novawatch.py: a host per ACTIVE server, running its user-data);
  - tenancy (--tenancy, default dedicated): each host runs one project's containers; a project
    with no room claims a free host, and beyond the --hosts N hosts the gateway's local provider
    boots more on demand (`devstack boot-host`, localhosts.py), up to --max-hosts in all, deleting
    them once empty for --release-grace; a host of the --hosts N is wiped before another
    project claims it;
  - with --notifications, a RabbitMQ of the stack's own on loopback (broker.py), the gateway's
    [notifications] transport_url and MOORAGE_TRANSPORT_URL in DIR/env;
  - with --host-disk-mb N, each host's dockerd data-root on an ext4 filesystem of N MB of its
    own (a loop-mounted DIR/hosts/I/disk.img, disk.py), which a test can fill (disk-full faults);
  - DIR/env, the shell `export` lines that tests source; `up` also prints them on stdout
    (progress goes to stderr), so `eval "$(scripts/devstack up DIR)"` works.
Every command is idempotent; every name derives from a hash of DIR's absolute path, so stacks
under different DIRs coexist. Stdlib only: it imports nothing from the project.
"""

from __future__ import annotations

import argparse

from .. import dispatch
from . import localhosts, novawatch, resolver
from .broker import cmd_start_broker, cmd_stop_broker
from .common import Usage
from .down import cmd_down
from .hosts import cmd_busybox_tar, cmd_hosts, cmd_seed, cmd_start_host, cmd_stop_host
from .up import cmd_up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="devstack",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="bring up (or repair) the stack under DIR; prints its env")
    up.add_argument("dir", metavar="DIR")
    up.add_argument("--hosts", type=int, metavar="N", help="instance hosts (default 1)")
    up.add_argument("--capacity", type=int, metavar="K", help="containers per host (default: no limit)")
    up.add_argument(
        "--docker-host",
        metavar="unix:///PATH",
        help="use this existing daemon as the only host (never stopped by down)",
    )
    up.add_argument(
        "--keystone",
        action="store_true",
        help="a real Keystone (scripts/keystone) instead of the embedded identity",
    )
    up.add_argument(
        "--postgres",
        action="store_true",
        help="a real PostgreSQL (Debian's, run as the postgres user) instead of SQLite",
    )
    up.add_argument(
        "--replicas",
        type=int,
        metavar="R",
        help="gateway replicas on the one database (default 1; R > 1 needs --postgres)",
    )
    up.add_argument(
        "--nova",
        action="store_true",
        help="a real Nova (scripts/nova; implies --keystone): no host at the start, the gateway's "
        "nova provider boots them",
    )
    up.add_argument(
        "--nova-grace",
        type=float,
        metavar="SECONDS",
        help="--nova: delete an instance empty this long (default 60)",
    )
    up.add_argument(
        "--nova-boot-timeout",
        type=float,
        metavar="SECONDS",
        help="--nova: how long a create waits for a new instance's agent (default 120)",
    )
    up.add_argument(
        "--tenancy",
        choices=("dedicated", "shared"),
        help="dedicated (default): each host runs one project's containers, claimed by its first "
        "and wiped before another project's; shared: projects share hosts",
    )
    up.add_argument(
        "--max-hosts",
        type=int,
        metavar="N",
        help="hosts in all, booted on demand beyond --hosts when every host is full or "
        "(dedicated) another project's (default 8; --hosts N means no host is booted)",
    )
    up.add_argument(
        "--release-grace",
        type=float,
        metavar="SECONDS",
        help="a host that stays empty this long is deleted (booted on demand) or, dedicated, "
        "wiped and freed for any project (default 60)",
    )
    up.add_argument(
        "--notifications",
        action="store_true",
        help="a RabbitMQ on loopback for the gateway's notifications (MOORAGE_TRANSPORT_URL)",
    )
    up.add_argument(
        "--host-disk-mb",
        type=int,
        metavar="N",
        help="each host's dockerd data-root on a filesystem of N MB of its own (loop-mounted "
        "DIR/hosts/I/disk.img), to fill in disk-full tests (default: the machine's disk)",
    )
    up.add_argument("--no-gateway", action="store_true", help=argparse.SUPPRESS)
    up.add_argument(
        "--no-mesh",
        action="store_true",
        help="published ports at the instances' addresses, not at 127.0.0.1 (the mesh off)",
    )
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop everything of the stack under DIR (keeps logs)")
    down.add_argument("dir", metavar="DIR")
    down.add_argument(
        "--purge",
        action="store_true",
        help="also delete the daemons' data (DIR/hosts/*/docker), DIR/moorage.db and the "
        "PostgreSQL cluster of a --postgres stack",
    )
    down.set_defaults(func=cmd_down)

    hosts = sub.add_parser("hosts", help="print `UUID ENDPOINT` per instance host, fill order")
    hosts.add_argument("dir", metavar="DIR")
    hosts.set_defaults(func=cmd_hosts)

    for name, func, text in (
        ("stop-host", cmd_stop_host, "stop host I's agent and dockerd"),
        ("start-host", cmd_start_host, "start host I's dockerd and agent"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("dir", metavar="DIR")
        p.add_argument("index", metavar="I", help="1-based, fill order")
        p.set_defaults(func=func)

    boot = sub.add_parser("boot-host", help=argparse.SUPPRESS)  # the local provider's (localhosts.py)
    boot.add_argument("dir", metavar="DIR")
    boot.set_defaults(func=localhosts.cmd_boot_host)
    delete = sub.add_parser("delete-host", help=argparse.SUPPRESS)
    delete.add_argument("dir", metavar="DIR")
    delete.add_argument("uuid", metavar="UUID")
    delete.set_defaults(func=localhosts.cmd_delete_host)
    listed = sub.add_parser("list-hosts", help=argparse.SUPPRESS)
    listed.add_argument("dir", metavar="DIR")
    listed.set_defaults(func=localhosts.cmd_list_hosts)
    for name, func, text in (
        ("stop-broker", cmd_stop_broker, "stop the stack's RabbitMQ (--notifications)"),
        ("start-broker", cmd_start_broker, "start the stack's RabbitMQ again"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("dir", metavar="DIR")
        p.set_defaults(func=func)

    seed = sub.add_parser("seed", help="import the offline busybox:latest into a daemon")
    seed.add_argument("endpoint", metavar="ENDPOINT", help="unix:///PATH or tcp://HOST:PORT")
    seed.add_argument("--tar", help="a tarball from `busybox-tar` (default: build one)")
    seed.set_defaults(func=cmd_seed)

    watch = sub.add_parser("nova-watch", help=argparse.SUPPRESS)  # the --nova watcher (novawatch.py)
    watch.add_argument("dir", metavar="DIR")
    watch.set_defaults(func=lambda a: novawatch.watch(a.dir))

    refuse = sub.add_parser("dns-refuse", help=argparse.SUPPRESS)  # the hosts' resolver (resolver.py)
    refuse.add_argument("address", metavar="ADDRESS")
    refuse.add_argument("--stack", metavar="DIR", help="the stack it serves (a mark for `down`'s sweep)")
    refuse.set_defaults(func=lambda a: resolver.serve(a.address))

    bbtar = sub.add_parser("busybox-tar", help="write the busybox rootfs tarball to FILE")
    bbtar.add_argument("file", metavar="FILE")
    bbtar.set_defaults(func=cmd_busybox_tar)

    args = parser.parse_args(argv)
    return dispatch("devstack", args, usage=Usage)
