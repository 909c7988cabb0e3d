"""The gateway's settings file (DIR/moorage.toml) and its replicas."""

from __future__ import annotations

import json
import os
import sys

from .. import REPO
from ..ports import port_free
from . import novaconf
from .broker import transport_url
from .common import GATEWAY_START_TIMEOUT, Fail, parse_exports, run, say, write_private
from .daemons import moorage_argv, moorage_env
from .endpoints import http_request
from .identity import KEYSTONE_CACHE_TTL
from .mesh import mesh_config
from .pg import database_url
from .state import Stack
from .tls import gateway_config as tls_gateway_config
from .tls import tls_binds, tls_ports

EXISTS_INTERVAL = 15  # seconds, --notifications


def write_gateway_config(st: Stack) -> str:
    q = json.dumps
    lines = [
        "# written by scripts/devstack; rewritten by every `up`",
        "[gateway]",
        f"bind = [{', '.join(q(b) for b in replica_one_binds(st))}]",
        "workers = 2",
        f"database = {q(database_url(st))}",
        f"registration_secret = {q(st.state['secret'])}",
        f"log_file = {q(st.path('gateway-1.log'))}",
        "",
    ]
    if metrics_ports(st):  # replica 1's; the others' on their command lines
        lines.insert(-1, f"metrics_bind = {q(f'127.0.0.1:{metrics_ports(st)[0]}')}")
    if tls_ports(st):  # replica 1's; the others' on their command lines
        lines[-1:-1] = tls_gateway_config(st)
    if st.state.get("keystone"):
        try:
            with open(st.path("keystone", "openrc")) as fh:
                admin = parse_exports(fh.read())
        except OSError as exc:
            raise Fail(f"cannot read Keystone's admin credentials: {exc}") from exc
        lines += [
            "[identity]",
            'backend = "keystone"',
            f"auth_url = {q(admin['OS_AUTH_URL'])}",
            "# the gateway's service credentials (devstack uses Keystone's admin)",
            f"username = {q(admin['OS_USERNAME'])}",
            f"password = {q(admin['OS_PASSWORD'])}",
            f"project_name = {q(admin['OS_PROJECT_NAME'])}",
            'user_domain_name = "Default"',
            'project_domain_name = "Default"',
            "timeout = 5",
            f"cache_ttl = {KEYSTONE_CACHE_TTL}",
            "cache_size = 10000",
        ]
    else:
        lines += [
            "[identity]",
            'backend = "embedded"',
            f"token_file = {q(st.path('identity.json'))}",
        ]
    tenancy = st.state.get("tenancy") or "dedicated"
    grace = float(st.state.get("release_grace", 60.0))
    if st.state.get("nova"):
        lines += novaconf.gateway_config(st)
        lines.insert(lines.index("[placement]") + 1, f"tenancy = {q(tenancy)}")
    else:
        lines += [
            "",
            "[placement]",
            f"tenancy = {q(tenancy)}",
            f"release_grace = {grace:g}",
            "reap_interval = 1",
        ]
        if st.state.get("capacity") is not None:
            lines.append(f"capacity = {int(st.state['capacity'])}")
        bootable = int(st.state.get("max_hosts", 8)) - st.nhosts
        if bootable > 0 and not st.external:
            # Hosts beyond --hosts N, booted on demand by the gateway's local provider.
            devstack = [sys.executable, os.path.join(REPO, "scripts", "devstack")]
            lines += [
                "",
                "[local]",
                f"boot_command = {q([*devstack, 'boot-host', st.dir])}",
                f"delete_command = {q([*devstack, 'delete-host', st.dir])}",
                f"list_command = {q([*devstack, 'list-hosts', st.dir])}",
                f"max_hosts = {bootable}",
                f"empty_grace_seconds = {grace:g}",
            ]
    if st.state.get("notifications"):
        lines += [
            "",
            "[notifications]",
            f"transport_url = {q(transport_url(st))}",
            "# short, so that a test sees compute.container.exists within seconds",
            f"exists_interval = {EXISTS_INTERVAL}",
            f"audit_log = {q(st.path('audit.log'))}",
        ]
    # Tests' webhook receivers listen on loopback, which a real deployment would not allow.
    lines += ["", "[notices]", 'allowed_networks = ["127.0.0.0/8"]']
    # Absent until someone writes it (every policy rule refused); the gateway re-reads it on change.
    lines += ["", "[policy]", f"file = {q(st.path('policy.yaml'))}"]
    lines += mesh_config(st)
    path = st.path("moorage.toml")
    write_private(path, "\n".join(lines) + "\n")
    return path


def gateway_socket(st: Stack) -> str:
    """Replica 1's unix-socket bind, unix:///DIR/gateway.sock ("" when DIR is too long for
    a socket's path). The docker CLI behaves differently over TCP and over a unix socket
    (docs/divergences.md, the attach detach keys): the parity suite reaches Moorage through
    this bind where it compares with a daemon's own socket."""
    path = st.path("gateway.sock")
    return f"unix://{path}" if len(path.encode()) < 100 else ""


def tcp_binds(st: Stack, port: int) -> list[str]:
    """A replica's plain listeners: loopback, and the hosts' side of the bridge (agents)."""
    return [f"tcp://127.0.0.1:{port}", f"tcp://{st.gw_ip}:{port}"]


def replica_one_binds(st: Stack) -> list[str]:
    return tcp_binds(st, st.state["port"]) + ([gateway_socket(st)] if gateway_socket(st) else [])


def gateway_ping(st: Stack, url: str, timeout: float = 2) -> int | None:
    """The status of GET /_ping with alpha's headers (None: no HTTP answer)."""
    with open(st.path("tenants", "alpha", "config.json")) as fh:
        headers = json.load(fh)["HttpHeaders"]
    try:
        return http_request(url, "GET", "/_ping", headers=headers, timeout=timeout)[0]
    except OSError:
        return None


def gateway_ports(st: Stack) -> list[int]:
    return list(st.state.get("ports") or [st.state["port"]])


def metrics_ports(st: Stack) -> list[int]:
    return list(st.state.get("metrics_ports") or [])


def metrics_urls(st: Stack) -> list[str]:
    return [f"http://127.0.0.1:{p}/metrics" for p in metrics_ports(st)]


def start_gateways(st: Stack) -> None:
    """Every replica (all started before any is waited for: they migrate the shared database
    together, which the gateway serialises); replicas beyond --replicas R are stopped."""
    ports = gateway_ports(st)
    for name in sorted(n for n in st.state["procs"] if n.startswith("gateway-")):
        if int(name.split("-")[1]) > len(ports):
            st.stop(name, name)
    started = [i for i in range(1, len(ports) + 1) if start_gateway(st, i, ports[i - 1])]
    for i in started:
        wait_gateway(st, i, ports[i - 1])


def start_gateway(st: Stack, i: int, port: int) -> bool:
    """Start replica i unless it runs and answers; True if it was started."""
    name = f"gateway-{i}"
    url = f"http://127.0.0.1:{port}"
    if st.alive(name):
        if gateway_ping(st, url, timeout=5) == 200:
            return False
        say(f"gateway {i} (pid {st.proc(name)['pid']}) does not answer on {url}; restarting it")
        st.stop(name, f"gateway {i}")
    if not port_free(port):
        raise Fail(
            f"port {port} on 127.0.0.1 is taken by a process devstack did not "
            f"start; run `scripts/devstack down {st.dir}` and `up` again"
        )
    say(f"starting gateway {i} on {url}" if len(gateway_ports(st)) > 1 else f"starting the gateway on {url}")
    argv = [*moorage_argv(), "--config", st.path("moorage.toml"), "serve"]
    if i > 1:  # the settings file binds replica 1
        for bind in tcp_binds(st, port):
            argv += ["--bind", bind]
        argv += ["--log-file", st.path(f"gateway-{i}.log")]
        if len(metrics_ports(st)) >= i:
            argv += ["--metrics-bind", f"127.0.0.1:{metrics_ports(st)[i - 1]}"]
        if len(tls_ports(st)) >= i:
            for bind in tls_binds(st, i):
                argv += ["--tls-bind", bind]
    st.spawn(name, argv, st.path(f"gateway-{i}.log"), env=moorage_env())
    return True


def wait_gateway(st: Stack, i: int, port: int) -> None:
    name = f"gateway-{i}"
    url = f"http://127.0.0.1:{port}"
    last: list[int | None] = [None]

    def ready() -> bool:
        last[0] = gateway_ping(st, url)
        return last[0] == 200

    try:
        st.wait_for(name, f"gateway {i} (GET {url}/_ping as alpha)", ready, GATEWAY_START_TIMEOUT)
    except Fail as exc:
        if last[0] is None:
            raise
        raise Fail(f"{exc}; it answered {last[0]}") from None


def publish_busybox(st: Stack, image_id: str | None = None) -> None:
    """Mark the seeded busybox:latest public: every project sees it (gateway.imagemap). With
    image_id (--nova: before the first host's agent registers), recorded without asking."""
    argv = [*moorage_argv(), "--config", st.path("moorage.toml"), "images", "publish", "busybox:latest"]
    if image_id:
        argv += ["--id", image_id]
    proc = run(argv, timeout=60, check=False, env=moorage_env())
    if proc.returncode != 0:
        raise Fail(
            f"`moorage images publish busybox:latest` failed: "
            f"{(proc.stderr or proc.stdout).decode('utf-8', 'replace').strip()[-300:]}"
        )
