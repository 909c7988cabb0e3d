"""DIR/env: the `export` lines tests and shells source to reach the stack."""

from __future__ import annotations

import os
import shlex

from . import novaconf
from .broker import transport_url
from .common import REFERENCE, TENANTS
from .daemons import moorage_argv
from .gateways import gateway_ports, gateway_socket, metrics_urls
from .state import Stack
from .tls import tls_host


def current_hosts(st: Stack) -> list[tuple[str, str]]:
    """(UUID, dockerd endpoint) of every instance host now, in fill order."""
    if st.state.get("nova"):
        return [(sid, st.endpoint(i)) for i, sid in novaconf.hosts(st)]
    fixed = [(st.host_uuid(i), st.endpoint(i)) for i in range(1, st.nhosts + 1)]
    # then the hosts the gateway's local provider booted (localhosts.py), in the order booted
    booted = sorted(st.state.get("local_hosts", {}).items(), key=lambda kv: kv[1]["index"])
    return fixed + [(sid, st.endpoint(h["index"])) for sid, h in booted]


def write_env(st: Stack) -> str:
    port = st.state["port"]
    ids = st.state.get("tenants", {})
    admin = shlex.join(moorage_argv()) + f" --config {st.path('moorage.toml')}"
    hosts = current_hosts(st)
    values = [
        ("DOCKER_HOST", f"tcp://127.0.0.1:{port}"),
        # replica 1 on a unix socket, as a local dockerd is reached (gateways.gateway_socket)
        ("MOORAGE_GATEWAY_SOCKET", gateway_socket(st)),
        ("MOORAGE_GATEWAYS", " ".join(f"tcp://127.0.0.1:{p}" for p in gateway_ports(st))),
        # Prometheus metrics: the first replica's, and every replica's.
        ("MOORAGE_METRICS_URL", metrics_urls(st)[0] if metrics_urls(st) else ""),
        ("MOORAGE_METRICS_URLS", " ".join(metrics_urls(st))),
        ("MOORAGE_DIRECT_HOST", hosts[0][1] if hosts else ""),
        ("MOORAGE_DIRECT_HOSTS", " ".join(endpoint for _, endpoint in hosts)),
        # the reference daemon (common.REFERENCE): what the parity suite compares Moorage with
        ("MOORAGE_REFERENCE_HOST", "" if st.external else st.endpoint(REFERENCE)),
        ("MOORAGE_INSTANCES", " ".join(uid for uid, _ in hosts)),
    ]
    values += [(f"MOORAGE_CONFIG_{t}", st.path("tenants", t)) for t in TENANTS]
    values += [(f"MOORAGE_PROJECT_{t}", ids[t]) for t in TENANTS]
    # The TLS address and each tenant's client certificate (DOCKER_CERT_PATH; devstack/tls.py).
    values += [("MOORAGE_TLS_HOST", tls_host(st))]
    values += [(f"MOORAGE_CERTS_{t}", st.path("tenants", t, "certs")) for t in TENANTS]
    if st.state.get("keystone"):
        values += [(f"MOORAGE_OPENRC_{t}", st.path("tenants", t, "openrc")) for t in TENANTS]
        values += [("MOORAGE_KEYSTONE_OPENRC", st.path("keystone", "openrc"))]
    if st.state.get("nova"):
        values += [
            ("MOORAGE_NOVA_RC", st.path("nova", "novarc")),
            ("MOORAGE_NOVA_POOL", novaconf.pool_id(st)),
        ]
    if st.state.get("notifications"):
        values += [("MOORAGE_TRANSPORT_URL", transport_url(st))]
    values += [
        ("DOCKER_CONFIG", st.path("tenants", "alpha")),
        ("MOORAGE_ADMIN", admin),
        ("MOORAGE_REGISTRY", st.registry),
        ("MOORAGE_STACK_DIR", st.dir),
    ]
    text = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values)
    with open(st.path("env.tmp"), "w") as fh:
        fh.write(text)
    os.replace(st.path("env.tmp"), st.path("env"))
    return text
