"""`moorage`: the gateway, the agent, the relay tier, and the operator's commands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def _settings(args):
    from gateway import config

    try:
        settings = config.load(args.config)
    except config.SettingsError as exc:
        print(f"moorage: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if getattr(args, "db", None):
        settings.gateway.database = args.db
    return settings


# -- serve / relay ---------------------------------------------------------------------------
def cmd_serve(args) -> int:
    from gateway import logs, server

    settings = _settings(args)
    if args.bind:
        settings.gateway.bind = args.bind
        if settings.gateway.tls_bind and not args.tls_bind:
            # The command line's listeners replace the file's, TLS ones included (--tls-bind);
            # the file's certificate was for its TLS listeners, not for every --bind.
            settings.gateway.tls_bind = []
            settings.gateway.tls_cert = settings.gateway.tls_key = ""
    if args.workers:
        settings.gateway.workers = args.workers
    if getattr(args, "tls_bind", None):
        settings.gateway.tls_bind = args.tls_bind
    for key in ("tls_cert", "tls_key", "tls_ca", "log_file", "pid_file", "metrics_bind"):
        if getattr(args, key, None):
            setattr(settings.gateway, key, getattr(args, key))
    if not settings.gateway.registration_secret:
        settings.gateway.registration_secret = os.environ.get("MOORAGE_REGISTRATION_SECRET", "")
    relay_only = args.command == "relay"
    # First: the metrics' multiprocess directory is named before any module imports them.
    try:
        logs.formatter(settings.gateway.log_format)
        metrics_dir = server.prepare_metrics(settings)
    except ValueError as exc:
        print(f"moorage: {settings.source or 'settings'}: {exc}", file=sys.stderr)
        return 2
    from gateway import quotas, store

    try:
        quotas.defaults(settings)
    except quotas.QuotaValueError as exc:
        print(f"moorage: {settings.source or 'settings'}: {exc}", file=sys.stderr)
        return 2
    store.init(settings.gateway.database)  # migrate once, before workers fork
    store.close()  # workers open their own connections (a socket must not be shared across a fork)

    def factory():
        from gateway.app import Gateway
        from gateway.dockerapi import ROUTES, STREAMING_ROUTES

        return Gateway(
            settings, STREAMING_ROUTES if relay_only else ROUTES, name="relay" if relay_only else "gateway"
        )

    try:
        server.run(
            settings,
            factory,
            name="moorage-relay" if relay_only else "moorage-gateway",
            metrics_dir=metrics_dir,
        )
    except (ValueError, OSError) as exc:  # the TLS settings (server.run checks them first)
        print(f"moorage: {settings.source or 'settings'}: {exc}", file=sys.stderr)
        return 2
    finally:
        server.cleanup_metrics(metrics_dir)
    return 0


# -- agent -------------------------------------------------------------------------------------
def cmd_agent(args) -> int:
    from gevent import monkey

    monkey.patch_all()
    import gevent

    from agent.registration import Registrar
    from agent.server import AgentProxy, serve
    from agent.sockets import TenantSockets
    from gateway.wire import TENANT_SOCKET_DIR_FACT
    from relay.upstream import Endpoint

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    secret = args.registration_secret or os.environ.get("MOORAGE_REGISTRATION_SECRET", "")
    if args.registration_secret_file:
        with open(args.registration_secret_file) as fh:
            secret = fh.read().strip()
    bootstrap = args.bootstrap_secret or ""
    if args.bootstrap_secret_file:
        with open(args.bootstrap_secret_file) as fh:
            bootstrap = fh.read().strip()
    if not secret and not bootstrap:
        print(
            "moorage agent: a registration secret is required (--registration-secret or "
            "MOORAGE_REGISTRATION_SECRET), or a bootstrap secret from the pool (--bootstrap-secret-file)",
            file=sys.stderr,
        )
        return 2
    if not args.uuid and not bootstrap:
        print(
            "moorage agent: --uuid is required (the Nova server ID) unless it registers with a "
            "bootstrap secret",
            file=sys.stderr,
        )
        return 2
    host, _, port = args.listen.rpartition(":")
    docker = Endpoint.parse(args.docker)
    proxy = AgentProxy(docker, args.uuid or "")
    serve((host or "0.0.0.0", int(port)), proxy)
    advertise = args.advertise or f"tcp://{host}:{port}"
    if args.state_dir:
        os.makedirs(args.state_dir, exist_ok=True)

    registrar = None

    def on_secret(value: str) -> None:
        proxy.secret = value
        uuid = registrar.uuid if registrar else args.uuid
        if bootstrap:
            proxy.instance_uuid = uuid
        if args.state_dir:
            # The bootstrap secret is spent: a restart resumes with what it bought. A static
            # host's agent presents it when it registers again, which is how the gateway tells
            # its own restart from another agent claiming a live instance's UUID.
            record = {"uuid": uuid, "gateway": args.gateway, "agent_url": advertise, "agent_secret": value}
            path = os.path.join(args.state_dir, "registered")
            fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(record, fh)
            os.replace(path + ".tmp", path)

    registrar = Registrar(
        args.gateway,
        secret,
        args.uuid or "",
        advertise,
        args.capacity,
        docker,
        on_secret,
        provider=args.provider,
        bootstrap_secret=bootstrap,
        public_address=args.public_address or "",
        on_segments=proxy.segments.replace_all,
        on_underlay=proxy.segments.serve_names_at,
    )
    gevent.spawn(proxy.segments.reconcile_forever)
    saved = {}
    if args.state_dir:
        try:
            with open(os.path.join(args.state_dir, "registered")) as fh:
                saved = json.load(fh)
        except (OSError, ValueError):
            saved = {}
    if not bootstrap and saved.get("uuid") == args.uuid and saved.get("gateway") == args.gateway:
        registrar.previous_secret = str(saved.get("agent_secret") or "")
    if bootstrap and saved.get("agent_secret") and saved.get("uuid") and saved.get("gateway") == args.gateway:
        registrar.uuid = proxy.instance_uuid = saved["uuid"]
        registrar.secret = proxy.secret = saved["agent_secret"]
        logging.getLogger("moorage.agent").info("resuming as instance %s (registered before)", saved["uuid"])
    socket_dir = args.tenant_socket_dir or os.path.join(args.state_dir or "/run/moorage-agent", "sockets")
    sockets = TenantSockets(socket_dir, args.gateway)
    try:
        if sockets.available:
            sockets.prepare()
    except OSError as exc:
        # Without its directory the agent serves no tenant socket: the gateway then refuses a
        # create that binds the Docker socket on this instance, saying so.
        logging.getLogger("moorage.agent").warning("no tenant sockets: %s: %s", socket_dir, exc)
        sockets.gateway = None
    if sockets.available:
        proxy.sockets = sockets
        registrar.agent_facts[TENANT_SOCKET_DIR_FACT] = sockets.directory

        def sweep() -> None:
            while True:
                gevent.sleep(10)
                sockets.sweep(docker)

        gevent.spawn(sweep)
    gevent.spawn(registrar.run).join()
    return 0


# -- operator commands -----------------------------------------------------------------------
def _print(rows: list[dict], columns: list[str], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(rows, indent=2, default=str))
        return
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    print("   ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("   ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


def _instance_row(instance, settings) -> dict:
    from gateway import instances, store

    count = store.Container.select().where(store.Container.instance == instance.uuid).count()
    live = instances.is_live(instance, settings)
    state = instance.state if (live or instance.state != store.INSTANCE_UP) else "unreachable"
    if instance.daemon_down:  # the intent stays as it was: a draining one shows both
        state = (
            store.INSTANCE_DOWN
            if instance.state == store.INSTANCE_UP
            else f"{instance.state}, {store.INSTANCE_DOWN}"
        )
    return {
        "uuid": instance.uuid,
        "state": state,
        "provider": instance.provider,
        # dedicated tenancy: the project that claimed it ("-": free for any)
        "project": instance.project or ("-" if settings.placement.tenancy != "shared" else ""),
        "agent": instance.agent_url,
        "containers": count,
        "capacity": instance.capacity or settings.placement.capacity,
        "docker": instance.daemon_version,
        "api": instance.api_version,
        "last_heartbeat": instance.last_heartbeat.isoformat() + "Z",
    }


def cmd_instances(args) -> int:
    from gateway import store

    settings = _settings(args)
    store.init(settings.gateway.database)
    if args.action == "list":
        rows = [_instance_row(i, settings) for i in store.Instance.select().order_by(store.Instance.position)]
        columns = ["uuid", "state", "provider", "containers", "capacity", "docker", "agent"]
        if settings.placement.tenancy != "shared":
            columns.insert(3, "project")
        _print(rows, columns, args.format)
        return 0
    instance = store.Instance.get_or_none(store.Instance.uuid == args.uuid)
    if instance is None:
        print(f"moorage: no such instance: {args.uuid}", file=sys.stderr)
        return 1
    if args.action == "show":
        row = _instance_row(instance, settings)
        row["facts"] = instance.facts
        if args.format == "json":
            print(json.dumps(row, indent=2, default=str))
        else:
            for key, value in row.items():
                print(f"{key + ':':16} {value}")
        return 0
    if args.action == "drain":
        instance.state = store.INSTANCE_DRAINING
        instance.save()
        print(
            f"instance {instance.uuid} is draining: no new containers will be placed on it "
            "(its containers keep running and are listed; `moorage instances undrain` takes it back)"
        )
        return 0
    if args.action == "undrain":
        if instance.state == store.INSTANCE_DRAINING:
            instance.state = store.INSTANCE_UP
            instance.save()
        print(f"instance {instance.uuid} takes new containers again")
        return 0
    if args.action == "remove":
        count = store.Container.select().where(store.Container.instance == instance.uuid).count()
        if count:
            print(
                f"moorage: instance {instance.uuid} still holds {count} containers; remove them "
                "(or drain it and wait) first",
                file=sys.stderr,
            )
            return 1
        instance.delete_instance()
        print(f"instance {instance.uuid} removed from the map")
        return 0
    return 2


def cmd_containers(args) -> int:
    from gateway import store

    settings = _settings(args)
    store.init(settings.gateway.database)
    query = store.Container.select().where(~store.Container.id.startswith("reserved-"))
    if args.project:
        query = query.where(store.Container.project == args.project)
    rows = [
        {
            "id": c.id[:12] if args.format != "json" else c.id,
            "name": c.name,
            "project": c.project,
            "instance": c.instance_id,
            "created": c.created_at.isoformat() + "Z",
        }
        for c in query.order_by(store.Container.created_at)
    ]
    _print(rows, ["id", "name", "project", "instance", "created"], args.format)
    return 0


def cmd_quota(args) -> int:
    from gateway import fairshare, quotas, store

    settings = _settings(args)
    keys = (*quotas.RESOURCES, *fairshare.KEYS)
    try:
        quotas.defaults(settings)
        values = {}
        for item in args.values if args.action != "show" else ():
            key, sep, value = item.partition("=")
            key = key.strip().lower()
            if key in fairshare.KEYS:  # the fair shares' (gateway/fairshare.py)
                if args.action == "set":
                    values[key] = fairshare.parse_value(key, value if sep else "")
            elif args.action == "set":
                values.update([quotas.parse_assignment(item)])
            else:
                quotas.parse_value(key, -1)  # a known resource
    except ValueError as exc:
        print(f"moorage: {exc}", file=sys.stderr)
        return 2
    if args.action in ("set", "unset") and not args.values:
        print(
            f"moorage: quota {args.action} needs at least one "
            f"{'KEY=VALUE' if args.action == 'set' else 'KEY'} ({', '.join(keys)})",
            file=sys.stderr,
        )
        return 2
    store.init(settings.gateway.database)
    if args.action == "set":
        quotas.set_limits(args.project, values)
    elif args.action == "unset":
        quotas.unset_limits(args.project, [k.lower() for k in args.values])
    if args.action != "show" and args.format != "json":
        print(f"quotas of project {args.project}:")
    report = {**quotas.report(args.project, settings), **fairshare.report(args.project, settings)}
    if args.format == "json":
        rows = {
            r: {
                **v,
                "limit": v["limit"] / quotas.NANO if r == "cpus" and v["limit"] is not None else v["limit"],
                "in_use": v["in_use"] / quotas.NANO if r == "cpus" else v["in_use"],
            }
            for r, v in report.items()
        }
        print(json.dumps({"project": args.project, "quotas": rows}, indent=2))
        return 0
    rows = [
        {
            "resource": r,
            "limit": quotas.format_value(r, v["limit"]),
            "in_use": quotas.format_value(r, v["in_use"]),
            "source": v["source"],
        }
        for r, v in report.items()
    ]
    _print(rows, ["resource", "in_use", "limit", "source"], "table")
    return 0


def cmd_images(args) -> int:
    """Operator's images: publish a base image to every project, or take it back."""
    from gateway import imagemap, instances, store
    from gateway.agentclient import AgentClient, UpstreamError

    settings = _settings(args)
    store.init(settings.gateway.database)
    IR = store.ImageRef
    if args.action == "list":
        rows = [
            {
                "reference": r.reference,
                "id": r.image_id if args.format == "json" else r.image_id[7:19],
                "instances": len(imagemap.holders(r.image_id)),
            }
            for r in IR.select().where(IR.project == imagemap.PUBLIC).order_by(IR.reference)
        ]
        _print(rows, ["reference", "id", "instances"], args.format)
        return 0
    if not args.reference:
        print(f"moorage: images {args.action} needs a reference (e.g. busybox:latest)", file=sys.stderr)
        return 2
    try:
        reference = imagemap.normalize(args.reference)
    except ValueError as exc:
        print(f"moorage: {args.reference}: {exc}", file=sys.stderr)
        return 2
    if args.action == "unpublish":
        count = IR.delete().where((IR.project == imagemap.PUBLIC) & (IR.reference == reference)).execute()
        if not count:
            print(f"moorage: {reference} is not published", file=sys.stderr)
            return 1
        print(
            f"{reference} is no longer public (the daemons keep it; projects that tagged it keep their tags)"
        )
        return 0
    if args.id:
        # Instances that do not run yet (a pool that boots them, as nova does) will hold it:
        # record it without asking the daemons; each serves its own copy of the reference.
        image_id = imagemap.full_id(args.id)
        if image_id is None:
            print(f"moorage: --id {args.id}: not a full image ID (sha256:<64 hex digits>)", file=sys.stderr)
            return 2
        imagemap.record(imagemap.PUBLIC, reference, image_id)
        print(f"{reference} is public: every project can see and use it (recorded as {image_id[7:19]})")
        return 0
    found = 0
    for instance in instances.live_instances(settings, fresh=True):
        try:
            status, image = AgentClient(instance).get_json(f"/images/{reference}/json", timeout=30)
        except UpstreamError as exc:
            print(f"moorage: instance {instance.uuid} did not answer: {exc}", file=sys.stderr)
            continue
        if status != 200 or not isinstance(image, dict):
            continue
        image_id = image["Id"]
        imagemap.record(imagemap.PUBLIC, reference, image_id, instance.uuid)
        found += 1
    if not found:
        print(f"moorage: no live instance holds {reference}; put it on the daemons first", file=sys.stderr)
        return 1
    print(f"{reference} is public: every project can see and use it ({found} instance(s) hold it)")
    return 0


def cmd_db(args) -> int:
    from gateway import store

    settings = _settings(args)
    store.init(settings.gateway.database, migrate=False)
    before, after = store.upgrade()
    print(
        f"database schema: version {before} -> {after}"
        if before != after
        else f"database schema is up to date (version {after})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moorage", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (default: $MOORAGE_CONFIG)")
    parser.add_argument("--db", help="database URL, overriding the settings file")
    sub = parser.add_subparsers(dest="command", required=True)

    for name, helptext in (
        ("serve", "run the gateway (the Docker API endpoint)"),
        ("relay", "run a relay tier: the streaming routes only"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--bind", action="append", help="tcp://HOST:PORT or unix:///PATH (repeatable)")
        p.add_argument("--workers", type=int)
        p.add_argument("--tls-cert")
        p.add_argument("--tls-key")
        p.add_argument("--tls-ca", help="verify client certificates against this CA")
        p.add_argument(
            "--tls-bind",
            action="append",
            help="a TLS listener beside --bind (repeatable; with --bind, only these)",
        )
        p.add_argument("--log-file")
        p.add_argument("--pid-file")
        p.add_argument("--metrics-bind", help="serve Prometheus metrics on HOST:PORT")
        p.set_defaults(func=cmd_serve)

    p = sub.add_parser("agent", help="run an instance's agent beside its dockerd")
    p.add_argument("--gateway", required=True, help="the gateway's URL, as reachable from this instance")
    p.add_argument("--registration-secret")
    p.add_argument("--registration-secret-file")
    p.add_argument("--bootstrap-secret", help=argparse.SUPPRESS)
    p.add_argument(
        "--bootstrap-secret-file",
        help="a one-time secret from the gateway's pool (user-data): register with it instead",
    )
    p.add_argument("--docker", default="unix:///var/run/docker.sock", help="the local dockerd endpoint")
    p.add_argument("--listen", default="0.0.0.0:2376", help="HOST:PORT to serve the gateway on")
    p.add_argument("--advertise", help="the URL the gateway should use (default: tcp://LISTEN)")
    p.add_argument(
        "--public-address",
        help="the address clients reach this instance's published ports on "
        "(default: the host of --advertise)",
    )
    p.add_argument(
        "--uuid",
        help="this instance's UUID (the Nova server ID); with a bootstrap secret, the gateway tells it",
    )
    p.add_argument("--capacity", type=int, default=0, help="containers this instance holds (0: no limit)")
    p.add_argument("--provider", default="static")
    p.add_argument("--state-dir")
    p.add_argument(
        "--tenant-socket-dir",
        help="where containers' tenant sockets are made (default: STATE_DIR/sockets, else "
        "/run/moorage-agent/sockets)",
    )
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("instances", help="list and manage instances")
    p.add_argument("action", choices=["list", "show", "drain", "undrain", "remove"])
    p.add_argument("uuid", nargs="?")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_instances)

    p = sub.add_parser("containers", help="list containers in the map")
    p.add_argument("action", choices=["list"])
    p.add_argument("--project")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_containers)

    p = sub.add_parser(
        "quota",
        help="a project's quotas: show, set or unset limits",
        description="Limits per project: containers, memory (bytes, or 512m/8g), cpus (2, 0.5), "
        "volumes, networks, images; and its fair share of the gateway: rate (requests per "
        "second) and streams (open at once). VALUE -1 or 'unlimited' lifts a limit for the "
        "project; `unset` returns it to the [quotas] or [rate_limits] default of the settings file.",
    )
    p.add_argument("action", choices=["show", "set", "unset"])
    p.add_argument("project", metavar="PROJECT_ID")
    p.add_argument(
        "values",
        nargs="*",
        metavar="KEY=VALUE | KEY",
        help="set: containers=5 memory=8g rate=20 streams=10 ...; unset: containers memory rate ...",
    )
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_quota)

    p = sub.add_parser("images", help="public base images, visible to every project")
    p.add_argument("action", choices=["publish", "unpublish", "list"])
    p.add_argument("reference", nargs="?", help="an image name on the daemons, e.g. busybox:latest")
    p.add_argument(
        "--id",
        help="publish: record this image ID without asking the daemons (the image "
        "instances a pool boots later will hold)",
    )
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_images)

    from gateway.cli import certs, login, mesh, notices

    login.add_parser(sub)
    certs.add_parser(sub, _settings)
    notices.add_parser(sub, _settings)
    mesh.add_parser(sub, _settings)

    p = sub.add_parser("db", help="database schema")
    p.add_argument("action", choices=["upgrade"])
    p.set_defaults(func=cmd_db)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "instances" and args.action != "list" and not args.uuid:
        parser.error(f"instances {args.action} needs an instance UUID")
    return args.func(args) or 0
