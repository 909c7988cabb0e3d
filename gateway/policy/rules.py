"""The policy rules and the operator's policy file that allows them.

The policy file is oslo.policy's format (YAML or JSON, rule name -> check string)::

    "container:create:privileged": "project_id:7d5c0e2e... or role:admin"
    "container:create:bind_mount": "rule:trusted"
    "trusted": "project_id:aaa or project_id:bbb"

Every rule defaults to "!" (never). ``[policy] file = PATH`` names the file; it is re-read when
it changes (one stat per check) and on SIGHUP (gunicorn's master restarts the workers). A file
that cannot be read or parsed counts as absent: every rule at its default, logged.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import yaml

from gateway.errors import DockerError
from gateway.policy.limits import Limits

log = logging.getLogger("moorage.policy")

RULES: dict[str, str] = {
    "container:create:privileged": (
        "privileged mode (--privileged): every device and capability of the instance"
    ),
    "container:create:bind_mount": (
        "bind mounts of instance paths (-v /path:/ctr, --mount type=bind, local volumes whose driver "
        "options bind or mount an instance path or device)"
    ),
    "container:create:docker_socket": (
        "the instance's Docker (or containerd) socket, or a directory holding it, mounted into a "
        "container (needs container:create:bind_mount too)"
    ),
    "container:create:host_network": ("the instance's network namespace (--network host)"),
    "container:create:host_pid": ("the instance's PID namespace (--pid host)"),
    "container:create:host_ipc": ("the instance's IPC namespace (--ipc host)"),
    "container:create:host_uts": ("the instance's UTS namespace (--uts host)"),
    "container:create:host_userns": ("the instance's user namespace (--userns host)"),
    "container:create:host_cgroupns": ("the instance's cgroup namespace (--cgroupns host)"),
    "container:create:devices": ("instance devices (--device, --device-cgroup-rule, --gpus)"),
    "container:create:cap_add": ("capabilities outside the baseline set (--cap-add)"),
    "container:create:security_opt": (
        "unconfined or custom seccomp and AppArmor profiles, SELinux labels (--security-opt)"
    ),
    "container:create:system_paths": (
        "unmasked /proc and /sys paths (MaskedPaths, ReadonlyPaths; --security-opt systempaths=unconfined)"
    ),
    "container:create:cgroup_parent": ("a cgroup parent of the client's choosing (--cgroup-parent)"),
    "container:create:sysctls": ("sysctls outside the namespaced safe set (--sysctl)"),
    "container:create:runtime": ("a runtime other than the default runc (--runtime)"),
    "container:create:oom_score_adj": (
        "a negative OOM score adjustment (--oom-score-adj), which makes the instance's OOM killer "
        "pick other tenants' processes first"
    ),
    "container:create:oom_kill_disable": ("a disabled OOM killer (--oom-kill-disable)"),
    "container:create:log_driver": (
        "log drivers other than json-file, local and none (--log-driver), which send from the "
        "instance's own network and credentials"
    ),
    "container:create:privileged_ports": (
        "host ports below 1024 published on the instance (-p 80:80, -p 22:22), where the instance's "
        "own services listen"
    ),
    "container:create:host_ip": (
        "ports published on one address of the instance (-p 127.0.0.1:8080:80) instead of all of them"
        " (-p 8080:80)"
    ),
    "container:update:devices": ("device settings in an update (docker update)"),
    "container:update:cgroup_parent": ("a cgroup parent in an update (docker update)"),
    "exec:create:privileged": ("privileged exec (docker exec --privileged)"),
    "image:build:host_network": (
        "the instance's network namespace for build steps (docker build --network host)"
    ),
    "image:build:remote": (
        "a build context the instance's daemon fetches itself from a URL or git repository "
        "(remote=...), reaching whatever the instance's network reaches"
    ),
    "image:build:cgroup_parent": ("a cgroup parent for build steps (docker build --cgroup-parent)"),
    "image:import:url": (
        "an image the instance's daemon fetches itself from a URL (docker import URL, fromSrc=URL), "
        "reaching whatever the instance's network reaches (such as the cloud's metadata service)"
    ),
    "network:create:driver": (
        "network drivers other than bridge (macvlan, ipvlan, overlay, plugins) and IPAM drivers other"
        " than the default (docker network create -d, --ipam-driver)"
    ),
    "network:create:bridge_name": (
        "the name of the instance's bridge interface for a network (-o "
        "com.docker.network.bridge.name=...), which can join one the instance has"
    ),
    "network:create:parent": (
        "the instance's interface a macvlan or ipvlan network attaches to (-o parent=eth0); needs "
        "network:create:driver too"
    ),
    "network:create:driver_opts": (
        "network driver options outside the harmless set (-o), such as "
        "com.docker.network.bridge.host_binding_ipv4"
    ),
    "network:create:subnet": (
        "a network's own addressing (--subnet, --ip-range, --gateway, --aux-address): a subnet that "
        "overlaps the instance's routes (its own network, 169.254.0.0/16) cuts the instance off"
    ),
    "network:create:config_from": (
        "config-only networks and networks made from one (--config-only, --config-from), which name "
        "networks outside the project"
    ),
    "volume:create:host_bind": (
        "local volumes whose driver options bind or mount an instance path, device or network "
        "filesystem (docker volume create -o type=none -o o=bind -o device=/etc)"
    ),
}
DEFAULT_CHECK = "!"


class Asker(Protocol):
    """Who is asking, as the checks read it. gateway.tenancy's Identity is one; policy names
    the shape rather than importing it, so tenancy (whose scope reads bodies through
    gateway.policy.bodies) and policy do not import each other."""

    @property
    def project_id(self) -> str: ...
    @property
    def project_name(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def user_name(self) -> str: ...
    @property
    def roles(self) -> Sequence[str]: ...


class PolicyFile:
    """oslo.policy check strings from an operator's file, re-read when the file changes."""

    def __init__(self, path: str | None):
        from oslo_config import cfg
        from oslo_policy import policy as oslo

        self._oslo = oslo
        self.path = os.path.abspath(path) if path else ""
        conf = cfg.ConfigOpts()
        conf([], project="moorage", default_config_files=[], default_config_dirs=[])
        self._enforcer = oslo.Enforcer(conf, use_conf=False)
        self._lock = threading.Lock()
        self._stamp: object = ()  # never equal to a real stamp: the first check loads
        self.reload()

    def _file_stamp(self):
        if not self.path:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self, force: bool = True) -> None:
        stamp = self._file_stamp()
        if not force and stamp == self._stamp:
            return
        with self._lock:
            rules = {name: DEFAULT_CHECK for name in RULES}
            if stamp is not None:
                try:
                    with open(self.path) as fh:
                        text = fh.read()
                    data = yaml.safe_load(text) or {}
                    if not isinstance(data, dict):
                        raise ValueError("expected a mapping of rule names to check strings")
                    unknown = sorted(set(data) - set(RULES))
                    if unknown:
                        log.info(
                            "policy file %s defines rules Moorage does not check (fine for rules other "
                            "rules refer to): %s",
                            self.path,
                            ", ".join(map(str, unknown)),
                        )
                    rules.update({str(k): str(v) for k, v in data.items()})
                except (OSError, ValueError, yaml.YAMLError) as exc:
                    log.error(
                        "policy file %s cannot be used (%s); every policy rule is at its default "
                        "(refused) until it is fixed",
                        self.path,
                        exc,
                    )
                    rules = {name: DEFAULT_CHECK for name in RULES}
            parsed = self._oslo.Rules.from_dict(rules)  # an unparsable check string reads as "!"
            self._enforcer.set_rules(parsed, overwrite=True, use_conf=False)
            self._stamp = stamp

    def allowed(self, rule: str, identity: Asker | None) -> bool:
        self.reload(force=False)
        creds = {"project_id": "", "roles": [], "user_id": ""}
        if identity is not None:
            creds = {
                "project_id": identity.project_id,
                "project_name": identity.project_name,
                "user_id": identity.user_id,
                "user_name": identity.user_name,
                "roles": list(identity.roles),
            }
        target = {"project_id": creds["project_id"], "user_id": creds["user_id"]}
        try:
            return bool(self._enforcer.enforce(rule, target, creds))
        except Exception:  # never let a policy engine fault open a door
            log.exception("policy check %s failed; refusing", rule)
            return False


@dataclass
class Request:
    """One request's checks: the policy and limits that apply, who asks, and the host ports
    no container publishes (gateway.policy.ports)."""

    policy: PolicyFile
    limits: Limits
    identity: Asker | None
    reserved_ports: frozenset[int]
    # Dedicated tenancy: the instance is the project's alone (what only other projects on it
    # would be exposed to is the project's own business there).
    dedicated: bool = False
    # [policy] tenant_socket: a bind of the Docker socket's usual paths is given the container's
    # own tenant socket (gateway/services/tenantsocket.py) instead of the instance's.
    tenant_socket: bool = False

    @property
    def project(self) -> str:
        return self.identity.project_id if self.identity else ""

    def require(self, rule: str, what: str, instead: str) -> None:
        if self.policy.allowed(rule, self.identity):
            return
        raise DockerError(
            403,
            f'{what} is not allowed by policy rule "{rule}": {instead}, or ask your '
            f"operator to allow that rule for project {self.project}",
        )


def short(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[:limit] + "..."
