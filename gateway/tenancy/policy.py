"""Policy: what a request may ask of the instance, per project (DESIGN.md, Invariants).

Every setting that lets a container reach past itself into the instance (privileged mode, host
bind mounts, the Docker socket, the host's namespaces, devices, capabilities outside a safe
set, unconfined seccomp/AppArmor, SELinux labels, cgroup parents, sysctls outside the
namespaced safe set, other runtimes, ...) is refused, 403 in Docker's error shape, unless the
operator's policy file allows its rule for the asking project or role. Checks run before
anything is forwarded: a refused request creates nothing.

The policy file is oslo.policy's format (YAML or JSON, rule name -> check string)::

    "container:create:privileged": "project_id:7d5c0e2e... or role:admin"
    "container:create:bind_mount": "rule:trusted"
    "trusted": "project_id:aaa or project_id:bbb"

Every rule defaults to "!" (never). ``[policy] file = PATH`` names the file; it is re-read when
it changes (one stat per check) and on SIGHUP (gunicorn's master restarts the workers). A file
that cannot be read or parsed counts as absent: every rule at its default, logged.

Bodies are read as dockerd's Go decoder reads them (gateway.tenancy.bodies): field names
case-insensitively, and HostConfig fields both inside ``HostConfig`` and at the top level of a
create body (the API v1.23-and-earlier form, which dockerd 20.10 still decodes on every version).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import threading
from dataclasses import dataclass
from urllib.parse import parse_qsl

import yaml

from gateway.errors import DockerError
from gateway.tenancy.bodies import GoObject, integer, strings
from gateway.tenancy.identity import Identity
from gateway.tenancy.limits import Limits, human_bytes, human_cpus

log = logging.getLogger("moorage.policy")

# -- the rules ----------------------------------------------------------------------------------
RULES: dict[str, str] = {
    "container:create:privileged": "privileged mode (--privileged): every device and capability of the instance",
    "container:create:bind_mount": "bind mounts of instance paths (-v /path:/ctr, --mount type=bind, local "
    "volumes whose driver options bind or mount an instance path or device)",
    "container:create:docker_socket": "the instance's Docker (or containerd) socket, or a directory holding it, "
    "mounted into a container (needs container:create:bind_mount too)",
    "container:create:host_network": "the instance's network namespace (--network host)",
    "container:create:host_pid": "the instance's PID namespace (--pid host)",
    "container:create:host_ipc": "the instance's IPC namespace (--ipc host)",
    "container:create:host_uts": "the instance's UTS namespace (--uts host)",
    "container:create:host_userns": "the instance's user namespace (--userns host)",
    "container:create:host_cgroupns": "the instance's cgroup namespace (--cgroupns host)",
    "container:create:devices": "instance devices (--device, --device-cgroup-rule, --gpus)",
    "container:create:cap_add": "capabilities outside the baseline set (--cap-add)",
    "container:create:security_opt": "unconfined or custom seccomp and AppArmor profiles, SELinux labels "
    "(--security-opt)",
    "container:create:system_paths": "unmasked /proc and /sys paths (MaskedPaths, ReadonlyPaths; "
    "--security-opt systempaths=unconfined)",
    "container:create:cgroup_parent": "a cgroup parent of the client's choosing (--cgroup-parent)",
    "container:create:sysctls": "sysctls outside the namespaced safe set (--sysctl)",
    "container:create:runtime": "a runtime other than the default runc (--runtime)",
    "container:create:oom_score_adj": "a negative OOM score adjustment (--oom-score-adj), which makes the "
    "instance's OOM killer pick other tenants' processes first",
    "container:create:oom_kill_disable": "a disabled OOM killer (--oom-kill-disable)",
    "container:create:log_driver": "log drivers other than json-file, local and none (--log-driver), which "
    "send from the instance's own network and credentials",
    "container:create:privileged_ports": "host ports below 1024 published on the instance (-p 80:80, -p 22:22), "
    "where the instance's own services listen",
    "container:create:host_ip": "ports published on one address of the instance (-p 127.0.0.1:8080:80) "
    "instead of all of them (-p 8080:80)",
    "container:update:devices": "device settings in an update (docker update)",
    "container:update:cgroup_parent": "a cgroup parent in an update (docker update)",
    "exec:create:privileged": "privileged exec (docker exec --privileged)",
    "image:build:host_network": "the instance's network namespace for build steps (docker build --network host)",
    "image:build:remote": "a build context the instance's daemon fetches itself from a URL or git "
    "repository (remote=...), reaching whatever the instance's network reaches",
    "image:build:cgroup_parent": "a cgroup parent for build steps (docker build --cgroup-parent)",
    "image:import:url": "an image the instance's daemon fetches itself from a URL (docker import URL, "
    "fromSrc=URL), reaching whatever the instance's network reaches (such as the cloud's "
    "metadata service)",
    "network:create:driver": "network drivers other than bridge (macvlan, ipvlan, overlay, plugins) and IPAM "
    "drivers other than the default (docker network create -d, --ipam-driver)",
    "network:create:bridge_name": "the name of the instance's bridge interface for a network "
    "(-o com.docker.network.bridge.name=...), which can join one the instance has",
    "network:create:parent": "the instance's interface a macvlan or ipvlan network attaches to (-o parent=eth0); "
    "needs network:create:driver too",
    "network:create:driver_opts": "network driver options outside the harmless set (-o), such as "
    "com.docker.network.bridge.host_binding_ipv4",
    "network:create:subnet": "a network's own addressing (--subnet, --ip-range, --gateway, --aux-address): a "
    "subnet that overlaps the instance's routes (its own network, 169.254.0.0/16) cuts "
    "the instance off",
    "network:create:config_from": "config-only networks and networks made from one (--config-only, "
    "--config-from), which name networks outside the project",
    "volume:create:host_bind": "local volumes whose driver options bind or mount an instance path, device or "
    "network filesystem (docker volume create -o type=none -o o=bind -o device=/etc)",
}
DEFAULT_CHECK = "!"

# Kubernetes Pod Security Standards, baseline: the capabilities a container may add.
SAFE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
# Kubernetes Pod Security Standards, baseline: the namespaced sysctls a container may set.
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
SAFE_RUNTIMES = frozenset({"", "runc"})
SAFE_LOG_DRIVERS = frozenset({"", "json-file", "local", "none"})
# What dockerd (20.10's OCI defaults) masks and makes read-only when the client says nothing.
DEFAULT_MASKED_PATHS = frozenset(
    {
        "/proc/asound",
        "/proc/acpi",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
    }
)
DEFAULT_READONLY_PATHS = frozenset({"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"})
# Where an instance's container daemons listen; a bind of one of these, or of a directory
# above one, hands a container the instance.
SOCKET_PATHS = (
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/docker/",
    "/var/run/docker/",
)

# Published ports: below this the instance's own services listen (sshd, ...).
PRIVILEGED_PORTS_BELOW = 1024
# A HostIp that means what no HostIp means: every address of the instance.
WILDCARD_HOST_IPS = frozenset({"", "0.0.0.0", "::"})
# The agent's port (`moorage agent --listen`'s default): never published, whatever the policy
# (the daemon's port forwarding would take the gateway's traffic to the agent). The ports of
# every registered agent and [policy] reserved_ports are added (reserved_ports()).
AGENT_PORT = 2376
# Network driver options that change nothing outside the network itself.
SAFE_NETWORK_OPTIONS = frozenset(
    {
        "com.docker.network.bridge.enable_icc",
        "com.docker.network.bridge.enable_ip_masquerade",
        "com.docker.network.bridge.inhibit_ipv4",
        "com.docker.network.driver.mtu",
        "com.docker.network.container_iface_prefix",
        "macvlan_mode",
        "ipvlan_mode",
        "ipvlan_flag",
    }
)
SAFE_NETWORK_DRIVERS = frozenset({"", "bridge"})
SAFE_IPAM_DRIVERS = frozenset({"", "default"})

NAMESPACES = (  # (HostConfig field, rule, namespace, CLI flag, what to do instead)
    (
        "NetworkMode",
        "host_network",
        "network",
        "--network host",
        "run without --network host (use a user-defined network and publish ports with -p)",
    ),
    (
        "PidMode",
        "host_pid",
        "PID",
        "--pid host",
        "run without --pid host (--pid container:NAME shares one of your containers')",
    ),
    (
        "IpcMode",
        "host_ipc",
        "IPC",
        "--ipc host",
        "run without --ipc host (--ipc shareable and container:NAME share between your containers)",
    ),
    ("UTSMode", "host_uts", "UTS", "--uts host", "run without --uts host (set --hostname instead)"),
    ("UsernsMode", "host_userns", "user", "--userns host", "run without --userns host"),
    ("CgroupnsMode", "host_cgroupns", "cgroup", "--cgroupns host", "run without --cgroupns host"),
)


# -- the policy file ------------------------------------------------------------------------------
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

    def allowed(self, rule: str, identity: Identity | None) -> bool:
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


# -- the checks -----------------------------------------------------------------------------------
@dataclass
class _Request:
    policy: PolicyFile
    identity: Identity | None
    reserved_ports: frozenset[int] = frozenset({AGENT_PORT})

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


def _short(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def _host_path(path: str) -> str:
    return "/" + posixpath.normpath("/" + path).lstrip("/")


def _exposes_socket(path: str) -> bool:
    """True when a bind of ``path`` would hand the container a daemon's socket: the socket
    itself (anything named *.sock), or a directory above one of the daemons' sockets."""
    path = _host_path(path)
    if path.endswith(".sock") or "docker.sock" in path:
        return True
    directory = path.rstrip("/") + "/"
    return any(sock.startswith(directory) or sock.rstrip("/") == path for sock in SOCKET_PATHS)


def _check_host_path(req: _Request, prefix: str, path: str, how: str) -> None:
    """One instance path a request would bind into a container (or mount as a volume)."""
    path = _host_path(path)
    socket = _exposes_socket(path)
    socket_args = (
        f"{prefix}:docker_socket",
        f"mounting the instance's Docker socket ({path}, {how})",
        "reach Moorage through DOCKER_HOST instead of a mounted socket (testcontainers: set "
        "TESTCONTAINERS_RYUK_DISABLED=true)",
    )
    bind_args = (
        f"{prefix}:bind_mount",
        f"a bind mount of the instance path {path} ({how})",
        "use a named volume (-v NAME:/path, --mount type=volume) and docker cp to fill it",
    )
    if socket and (path.endswith(".sock") or "docker.sock" in path):
        req.require(*socket_args)
        req.require(*bind_args)
    else:
        req.require(*bind_args)
        if socket:
            req.require(*socket_args)


def _local_volume_options(req: _Request, prefix: str, opts, how: str) -> None:
    """The local driver's options (type, o, device) mount whatever they name on the instance
    (a path with o=bind, a block device, a network filesystem): only a plain tmpfs, or no
    options at all, keeps the volume the tenant's own."""
    if not isinstance(opts, dict) or not opts:
        return
    low = {str(k).strip().lower(): v if isinstance(v, str) else str(v) for k, v in opts.items()}
    if not {"type", "o", "device"} & set(low):
        return
    fstype = low.get("type", "").strip().lower()
    binds = bool({flag.strip().lower() for flag in low.get("o", "").split(",")} & {"bind", "rbind"})
    if fstype == "tmpfs" and not binds:
        return
    device = low.get("device", "").strip()
    if prefix == "container:create":
        if device.startswith("/") and (binds or fstype in ("", "none")):
            _check_host_path(req, prefix, device, how)
            return
        rule = f"{prefix}:bind_mount"
    else:
        rule = "volume:create:host_bind"
    shown = ", ".join(f"{k}={_short(low[k], 40)}" for k in ("type", "o", "device") if k in low)
    what = f"a local volume mounting what the instance has ({shown}; {how})"
    if device.startswith("/") and _exposes_socket(device):
        what = f"a local volume mounting the instance's Docker socket ({shown}; {how})"
    req.require(
        rule, what, "create a plain volume (no driver options, or type=tmpfs) and fill it with docker cp"
    )


def _check_binds(req: _Request, binds) -> None:
    for bind in strings(binds):
        parts = bind.split(":")
        if len(parts) < 2:
            continue  # a destination alone: an anonymous volume
        source = parts[0]
        if "/" in source or source.startswith((".", "~")):  # anything else names a volume
            _check_host_path(req, "container:create", source, f"-v {_short(bind)}")


def _check_mounts(req: _Request, mounts, where: str) -> None:
    if not isinstance(mounts, list):
        return
    for item in mounts:
        if not isinstance(item, dict):
            continue
        mount = GoObject(item, f"{where}'s Mounts")
        kind = mount.get("Type")
        kind = kind.strip().lower() if isinstance(kind, str) else ""
        source = mount.get("Source")
        source = source if isinstance(source, str) else ""
        if kind == "bind":
            _check_host_path(
                req, "container:create", source or "/", f"--mount type=bind,source={_short(source)}"
            )
        elif kind == "volume":
            options = mount.obj("VolumeOptions")
            driver = options.obj("DriverConfig") if options else None
            if driver is not None:
                name = driver.get("Name")
                if not isinstance(name, str) or name.strip().lower() in ("", "local"):
                    _local_volume_options(
                        req, "container:create", driver.get("Options"), "--mount type=volume with volume-opt"
                    )


def _check_security_opts(req: _Request, prefix: str, opts) -> None:
    for opt in strings(opts):
        text = opt.strip()
        low = text.lower()
        if low == "no-new-privileges":
            continue
        if "=" in text:
            key, _, value = text.partition("=")
        elif ":" in text:
            key, _, value = text.partition(":")
        else:
            key, value = text, ""
        key, value = key.strip().lower(), value.strip()
        if low == "disable" or key == "label":
            what = f"the SELinux label option {_short(text)} (--security-opt)"
        elif key == "seccomp" and value.lower() not in ("", "builtin", "default"):
            what = (
                "an unconfined seccomp profile (--security-opt seccomp=unconfined)"
                if value.lower() == "unconfined"
                else "a custom seccomp profile (--security-opt seccomp=...)"
            )
        elif key == "apparmor" and value.lower() not in ("", "docker-default"):
            what = f"the AppArmor profile {_short(value, 40)} (--security-opt apparmor=...)"
        elif key == "systempaths":
            what = "unmasked system paths (--security-opt systempaths=unconfined)"
        else:
            continue  # no-new-privileges=..., or something dockerd refuses itself
        req.require(
            f"{prefix}:security_opt",
            what,
            "run with the default seccomp and AppArmor profiles and no SELinux label options",
        )


def _check_capabilities(req: _Request, prefix: str, caps, flag: str = "--cap-add") -> None:
    for cap in strings(caps):
        name = cap.strip().upper()
        name = name[4:] if name.startswith("CAP_") else name
        if name in SAFE_CAPABILITIES:
            continue
        what = (
            "adding every capability (--cap-add ALL)"
            if name == "ALL"
            else f"the capability {_short(name, 40)} ({flag})"
        )
        req.require(
            f"{prefix}:cap_add",
            what,
            "add only capabilities from the baseline set (" + ", ".join(sorted(SAFE_CAPABILITIES)) + ")",
        )


def _check_devices(req: _Request, prefix: str, hc: GoObject) -> None:
    for field, flag in (
        ("Devices", "--device"),
        ("DeviceCgroupRules", "--device-cgroup-rule"),
        ("DeviceRequests", "--gpus"),
    ):
        value = hc.get(field)
        if value not in (None, [], {}, ""):
            req.require(
                f"{prefix}:devices",
                f"using instance devices ({field}, {flag})",
                "run without devices (the container gets its own /dev)",
            )
    parent = hc.get("CgroupParent")
    if parent not in (None, ""):
        req.require(
            f"{prefix}:cgroup_parent",
            f"the cgroup parent {_short(str(parent), 60)} (--cgroup-parent)",
            "leave the cgroup parent unset",
        )


def _go_port(text: str) -> int | None:
    """strconv.ParseUint(text, 10, 16): digits only, at most 65535."""
    if not re.fullmatch(r"[0-9]+", text):
        return None
    value = int(text)
    return value if value <= 65535 else None


def _host_port_range(text: str) -> tuple[int, int] | None:
    """A binding's HostPort as dockerd reads it (go-connections' nat.ParsePortRange): "8080",
    or a range "8000-8010". None for "" (a port the daemon chooses) and for what dockerd
    cannot parse (it refuses the create itself)."""
    if not text:
        return None
    parts = text.split("-")
    start = _go_port(parts[0])
    end = start if len(parts) == 1 else _go_port(parts[1])
    if start is None or end is None or end < start:
        return None
    return start, end


def _check_ports(req: _Request, bindings) -> None:
    """PortBindings ({"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}): the instance's ports
    and addresses a container would take. A port the daemon chooses (-p 80, -P, HostPort ""
    or "0") on every address is always fine."""
    if not isinstance(bindings, dict):
        return
    for container_port, entries in bindings.items():
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            binding = GoObject(entry, "a port binding")
            host_ip, host_port = binding.get("HostIp"), binding.get("HostPort")
            host_ip = host_ip if isinstance(host_ip, str) else ""
            host_port = host_port if isinstance(host_port, str) else ""
            shown = (
                "-p "
                + (f"{_short(host_ip, 40)}:" if host_ip else "")
                + f"{_short(host_port, 20)}:{_short(str(container_port), 20)}"
            )
            span = _host_port_range(host_port)
            if span is not None:
                start, end = span
                taken = sorted(p for p in req.reserved_ports if start <= p <= end)
                if taken:
                    raise DockerError(
                        403,
                        f"the instance's port {taken[0]} is reserved for Moorage (its agent listens "
                        f"there) and is never published ({shown}): publish another port, or let "
                        "Docker choose one (-p PORT, -P)",
                    )
                if start < PRIVILEGED_PORTS_BELOW and end >= 1:
                    req.require(
                        "container:create:privileged_ports",
                        f"publishing the instance's port {max(start, 1)} ({shown}; ports below "
                        f"{PRIVILEGED_PORTS_BELOW} belong to the instance's own services)",
                        "publish a port of 1024 or above (-p 8080:80), or let Docker choose one (-p 80, -P)",
                    )
            if host_ip not in WILDCARD_HOST_IPS:
                req.require(
                    "container:create:host_ip",
                    f"publishing on the instance's address {_short(host_ip, 40)} ({shown})",
                    "publish on every address of the instance (-p 8080:80)",
                )


def _check_host_config(req: _Request, hc: GoObject) -> None:
    """Everything in a HostConfig (or the top level of an old-style create body) that
    reaches past the container."""
    p = "container:create"
    if hc.get("Privileged") is True:
        req.require(
            f"{p}:privileged",
            "privileged mode (--privileged)",
            "run without --privileged (add only the capabilities you need with --cap-add)",
        )
    _check_binds(req, hc.get("Binds"))
    _check_mounts(req, hc.get("Mounts"), hc.where)
    _check_ports(req, hc.get("PortBindings"))
    for field, rule, namespace, flag, instead in NAMESPACES:
        mode = hc.get(field)
        if isinstance(mode, str) and mode.strip().lower().split(":")[0] == "host":
            req.require(f"{p}:{rule}", f"the instance's {namespace} namespace ({flag})", instead)
    _check_devices(req, p, hc)
    _check_capabilities(req, p, hc.get("CapAdd"))
    _check_capabilities(req, p, hc.get("Capabilities"), "Capabilities")
    _check_security_opts(req, p, hc.get("SecurityOpt"))
    for field, defaults in (("MaskedPaths", DEFAULT_MASKED_PATHS), ("ReadonlyPaths", DEFAULT_READONLY_PATHS)):
        value = hc.get(field)
        if value is not None and not (isinstance(value, list) and defaults <= set(strings(value))):
            req.require(
                f"{p}:system_paths",
                f"changing {field} (--security-opt systempaths=unconfined)",
                f"leave {field} unset (dockerd's defaults)",
            )
    sysctls = hc.get("Sysctls")
    if isinstance(sysctls, dict):
        for key in sysctls:
            name = str(key).strip().replace("/", ".")
            if name not in SAFE_SYSCTLS:
                req.require(
                    f"{p}:sysctls",
                    f"the sysctl {_short(name, 60)} (--sysctl)",
                    "set only the namespaced safe sysctls (" + ", ".join(sorted(SAFE_SYSCTLS)) + ")",
                )
    runtime = hc.get("Runtime")
    if isinstance(runtime, str) and runtime.strip().lower() not in SAFE_RUNTIMES:
        req.require(
            f"{p}:runtime", f"the runtime {_short(runtime, 60)} (--runtime)", "use the default runtime (runc)"
        )
    oom = integer(hc.get("OomScoreAdj"))
    if oom is not None and oom < 0:
        req.require(
            f"{p}:oom_score_adj",
            f"a negative OOM score adjustment ({oom}, --oom-score-adj)",
            "use 0 or a positive adjustment",
        )
    if hc.get("OomKillDisable") is True:
        req.require(
            f"{p}:oom_kill_disable",
            "disabling the OOM killer (--oom-kill-disable)",
            "leave the OOM killer on and set a memory limit that fits",
        )
    log_config = hc.obj("LogConfig")
    driver = log_config.get("Type") if log_config else None
    if isinstance(driver, str) and driver.strip().lower() not in SAFE_LOG_DRIVERS:
        req.require(
            f"{p}:log_driver",
            f"the log driver {_short(driver, 60)} (--log-driver)",
            "use json-file, local or none and read logs with docker logs",
        )


def _check_networking(req: _Request, networking: GoObject | None) -> None:
    endpoints = networking.get("EndpointsConfig") if networking else None
    if isinstance(endpoints, dict) and any(str(name).strip().lower() == "host" for name in endpoints):
        req.require(
            "container:create:host_network",
            "the instance's network namespace (--network host)",
            "run without --network host (use a user-defined network and publish ports with -p)",
        )


# -- resource limits ------------------------------------------------------------------------------
_PERIOD = 100_000  # dockerd's CPU period (µs) when the client gives none


def _apply_resources(
    req: _Request, limits: Limits, objects: list[GoObject], target, create: bool, nano_cpus: bool = True
) -> None:
    """Check every memory, CPU and PIDs limit against the project's maxima (403 naming the
    limit), then, on create, give ``target()`` (the object the defaults go in, made on first
    use) the defaults for the limits the request lacks. ``nano_cpus=False``: the request has
    no NanoCpus field (a build), so a default CPU limit is said as a CpuQuota.

    With a memory maximum, swap is bounded too: no unlimited swap (MemorySwap -1), and memory
    plus swap at most twice the maximum (what dockerd's default, as much swap as memory, gives
    a container at the maximum); a /dev/shm (ShmSize, which is memory) at most the maximum.
    With a CPU maximum, the CPU weight (CpuShares) is at most 1024 per CPU of the maximum (as
    Kubernetes gives a container whose request is its limit)."""
    res = limits.resources(req.project)

    def values(field):
        return [v for v in (integer(o.get(field)) for o in objects) if v is not None]

    def over(what, value, maximum, key, instead):
        raise DockerError(
            403,
            f"{what} is above the maximum for project {req.project} ({maximum}, "
            f"limits.{key}): {instead}, or ask your operator to raise limits.{key}",
        )

    memory = values("Memory")
    if res.max_memory:
        for value in memory:
            if value > res.max_memory or (value < 0 and not create):
                shown = "no memory limit" if value < 0 else f"the memory limit {human_bytes(value)}"
                over(
                    shown,
                    value,
                    human_bytes(res.max_memory),
                    "max_memory",
                    f"ask for at most {human_bytes(res.max_memory)} (--memory)",
                )
        swap_max = 2 * res.max_memory
        instead = (
            f"set --memory-swap (memory and swap together) to at most {human_bytes(swap_max)}, or leave "
            "it unset (as much swap as memory)"
        )
        for value in values("MemorySwap"):
            if value < 0:
                raise DockerError(
                    403,
                    f"unlimited swap (--memory-swap -1) is not allowed for project {req.project}, "
                    f"which has a memory maximum ({human_bytes(res.max_memory)}, "
                    f"limits.max_memory): {instead}, or ask your operator to raise "
                    "limits.max_memory",
                )
            if value > swap_max:
                raise DockerError(
                    403,
                    f"the memory and swap limit {human_bytes(value)} (--memory-swap) is above "
                    f"the maximum for project {req.project} ({human_bytes(swap_max)}, twice "
                    f"limits.max_memory): {instead}, or ask your operator to raise "
                    "limits.max_memory",
                )
        for value in values("ShmSize"):
            if value > res.max_memory:
                over(
                    f"the /dev/shm size {human_bytes(value)} (--shm-size)",
                    value,
                    human_bytes(res.max_memory),
                    "max_memory",
                    f"ask for at most {human_bytes(res.max_memory)} (--shm-size)",
                )
    nano = values("NanoCpus")
    quotas = values("CpuQuota")
    periods = [p for p in values("CpuPeriod") if p > 0]
    if res.max_nano_cpus:
        asked = [n for n in nano if n > 0]
        asked += [q * 1_000_000_000 // (periods[0] if periods else _PERIOD) for q in quotas if q > 0]
        unlimited = not create and any(q < 0 for q in quotas)
        for value in asked:
            if value > res.max_nano_cpus:
                over(
                    f"the CPU limit {human_cpus(value)}",
                    value,
                    human_cpus(res.max_nano_cpus),
                    "max_cpus",
                    f"ask for at most {res.max_nano_cpus / 1e9:g} CPUs (--cpus)",
                )
        if unlimited:
            over(
                "no CPU limit (CpuQuota -1)",
                -1,
                human_cpus(res.max_nano_cpus),
                "max_cpus",
                f"ask for at most {res.max_nano_cpus / 1e9:g} CPUs (--cpus)",
            )
        weight = max(2, 1024 * res.max_nano_cpus // 1_000_000_000)
        for value in values("CpuShares"):
            if value > weight:
                over(
                    f"the CPU weight {value} (--cpu-shares)",
                    value,
                    f"{weight}, 1024 per CPU of {human_cpus(res.max_nano_cpus)}",
                    "max_cpus",
                    f"ask for a weight of at most {weight} (--cpu-shares)",
                )
    pids = values("PidsLimit")
    if res.max_pids:
        for value in pids:
            if value > res.max_pids or (value < 0 if create else value <= 0):
                shown = "no PIDs limit" if value <= 0 else f"the PIDs limit {value}"
                over(shown, value, res.max_pids, "max_pids", f"ask for at most {res.max_pids} (--pids-limit)")
    if not create:
        return
    if res.memory_default and not any(v != 0 for v in memory):
        target().set("Memory", res.memory_default)
    if res.cpus_default and not any(v > 0 for v in nano) and not any(q > 0 for q in quotas):
        if periods or not nano_cpus:
            # NanoCpus and CpuPeriod cannot both be set (and a build has no NanoCpus): say it as
            # a quota of that period (the kernel's default period when none is given).
            period = periods[0] if periods else _PERIOD
            target().set("CpuQuota", max(1000, res.cpus_default * period // 1_000_000_000))
        else:
            target().set("NanoCpus", res.cpus_default)
    if res.pids_default and not any(v != 0 for v in pids):
        target().set("PidsLimit", res.pids_default)


# -- the checker ----------------------------------------------------------------------------------
class Checker:
    def __init__(self, policy_config: dict | None, limits_config: dict | None):
        self.policy = PolicyFile((policy_config or {}).get("file") or None)
        self.limits = Limits(limits_config)

    def _req(self, identity: Identity | None, reserved_ports: frozenset[int] | None = None) -> _Request:
        return _Request(self.policy, identity, reserved_ports or frozenset({AGENT_PORT}))

    def container_create(
        self,
        identity: Identity | None,
        body,
        *,
        name: str | None = None,
        version: str = "1.41",
        reserved_ports: frozenset[int] | None = None,
    ) -> None:
        """POST /containers/create: refuse (403/400) or return, having given ``body`` the
        project's default limits. ``reserved_ports``: host ports never published (the agents')."""
        self.limits.check_name(name)
        if not isinstance(body, dict):
            return  # dockerd refuses anything but an object itself
        req = self._req(identity, reserved_ports)
        top = GoObject(body)
        self.limits.check_labels(top.get("Labels"))
        self.limits.check_env(top.get("Env"))
        objects = [top]  # HostConfig fields at the top level: the API v1.23-and-earlier form
        inner = top.obj("HostConfig")
        if inner is not None:
            objects.append(inner)
        for hc in objects:
            _check_host_config(req, hc)
        _check_networking(req, top.obj("NetworkingConfig"))
        made: list[GoObject] = []

        def target() -> GoObject:
            if inner is not None:
                return inner
            if _older(version, "1.24"):
                return top  # the old form: dockerd reads a body without HostConfig as one
            if not made:  # a v1.24+ body without (or with a null) HostConfig: give it one
                key = top.key("HostConfig") or "HostConfig"
                body[key] = {}
                made.append(GoObject(body[key]))
            return made[0]

        _apply_resources(req, self.limits, objects, target, create=True)

    def container_start(self, identity: Identity | None, body) -> None:
        """POST /containers/{id}/start with a HostConfig body (API < 1.24): it replaces the
        container's whole HostConfig, so it is checked, and given defaults, as a create's is."""
        if not isinstance(body, dict):
            return
        req = self._req(identity)
        hc = GoObject(body, "the start request's HostConfig")
        _check_host_config(req, hc)
        _apply_resources(req, self.limits, [hc], lambda: hc, create=True)

    def container_update(self, identity: Identity | None, body) -> None:
        if not isinstance(body, dict):
            return
        req = self._req(identity)
        update = GoObject(body)
        p = "container:update"
        _check_devices(req, p, update)
        _apply_resources(req, self.limits, [update], lambda: update, create=False)

    def exec_create(self, identity: Identity | None, body) -> None:
        if not isinstance(body, dict):
            return
        config = GoObject(body)
        if config.get("Privileged") is True:
            self._req(identity).require(
                "exec:create:privileged",
                "privileged exec (docker exec --privileged)",
                "run the command without --privileged",
            )
        self.limits.check_env(config.get("Env"))

    def build(
        self, identity: Identity | None, query_string: str, content_type: str | None
    ) -> list[tuple[str, str]]:
        """POST /build: refuse (403/400), or return the query to send the daemon (pairs), its
        resource parameters checked against the project's maxima and given its defaults."""
        media = (content_type or "").split(";")[0].strip().lower()
        if media == "application/x-www-form-urlencoded":
            # dockerd would read build parameters from such a body: only the query is checked.
            raise DockerError(
                400,
                "the build context must be sent as a tar archive (Content-Type "
                "application/x-tar), not as a form",
            )
        req = self._req(identity)
        pairs = parse_qsl(query_string or "", keep_blank_values=True)
        for key, value in pairs:
            key = key.lower()
            if key == "networkmode" and value.strip().lower().split(":")[0] == "host":
                req.require(
                    "image:build:host_network",
                    "host networking for build steps (docker build --network host)",
                    "build with the default network",
                )
            elif key == "remote" and value.strip() not in ("", "client-session"):
                req.require(
                    "image:build:remote",
                    f"a build context fetched by the instance ({_short(value, 60)})",
                    "send the build context from the client (docker build DIR, or a tar on stdin)",
                )
            elif key == "cgroupparent" and value.strip():
                req.require(
                    "image:build:cgroup_parent",
                    f"the cgroup parent {_short(value, 60)} for build steps (docker build --cgroup-parent)",
                    "leave the cgroup parent unset",
                )
            elif key == "labels":
                try:
                    labels = json.loads(value)
                except (ValueError, RecursionError):
                    continue  # dockerd refuses it itself
                self.limits.check_labels(labels, "build label")
        return _build_resources(req, self.limits, pairs)

    def image_import(self, identity: Identity | None, from_src: str) -> None:
        """POST /images/create?fromSrc=...: anything but "-" (the body) is a URL the instance's
        daemon fetches itself (a bare host is http://host; "" is "http://", which fetches nothing)."""
        if from_src not in ("-", ""):
            self._req(identity).require(
                "image:import:url",
                f"importing an image the instance fetches from {_short(from_src, 80)} (docker import URL)",
                "download it yourself and import it from the client (curl -fsSL URL | docker import - NAME)",
            )

    def network_create(self, identity: Identity | None, body) -> None:
        """POST /networks/create: bounded labels and options; drivers and driver options that
        reach the instance's own interfaces refused unless the policy allows them."""
        if not isinstance(body, dict):
            return  # dockerd refuses it itself
        config = GoObject(body)
        self.limits.check_name(config.get("Name"), "network name")
        self.limits.check_labels(config.get("Labels"))
        options = config.get("Options")
        self.limits.check_labels(options, "network option")
        req = self._req(identity)
        driver = config.get("Driver")
        if isinstance(driver, str) and driver.strip().lower() not in SAFE_NETWORK_DRIVERS:
            req.require(
                "network:create:driver",
                f"the network driver {_short(driver, 60)} (docker network create -d)",
                "use the bridge driver (the default)",
            )
        ipam = config.obj("IPAM")
        ipam_driver = ipam.get("Driver") if ipam else None
        if isinstance(ipam_driver, str) and ipam_driver.strip().lower() not in SAFE_IPAM_DRIVERS:
            req.require(
                "network:create:driver",
                f"the IPAM driver {_short(ipam_driver, 60)} (--ipam-driver)",
                "use the default IPAM driver",
            )
        addressing = ipam.get("Config") if ipam else None
        if isinstance(addressing, list) and any(
            isinstance(entry, dict) and any(entry.values()) for entry in addressing
        ):
            req.require(
                "network:create:subnet",
                "a network's own subnet, range, gateway or auxiliary addresses "
                "(--subnet, --ip-range, --gateway, --aux-address)",
                "leave the addressing to the daemon, which picks a free subnet",
            )
        if config.get("ConfigOnly") or config.get("ConfigFrom"):
            req.require(
                "network:create:config_from",
                "a config-only network or one made from it (--config-only, --config-from)",
                "give the network its settings directly",
            )
        for key, value in options.items() if isinstance(options, dict) else ():
            key = str(key)
            shown = f"-o {_short(key, 60)}={_short(str(value), 40)}"
            if key == "com.docker.network.bridge.name":
                req.require(
                    "network:create:bridge_name",
                    f"naming the instance's bridge interface ({shown})",
                    "leave the bridge's name to the daemon",
                )
            elif key == "parent":
                req.require(
                    "network:create:parent",
                    f"attaching to the instance's interface {_short(str(value), 40)} ({shown})",
                    "use a bridge network",
                )
            elif key not in SAFE_NETWORK_OPTIONS:
                req.require(
                    "network:create:driver_opts",
                    f"the network driver option {_short(key, 60)} ({shown})",
                    "leave it unset (allowed without a rule: "
                    + ", ".join(sorted(SAFE_NETWORK_OPTIONS))
                    + ")",
                )

    def volume_create(self, identity: Identity | None, body) -> None:
        if not isinstance(body, dict):
            return
        config = GoObject(body)
        self.limits.check_name(config.get("Name"), "volume name")
        self.limits.check_labels(config.get("Labels"))
        driver = config.get("Driver")
        if not isinstance(driver, str) or driver.strip().lower() in ("", "local"):
            _local_volume_options(
                self._req(identity), "volume:create", config.get("DriverOpts"), "docker volume create -o"
            )


# The build's resource parameters (moby's newImageBuildOptions) and the HostConfig fields they
# become in each build step's container.
BUILD_RESOURCES = {
    "memory": "Memory",
    "memswap": "MemorySwap",
    "cpushares": "CpuShares",
    "cpuperiod": "CpuPeriod",
    "cpuquota": "CpuQuota",
    "shmsize": "ShmSize",
}


def _go_int64(text: str) -> int | None:
    """strconv.ParseInt(text, 10, 64)."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    value = int(text)
    return value if -(1 << 63) <= value < (1 << 63) else None


def _build_resources(req: _Request, limits: Limits, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The build's resource parameters as dockerd reads them (the first value of each exact key;
    a value that does not parse is 0, except shmsize, which dockerd refuses), held to the
    project's maxima as a create's HostConfig is, with its defaults for what is unset. The
    query sent on names each once, with the value checked."""
    first: dict[str, str] = {}
    for key, value in pairs:
        if key in BUILD_RESOURCES:
            first.setdefault(key, value)
    fields: dict[str, int] = {}
    passed_on = set()
    for key, field in BUILD_RESOURCES.items():
        raw = first.get(key)
        if not raw:
            continue
        value = _go_int64(raw)
        if value is None:
            if key == "shmsize":
                passed_on.add(key)  # dockerd refuses the build itself
            continue
        fields[field] = value
    step = GoObject(fields, "the build's query")
    _apply_resources(req, limits, [step], lambda: step, create=True, nano_cpus=False)
    out = [(k, v) for k, v in pairs if k not in BUILD_RESOURCES or k in passed_on]
    out += [(k, str(fields[f])) for k, f in BUILD_RESOURCES.items() if k not in passed_on and fields.get(f)]
    return out


def reserved_ports(settings) -> frozenset[int]:
    """Host ports no container publishes, whatever the policy: the agents' (their registered
    URLs, and the default port for agents yet to come) and the operator's [policy]
    reserved_ports."""
    ports = {AGENT_PORT}
    for port in (getattr(settings, "policy", None) or {}).get("reserved_ports") or []:
        try:
            ports.add(int(port))
        except (TypeError, ValueError):
            log.error("[policy] reserved_ports: %r is not a port number", port)
    try:
        from gateway import store
        from relay.upstream import Endpoint

        for (url,) in store.Instance.select(store.Instance.agent_url).tuples():
            try:
                endpoint = Endpoint.parse(url)
            except ValueError:
                continue
            if endpoint.scheme == "tcp":
                ports.add(int(endpoint.address[1]))
    except Exception:  # no store (a bare checker): the fixed ones
        log.debug("reserved ports: the store is not available", exc_info=True)
    return frozenset(ports)


def _older(version: str, than: str) -> bool:
    try:
        return tuple(int(p) for p in version.split(".")) < tuple(int(p) for p in than.split("."))
    except ValueError:
        return False


# -- per process, per settings --------------------------------------------------------------------
_checkers: dict[int, tuple[object, Checker]] = {}


def checker(settings) -> Checker:
    """The one Checker for these settings (a process usually has one)."""
    entry = _checkers.get(id(settings))
    if entry is None or entry[0] is not settings:
        entry = (settings, Checker(getattr(settings, "policy", None), getattr(settings, "limits", None)))
        _checkers[id(settings)] = entry
    return entry[1]


# -- what the handlers call (one line each) -------------------------------------------------------
def container_create(ctx, body) -> None:
    checker(ctx.settings).container_create(
        ctx.identity,
        body,
        name=ctx.query("name"),
        version=ctx.version,
        reserved_ports=reserved_ports(ctx.settings),
    )


def container_update(ctx, body) -> None:
    checker(ctx.settings).container_update(ctx.identity, body)


def container_rename(ctx) -> None:
    checker(ctx.settings).limits.check_name(ctx.query("name"))


def exec_create(ctx, body) -> None:
    checker(ctx.settings).exec_create(ctx.identity, body)


def build(ctx) -> list[tuple[str, str]]:
    """Refuse (403/400), or return the build's query pairs to send on (resource defaults in)."""
    return checker(ctx.settings).build(ctx.identity, ctx.req.query_string, ctx.req.content_type)


def image_import(ctx, from_src: str) -> None:
    checker(ctx.settings).image_import(ctx.identity, from_src)


def network_create(ctx, body) -> None:
    checker(ctx.settings).network_create(ctx.identity, body)


def volume_create(ctx, body) -> None:
    checker(ctx.settings).volume_create(ctx.identity, body)
