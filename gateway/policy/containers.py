"""Container creates, starts, updates and execs: every setting that lets a container reach
past itself into the instance (privileged mode, host bind mounts, the Docker socket, the host's
namespaces, devices, capabilities outside a safe set, unconfined seccomp/AppArmor, SELinux
labels, cgroup parents, sysctls outside the namespaced safe set, other runtimes, ...).

HostConfig fields are read both inside ``HostConfig`` and at the top level of a create body
(the API v1.23-and-earlier form, which dockerd 20.10 still decodes on every version).
"""

from __future__ import annotations

from gateway.policy.bodies import GoObject, integer, strings
from gateway.policy.mounts import check_binds, check_mounts
from gateway.policy.ports import check_ports
from gateway.policy.resources import apply_resources
from gateway.policy.rules import Request, short

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


def container_create(req: Request, body, *, name: str | None = None, version: str = "1.41") -> None:
    """POST /containers/create: refuse (403/400) or return, having given ``body`` the
    project's default limits."""
    req.limits.check_name(name)
    if not isinstance(body, dict):
        return  # dockerd refuses anything but an object itself
    top = GoObject(body)
    req.limits.check_labels(top.get("Labels"))
    req.limits.check_env(top.get("Env"))
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

    apply_resources(req, objects, target, create=True)


def container_start(req: Request, body) -> None:
    """POST /containers/{id}/start with a HostConfig body (API < 1.24): it replaces the
    container's whole HostConfig, so it is checked, and given defaults, as a create's is."""
    if not isinstance(body, dict):
        return
    hc = GoObject(body, "the start request's HostConfig")
    _check_host_config(req, hc)
    apply_resources(req, [hc], lambda: hc, create=True)


def container_update(req: Request, body) -> None:
    if not isinstance(body, dict):
        return
    update = GoObject(body)
    p = "container:update"
    _check_devices(req, p, update)
    apply_resources(req, [update], lambda: update, create=False)


def exec_create(req: Request, body) -> None:
    if not isinstance(body, dict):
        return
    config = GoObject(body)
    if config.get("Privileged") is True:
        req.require(
            "exec:create:privileged",
            "privileged exec (docker exec --privileged)",
            "run the command without --privileged",
        )
    req.limits.check_env(config.get("Env"))


def _check_security_opts(req: Request, prefix: str, opts) -> None:
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
            what = f"the SELinux label option {short(text)} (--security-opt)"
        elif key == "seccomp" and value.lower() not in ("", "builtin", "default"):
            what = (
                "an unconfined seccomp profile (--security-opt seccomp=unconfined)"
                if value.lower() == "unconfined"
                else "a custom seccomp profile (--security-opt seccomp=...)"
            )
        elif key == "apparmor" and value.lower() not in ("", "docker-default"):
            what = f"the AppArmor profile {short(value, 40)} (--security-opt apparmor=...)"
        elif key == "systempaths":
            what = "unmasked system paths (--security-opt systempaths=unconfined)"
        else:
            continue  # no-new-privileges=..., or something dockerd refuses itself
        req.require(
            f"{prefix}:security_opt",
            what,
            "run with the default seccomp and AppArmor profiles and no SELinux label options",
        )


def _check_capabilities(req: Request, prefix: str, caps, flag: str = "--cap-add") -> None:
    for cap in strings(caps):
        name = cap.strip().upper()
        name = name[4:] if name.startswith("CAP_") else name
        if name in SAFE_CAPABILITIES:
            continue
        what = (
            "adding every capability (--cap-add ALL)"
            if name == "ALL"
            else f"the capability {short(name, 40)} ({flag})"
        )
        req.require(
            f"{prefix}:cap_add",
            what,
            "add only capabilities from the baseline set (" + ", ".join(sorted(SAFE_CAPABILITIES)) + ")",
        )


def _check_devices(req: Request, prefix: str, hc: GoObject) -> None:
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
            f"the cgroup parent {short(str(parent), 60)} (--cgroup-parent)",
            "leave the cgroup parent unset",
        )


def _check_host_config(req: Request, hc: GoObject) -> None:
    """Everything in a HostConfig (or the top level of an old-style create body) that
    reaches past the container."""
    p = "container:create"
    if hc.get("Privileged") is True:
        req.require(
            f"{p}:privileged",
            "privileged mode (--privileged)",
            "run without --privileged (add only the capabilities you need with --cap-add)",
        )
    check_binds(req, hc.get("Binds"))
    check_mounts(req, hc.get("Mounts"), hc.where)
    check_ports(req, hc.get("PortBindings"))
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
                    f"the sysctl {short(name, 60)} (--sysctl)",
                    "set only the namespaced safe sysctls (" + ", ".join(sorted(SAFE_SYSCTLS)) + ")",
                )
    runtime = hc.get("Runtime")
    if isinstance(runtime, str) and runtime.strip().lower() not in SAFE_RUNTIMES:
        req.require(
            f"{p}:runtime", f"the runtime {short(runtime, 60)} (--runtime)", "use the default runtime (runc)"
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
            f"the log driver {short(driver, 60)} (--log-driver)",
            "use json-file, local or none and read logs with docker logs",
        )


def _check_networking(req: Request, networking: GoObject | None) -> None:
    endpoints = networking.get("EndpointsConfig") if networking else None
    if isinstance(endpoints, dict) and any(str(name).strip().lower() == "host" for name in endpoints):
        req.require(
            "container:create:host_network",
            "the instance's network namespace (--network host)",
            "run without --network host (use a user-defined network and publish ports with -p)",
        )


def _older(version: str, than: str) -> bool:
    try:
        return tuple(int(p) for p in version.split(".")) < tuple(int(p) for p in than.split("."))
    except ValueError:
        return False
