"""`devstack up`: bring the stack up, or repair it, piece by piece; every step is idempotent."""

from __future__ import annotations

import os
import secrets
import sys
import time

from ..ports import free_port, port_free
from . import novaconf, novawatch
from .agents import forget_removed_hosts, start_agent
from .broker import start_broker
from .busybox import build_busybox_tar, seed_busybox
from .common import MAX_HOSTS, MAX_REPLICAS, REFERENCE, TENANTS, Fail, Usage, require_root, say
from .daemons import start_dockerd, start_registry, wait_dockerd
from .endpoints import answers
from .envfile import write_env
from .gateways import gateway_ports, publish_busybox, start_gateways, write_gateway_config
from .identity import ensure_identity, ensure_keystone_identity
from .mesh import start_mesh
from .network import setup_network
from .pg import start_postgres
from .resolver import start_resolver
from .state import Stack, running_with_postgres
from .tls import ensure_pki, tenant_certs


def cmd_up(args) -> int:
    if args.replicas is not None and not 1 <= args.replicas <= MAX_REPLICAS:
        raise Usage(f"--replicas must be between 1 and {MAX_REPLICAS}")
    if (
        args.replicas is not None
        and args.replicas > 1
        and not args.postgres
        and not running_with_postgres(args.dir)
    ):
        raise Usage(
            f"--replicas {args.replicas} needs --postgres: gateway replicas share one database, "
            "and SQLite serves a single gateway only"
        )
    if args.hosts is not None and not 1 <= args.hosts <= MAX_HOSTS:
        raise Usage(f"--hosts must be between 1 and {MAX_HOSTS}")
    if args.capacity is not None and args.capacity < 0:
        raise Usage("--capacity must be 0 (no limit) or more")
    if args.docker_host is not None:
        if not args.docker_host.startswith("unix:///"):
            raise Usage("--docker-host must be unix:///PATH (an existing daemon's socket)")
        if args.hosts not in (None, 1):
            raise Usage("--docker-host works with a single host only (--hosts 1)")
    require_root()
    t0 = time.monotonic()
    st = Stack(args.dir)
    os.makedirs(st.dir, exist_ok=True)
    st.lock()
    existed = st.load()
    running = [n for n in st.state.get("procs", {}) if st.alive(n)]
    # A flag left out means "as it runs" on a running stack, the default on a stopped one.
    old = st.state if running else {}
    want = {
        "hosts": args.hosts if args.hosts is not None else old.get("hosts", 1),
        "capacity": args.capacity if args.capacity is not None else old.get("capacity"),
        "docker_host": args.docker_host
        if args.docker_host is not None
        else (old.get("docker_host") if args.hosts in (None, 1) else None),
        "no_gateway": bool(args.no_gateway),
        "mesh": not getattr(args, "no_mesh", False),
        "keystone": bool(args.keystone or args.nova or old.get("keystone", False)),
        "postgres": bool(args.postgres or old.get("postgres", False)),
        "replicas": args.replicas if args.replicas is not None else old.get("replicas", 1),
        "nova": bool(args.nova or old.get("nova", False)),
        "tenancy": args.tenancy or old.get("tenancy") or "dedicated",
        "max_hosts": args.max_hosts if args.max_hosts is not None else old.get("max_hosts", 8),
        "release_grace": args.release_grace
        if args.release_grace is not None
        else old.get("release_grace", 60.0),
        "notifications": bool(args.notifications or old.get("notifications", False)),
        # kept while the stack's disks are (down keeps them, down --purge removes them)
        "host_disk_mb": args.host_disk_mb
        if args.host_disk_mb is not None
        else st.state.get("host_disk_mb", 0),
    }
    if want["host_disk_mb"] and want["host_disk_mb"] < 64:
        raise Usage("--host-disk-mb must be at least 64 (dockerd and busybox need room)")
    if want["max_hosts"] < 0:
        raise Usage("--max-hosts must be 0 or more")
    if want["replicas"] > 1 and not want["postgres"]:
        raise Usage(f"--replicas {want['replicas']} needs --postgres")
    if want["nova"]:
        if args.hosts not in (None, 0) or want["docker_host"]:
            raise Usage(
                "--nova starts with no host: the gateway's nova provider adds them (no --hosts, "
                "--docker-host)"
            )
        want["hosts"] = 0
        want["nova_grace"] = args.nova_grace if args.nova_grace is not None else old.get("nova_grace", 60)
        want["nova_boot_timeout"] = (
            args.nova_boot_timeout
            if args.nova_boot_timeout is not None
            else old.get("nova_boot_timeout", 120)
        )
    if want["docker_host"] and want["hosts"] != 1:
        raise Usage("--docker-host works with a single host only (--hosts 1)")
    if existed and running:
        flags = {
            "hosts": "--hosts",
            "capacity": "--capacity",
            "docker_host": "--docker-host",
            "keystone": "--keystone",
            "postgres": "--postgres",
            "replicas": "--replicas",
            "nova": "--nova",
            "tenancy": "--tenancy",
            "notifications": "--notifications",
            "host_disk_mb": "--host-disk-mb",
            "mesh": "--no-mesh (mesh)",
        }
        st.state.setdefault("keystone", False)
        st.state.setdefault("postgres", False)
        st.state.setdefault("replicas", 1)
        st.state.setdefault("nova", False)
        st.state.setdefault("tenancy", "dedicated")
        st.state.setdefault("notifications", False)
        st.state.setdefault("host_disk_mb", 0)
        st.state.setdefault("mesh", want["mesh"])  # (a stack from before the mesh: as asked)
        diff = [
            k for k in flags if st.state.get(k) != want[k] and not (k == "hosts" and want[k] > st.nhosts)
        ]  # growing is fine
        if diff:
            have = ", ".join(f"{flags[k]} {st.state.get(k)} (asked: {want[k]})" for k in diff)
            raise Fail(
                f"the stack at {st.dir} is running with {have}; "
                f"run `scripts/devstack down {st.dir}` first to change that"
            )
        say(f"the stack at {st.dir} is already up ({len(running)} processes running); checking every piece")
    st.claim_run_dir()
    st.state["known_hosts"] = max(st.nhosts, int(st.state.get("known_hosts", 0)))
    st.state.update(want)
    st.state.setdefault("procs", {})
    st.state["dir"] = st.dir
    st.state["hash"] = st.hash
    st.state.setdefault("secret", secrets.token_hex(24))
    ports = list(st.state.get("ports") or ([st.state["port"]] if st.state.get("port") else []))
    for i in range(want["replicas"]):
        if i >= len(ports):
            ports.append(free_port())
        elif not st.alive(f"gateway-{i + 1}") and not port_free(ports[i]):
            ports[i] = free_port()
    st.state["ports"] = ports[: want["replicas"]]
    st.state["port"] = st.state["ports"][0]
    # Each replica's Prometheus metrics on a loopback port of its own (gateway/metrics.py).
    metrics_ports = list(st.state.get("metrics_ports") or [])
    for i in range(want["replicas"]):
        if i >= len(metrics_ports):
            metrics_ports.append(free_port())
        elif not st.alive(f"gateway-{i + 1}") and not port_free(metrics_ports[i]):
            metrics_ports[i] = free_port()
    st.state["metrics_ports"] = metrics_ports[: want["replicas"]]
    # Each replica's TLS listener (client certificates; devstack/tls.py).
    tls_ports = list(st.state.get("tls_ports") or [])
    for i in range(want["replicas"]):
        if i >= len(tls_ports):
            tls_ports.append(free_port())
        elif not st.alive(f"gateway-{i + 1}") and not port_free(tls_ports[i]):
            tls_ports[i] = free_port()
    st.state["tls_ports"] = tls_ports[: want["replicas"]]
    if want["postgres"]:
        st.state.setdefault("pg", {})
        st.state["pg"].setdefault("password", secrets.token_hex(16))
    if st.external and (
        not st.state.get("agent_port") or (not st.alive("agent-1") and not port_free(st.state["agent_port"]))
    ):
        st.state["agent_port"] = free_port()
    st.save()

    # network, registry, daemons
    setup_network(st)
    start_registry(st)
    start_resolver(st)
    tarball = st.path("busybox.tar")
    if not os.path.exists(tarball):
        build_busybox_tar(tarball)
    started = []
    if st.external and not answers(st.external, timeout=5):
        raise Fail(f"--docker-host {st.external} does not answer GET /_ping")
    daemons = [*([] if st.external else [REFERENCE]), *range(1, st.nhosts + 1)]
    for i in daemons:
        if i == 1 and st.external:
            continue
        if start_dockerd(st, i):
            started.append(i)
    if started:
        say(f"starting dockerd for host(s) {', '.join(map(str, started))} (0: the reference daemon)")
    for i in daemons:
        if i == 1 and st.external:
            seed_busybox(st.external, tarball, verify=False)
            continue
        wait_dockerd(st, i)
        seed_busybox(st.endpoint(i), tarball, verify=i in started)

    # identity, configuration, gateway, agents
    tenants = ensure_keystone_identity(st) if st.state["keystone"] else ensure_identity(st)
    st.state["tenants"] = {t: tenants[t]["project_id"] for t in TENANTS}
    st.save()
    if st.state["postgres"]:
        start_postgres(st)
    if st.state.get("nova"):
        novaconf.nova_up(st)
    ensure_pki(st)
    if st.state.get("notifications"):
        start_broker(st)
    write_gateway_config(st)
    if not st.state["no_gateway"]:
        start_gateways(st)
        start_mesh(st)
        tenant_certs(st, st.state["port"])
        if st.state.get("nova"):
            novawatch.start_watcher(st)
        for i in range(1, st.nhosts + 1):
            start_agent(st, i)
        forget_removed_hosts(st)
        if not st.state.get("nova"):  # --nova: no host yet; the watcher publishes (novawatch.add_host)
            publish_busybox(st)
    st.state["up"] = True
    st.save()
    text = write_env(st)
    gateways = " ".join(f"tcp://127.0.0.1:{p}" for p in gateway_ports(st))
    database = f"PostgreSQL 127.0.0.1:{st.state['pg']['port']}" if st.state["postgres"] else "SQLite"
    say(
        f"stack up in {time.monotonic() - t0:.1f} s: {st.nhosts} host(s), gateway(s) {gateways} on "
        f"{database}, registry {st.registry}; `. {st.path('env')}`"
    )
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0
