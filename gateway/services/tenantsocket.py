"""The tenant socket: a container that binds the Docker socket gets one of its own.

With [policy] tenant_socket (the default), a create whose bind (``-v``, ``--mount type=bind``,
either body shape) has /var/run/docker.sock or /run/docker.sock as its source is given, instead
of the instance's socket, a unix socket its agent opens for that container alone
(agent/sockets.py, under the agent's TenantSocketDir). The agent sends every request made on it
to the gateway with a credential the gateway issues here (gateway/tenancy/sockets.py), so the
container speaks the Docker API as its project, with the project's quotas and policy, and sees
nothing of other projects'. One socket per container: its credential ends with the container
(removed, or removed by its daemon), and the agent closes a socket no container mounts.

The tenant sees the path it asked for: ``docker inspect`` shows it (``show_requested``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from gateway import instances, store
from gateway.agentclient import AgentClient, UpstreamError
from gateway.context import Context
from gateway.errors import DockerError
from gateway.policy.mounts import is_tenant_socket
from gateway.tenancy import sockets
from gateway.wire import AGENT_SOCKETS_PATH, SOCKET_CREDENTIAL_HEADER, TENANT_SOCKET_DIR_FACT

log = logging.getLogger("moorage.gateway")


@dataclass(frozen=True)
class Opened:
    id: str
    instance: store.Instance


def _socket_binds(body: dict) -> list[tuple[list | dict, int | str, str]]:
    """Where ``body`` (canonical, gateway/tenancy/scope.py canonical_create) binds the Docker
    socket: (holder, key, source) per bind, in both shapes (HostConfig, and the top level)."""
    found: list[tuple[list | dict, int | str, str]] = []
    for holder in (body.get("HostConfig"), body):
        if not isinstance(holder, dict):
            continue
        binds = holder.get("Binds")
        binds = binds if isinstance(binds, list) else []
        for i, bind in enumerate(binds):
            parts = bind.split(":") if isinstance(bind, str) else []
            if len(parts) >= 2 and is_tenant_socket(parts[0]):
                found.append((binds, i, parts[0]))
        mounts = holder.get("Mounts")
        for mount in mounts if isinstance(mounts, list) else []:
            if not isinstance(mount, dict):
                continue
            kind, source = mount.get("Type"), mount.get("Source")
            bind = isinstance(kind, str) and kind.strip().lower() == "bind"
            if bind and isinstance(source, str) and is_tenant_socket(source):
                found.append((mount, "Source", source))
    return found


def provide(ctx: Context, instance: store.Instance, body: dict) -> Opened | None:
    """Open the container's socket on ``instance`` and point the body's binds at it; None when
    the body binds no Docker socket (or the tenant socket is off: policy judged the bind)."""
    found = _socket_binds(body)
    if not found or not ctx.settings.policy.tenant_socket or ctx.identity is None:
        return None
    directory = str(instances.fact(instance, TENANT_SOCKET_DIR_FACT) or "")
    if not directory:
        raise DockerError(
            503,
            f"instance {instance.uuid}'s agent serves no tenant socket (it predates them): ask the "
            "operator to upgrade it, or create the container without the Docker socket",
        )
    issued = sockets.issue(ctx.identity, instance.uuid, found[0][2], ctx.settings.policy.tenant_socket_ttl)
    client = AgentClient(instance)
    try:
        upstream = client.send(
            "PUT",
            f"{AGENT_SOCKETS_PATH}/{issued.id}",
            [(SOCKET_CREDENTIAL_HEADER, issued.credential)],
            b"",
            timeout=15,
        )
        raw = upstream.read()
        answer = json.loads(raw) if upstream.status == 201 else {}
    except (UpstreamError, OSError, ValueError) as exc:
        sockets.revoke(issued.id)
        raise DockerError(
            503,
            f"instance {instance.uuid}'s agent did not open the container's Docker socket ({exc}); try again",
        ) from None
    path = answer.get("Path") if isinstance(answer, dict) else None
    if not isinstance(path, str) or not path.startswith(directory.rstrip("/") + "/"):
        sockets.revoke(issued.id)
        raise DockerError(
            503,
            f"instance {instance.uuid}'s agent did not open the container's Docker socket "
            f"(it answered {upstream.status}); try again, or ask the operator to check its agent",
        )
    for holder, key, _ in found:
        if isinstance(holder, list):
            parts = holder[key].split(":")  # type: ignore[index]
            holder[key] = ":".join([path, *parts[1:]])  # type: ignore[index]
        else:
            holder[key] = path
    return Opened(issued.id, instance)


def created(opened: Opened | None, container_id: str) -> None:
    """The container exists: its socket's credential counts from now on."""
    if opened is not None:
        sockets.bind(opened.id, container_id)


def withdraw(opened: Opened | None) -> None:
    """The create failed: its socket closes and its credential never counts."""
    if opened is not None:
        sockets.revoke(opened.id)
        _close(opened.instance, opened.id)


def removed(container: store.Container) -> None:
    """The container is removed: its socket's credential is revoked and its agent closes it.
    (A container its daemon removes (--rm) leaves the map, which alone ends the credential; its
    agent closes a socket no container mounts, agent/sockets.py.)"""
    for credential_id, _ in sockets.of_container(container.id):
        sockets.revoke(credential_id)
        _close(container.instance, credential_id)


def _close(instance: store.Instance, credential_id: str) -> None:
    try:
        AgentClient(instance).send("DELETE", f"{AGENT_SOCKETS_PATH}/{credential_id}", timeout=10).read()
    except (UpstreamError, OSError) as exc:
        # The credential is revoked already; the agent's own sweep closes the socket later.
        log.info("closing tenant socket %s on %s: %s", credential_id, instance.uuid, exc)


def show_requested(payload: dict, instance: store.Instance) -> None:
    """An inspect answer shows the path the tenant bound, not its tenant socket's."""
    directory = str(instances.fact(instance, TENANT_SOCKET_DIR_FACT) or "")
    if not directory:
        return
    prefix = directory.rstrip("/") + "/"
    hc = payload.get("HostConfig")
    hc = hc if isinstance(hc, dict) else {}
    binds = hc.get("Binds")
    binds = binds if isinstance(binds, list) else []
    mounts = [m for m in payload.get("Mounts") or [] if isinstance(m, dict)]
    mounts += [m for m in hc.get("Mounts") or [] if isinstance(m, dict)]

    def credential_of(path) -> str:
        return path[len(prefix) :].split("/")[0] if isinstance(path, str) and path.startswith(prefix) else ""

    ids = [credential_of(b.split(":")[0]) for b in binds if isinstance(b, str)]
    ids += [credential_of(m.get("Source")) for m in mounts]
    requested = sockets.sources([i for i in ids if i])
    if not requested:
        return
    for i, bind in enumerate(binds):
        if isinstance(bind, str) and credential_of(bind.split(":")[0]) in requested:
            parts = bind.split(":")
            binds[i] = ":".join([requested[credential_of(parts[0])], *parts[1:]])
    for mount in mounts:
        if credential_of(mount.get("Source")) in requested:
            mount["Source"] = requested[credential_of(mount.get("Source"))]
