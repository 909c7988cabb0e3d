"""What a container or volume would mount from the instance: bind mounts, the daemons'
sockets, and local volumes whose driver options mount an instance path or device."""

from __future__ import annotations

import posixpath

from gateway.policy.bodies import GoObject, strings
from gateway.policy.rules import Request, short

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

# The Docker socket's usual paths: with [policy] tenant_socket a bind of one of these, as a
# bind's source, is given the container's own tenant socket instead (its agent serves the
# Docker API as the container's project; gateway/services/tenantsocket.py rewrites the source).
TENANT_SOCKET_PATHS = ("/var/run/docker.sock", "/run/docker.sock")


def _host_path(path: str) -> str:
    return "/" + posixpath.normpath("/" + path).lstrip("/")


def exposes_socket(path: str) -> bool:
    """True when a bind of ``path`` would hand the container a daemon's socket: the socket
    itself (anything named *.sock), or a directory above one of the daemons' sockets."""
    path = _host_path(path)
    if path.endswith(".sock") or "docker.sock" in path:
        return True
    directory = path.rstrip("/") + "/"
    return any(sock.startswith(directory) or sock.rstrip("/") == path for sock in SOCKET_PATHS)


def is_tenant_socket(path: str) -> bool:
    """True for a bind source that names the Docker socket's usual path."""
    return _host_path(path) in TENANT_SOCKET_PATHS


def check_host_path(req: Request, prefix: str, path: str, how: str) -> None:
    """One instance path a request would bind into a container (or mount as a volume)."""
    path = _host_path(path)
    if req.tenant_socket and how.startswith(("-v ", "--mount type=bind")) and is_tenant_socket(path):
        return  # the container's own socket, not the instance's (see TENANT_SOCKET_PATHS)
    socket = exposes_socket(path)
    socket_args = (
        f"{prefix}:docker_socket",
        f"mounting the instance's Docker socket ({path}, {how})",
        "bind /var/run/docker.sock (or /run/docker.sock) itself, which gives the container a socket "
        'of its own project\'s (README "The tenant socket"), or reach Moorage through DOCKER_HOST',
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


def local_volume_options(req: Request, prefix: str, opts, how: str) -> None:
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
            check_host_path(req, prefix, device, how)
            return
        rule = f"{prefix}:bind_mount"
    else:
        rule = "volume:create:host_bind"
    shown = ", ".join(f"{k}={short(low[k], 40)}" for k in ("type", "o", "device") if k in low)
    what = f"a local volume mounting what the instance has ({shown}; {how})"
    if device.startswith("/") and exposes_socket(device):
        what = f"a local volume mounting the instance's Docker socket ({shown}; {how})"
    req.require(
        rule, what, "create a plain volume (no driver options, or type=tmpfs) and fill it with docker cp"
    )


def check_binds(req: Request, binds) -> None:
    for bind in strings(binds):
        parts = bind.split(":")
        if len(parts) < 2:
            continue  # a destination alone: an anonymous volume
        source = parts[0]
        if "/" in source or source.startswith((".", "~")):  # anything else names a volume
            check_host_path(req, "container:create", source, f"-v {short(bind)}")


def check_mounts(req: Request, mounts, where: str) -> None:
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
            check_host_path(
                req, "container:create", source or "/", f"--mount type=bind,source={short(source)}"
            )
        elif kind == "volume":
            options = mount.obj("VolumeOptions")
            driver = options.obj("DriverConfig") if options else None
            if driver is not None:
                name = driver.get("Name")
                if not isinstance(name, str) or name.strip().lower() in ("", "local"):
                    local_volume_options(
                        req, "container:create", driver.get("Options"), "--mount type=volume with volume-opt"
                    )
