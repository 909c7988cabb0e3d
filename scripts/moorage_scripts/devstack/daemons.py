"""The daemons under the gateway: the registry and each host's dockerd (entered with nsenter)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys

from .. import REPO
from ..ports import port_free
from .common import (
    CONTAINER_POOL,
    DOCKER0_BIP,
    DOCKERD_START_TIMEOUT,
    REGISTRY_PORT,
    REGISTRY_START_TIMEOUT,
    Fail,
    say,
)
from .disk import ensure_host_disk
from .endpoints import answers
from .resolver import write_resolv_conf
from .state import Stack


def moorage_argv() -> list[str]:
    sibling = os.path.join(os.path.dirname(sys.executable), "moorage")
    if os.access(sibling, os.X_OK):
        return [sibling]
    found = shutil.which("moorage")
    if found:
        return [os.path.abspath(found)]
    return [sys.executable, "-m", "gateway.cli"]


def moorage_env() -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    for name in (
        "MOORAGE_CONFIG",
        "MOORAGE_DB",
        "MOORAGE_REGISTRATION_SECRET",
        "DOCKER_HOST",
        "DOCKER_CONFIG",
        "DOCKER_TLS_VERIFY",
        "DOCKER_CERT_PATH",
        "DOCKER_CONTEXT",
    ):
        env.pop(name, None)
    if moorage_argv()[0] == sys.executable:
        env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def start_registry(st: Stack) -> None:
    if st.alive("registry"):
        return
    if not answers(f"http://{st.registry}", "/v2/", timeout=1) and not port_free(REGISTRY_PORT, st.gw_ip):
        raise Fail(f"{st.registry} is taken by another process")
    cfg = st.path("registry.yml")
    storage = st.path("registry")
    os.makedirs(storage, exist_ok=True)
    with open(cfg, "w") as fh:
        fh.write(f"""\
# written by scripts/devstack
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: {json.dumps(storage)}
  delete:
    enabled: true
http:
  addr: {json.dumps(st.registry)}
  headers:
    X-Content-Type-Options: [nosniff]
""")
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    say(f"starting the registry on {st.registry}")
    st.spawn("registry", [binary, "serve", cfg], st.path("registry.log"))
    st.wait_for(
        "registry",
        f"registry on {st.registry}",
        lambda: answers(f"http://{st.registry}", "/v2/", timeout=1),
        REGISTRY_START_TIMEOUT,
    )


def dockerd_argv(st: Stack, i: int) -> list[str]:
    # The host's network namespace (nsenter: `ip netns exec` would remount /sys and hide the
    # cgroups), then a mount namespace of its own where the host's resolv.conf covers the
    # machine's: dockerd's own lookups and the resolv.conf it gives containers name the stack's
    # refusing resolver (resolver.py). The shell execs dockerd, so the recorded pid is dockerd's.
    return [
        "nsenter",
        f"--net={st.netns_path(i)}",
        "unshare",
        "--mount",
        "--propagation",
        "slave",
        "/bin/sh",
        "-c",
        'mount --bind "$0" /etc/resolv.conf && exec "$@"',
        os.path.join(st.host_dir(i), "resolv.conf"),
        "dockerd",
        "--host",
        f"unix://{st.sock(i)}",
        "--data-root",
        os.path.join(st.host_dir(i), "docker"),
        "--exec-root",
        f"{st.host_run(i)}/exec",
        "--pidfile",
        f"{st.host_run(i)}/docker.pid",
        "--storage-driver",
        "vfs",
        "--dns",
        st.gw_ip,
        # Each project has its own default bridge on each instance (tenancy.scope): the stock
        # pools hold 31 networks per daemon, this one 255 (common.CONTAINER_POOL).
        "--bip",
        DOCKER0_BIP,
        "--default-address-pool",
        CONTAINER_POOL,
        "--insecure-registry",
        st.registry,
    ]


def start_dockerd(st: Stack, i: int) -> bool:
    """Start host i's dockerd unless it runs; True if it was started (wait with wait_dockerd)."""
    name = f"dockerd-{i}"
    if st.alive(name):
        return False
    if os.path.exists(st.sock(i)) and answers(st.endpoint(i)):
        raise Fail(
            f"a daemon devstack did not record answers on {st.sock(i)}; "
            f"run `scripts/devstack down {st.dir}` first"
        )
    os.makedirs(st.host_run(i), exist_ok=True)
    os.makedirs(os.path.join(st.host_dir(i), "docker"), exist_ok=True)
    if 1 <= i <= st.nhosts:  # --host-disk-mb: the data-root on a filesystem of its own (disk.py)
        ensure_host_disk(st, i)
    write_resolv_conf(st, i)
    for stale in (st.sock(i), f"{st.host_run(i)}/docker.pid"):  # of a daemon that died
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    st.spawn(name, dockerd_argv(st, i), os.path.join(st.host_dir(i), "dockerd.log"))
    return True


def wait_dockerd(st: Stack, i: int) -> None:
    st.wait_for(
        f"dockerd-{i}",
        f"dockerd of host {i} (/_ping on {st.endpoint(i)})",
        lambda: answers(st.endpoint(i)),
        DOCKERD_START_TIMEOUT,
    )
