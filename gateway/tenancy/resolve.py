"""The one place that resolves a tenant's reference to one of its objects.

A reference is what a client typed: a full ID, a name, or an ID prefix, looked up in that
order as dockerd does, within the caller's project only. Another project's object is
indistinguishable from one that does not exist: same 404, same wording.
"""

from __future__ import annotations

from gateway import routing, store
from gateway.errors import DockerError, no_such_container, no_such_exec
from gateway.store import RESERVATION_PREFIX
from gateway.tenancy import names


def container(project: str, ref: str) -> store.Container:
    ref = ref.strip()
    name = ref[1:] if ref.startswith("/") else ref
    if not name or name.startswith(RESERVATION_PREFIX):
        raise no_such_container(ref)
    # By full ID, then by name, with its instance (every caller forwards to it next).
    found = store.placed_container(project, name)
    if found:
        return found
    if all(ch in "0123456789abcdef" for ch in name):
        matches = store.placed_containers_by_prefix(project, name)
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise DockerError(500, f"multiple IDs found with provided prefix: {name}")
    raise no_such_container(ref)


def daemon_ref(ref: str, found: store.Container) -> str:
    """How to name ``found`` to its daemon: by the daemon's name for it when the client used
    its name (dockerd's messages then quote the name, which answers turn back into the
    tenant's), else by full ID: an ID prefix could match another project's container there."""
    if ref.lstrip("/") == found.name and found.name:
        return container_daemon_name(found)
    return found.id


def container_daemon_name(found: store.Container) -> str:
    return found.daemon_name or names.to_daemon(found.project, found.name)


# Networks every daemon has; a tenant may use and inspect them, never change them.
BUILTIN_NETWORKS = ("bridge", "host", "none")


def no_such_network(ref: str) -> DockerError:
    return DockerError(404, f"network {ref} not found")


def network(project: str, ref: str) -> store.Network:
    """The project's user-defined network by full ID, name, or ID prefix (dockerd's order)."""
    N = store.Network
    # An outer join: a spanning network has no instance (services/spans.py).
    mine = N.select(N, store.Instance).join(store.Instance, "LEFT OUTER JOIN").where(N.project == project)
    found = mine.where(N.id == ref).first() or mine.where(N.name == ref).order_by(N.created_at.desc()).first()
    if found:
        return found
    if ref and all(ch in "0123456789abcdef" for ch in ref):
        matches = list(mine.where(N.id.startswith(ref)).limit(2))
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise DockerError(
                400, f"network {ref} is ambiguous ({len(matches)} matches found based on ID prefix)"
            )
    raise no_such_network(ref)


def no_such_volume(name: str) -> DockerError:
    return DockerError(404, f"get {name}: no such volume")


def volume(project: str, name: str) -> store.Volume:
    """The project's named volume (volumes have no IDs: the name is the reference)."""
    V = store.Volume
    found = (
        V.select(V, store.Instance)
        .join(store.Instance)
        .where((V.project == project) & (V.name == name))
        .first()
    )
    if found is None:
        raise no_such_volume(name)
    return found


def exec_session(project: str, ref: str) -> store.Exec:
    E = store.Exec
    found = (
        E.select(E, store.Container, store.Instance)
        .join(store.Container)
        .join(store.Instance)
        .where((E.id == ref) & (E.project == project))
        .first()
    )
    if found is None:
        raise no_such_exec(ref)
    return found


def network_or_builtin(project: str, ref: str) -> store.Network | None:
    """The project's network, or None for one of the daemon's predefined networks."""
    return None if ref in BUILTIN_NETWORKS else network(project, ref)


def by_kind(kind: str, project: str, ref: str) -> tuple[object | None, str]:
    """(the project's object of ``kind`` that ``ref`` names, how its daemon names it): what a
    route that declares ``resolves=kind`` (gateway/routing.py) hands its handler."""
    if kind == routing.CONTAINER:
        found = container(project, ref)
        return found, daemon_ref(ref, found)
    if kind == routing.NETWORK:
        net = network_or_builtin(project, ref)
        return net, net.id if net is not None else ref
    if kind == routing.VOLUME:
        vol = volume(project, ref)
        return vol, vol.daemon_name
    if kind == routing.EXEC:
        session = exec_session(project, ref)
        return session, session.id
    raise ValueError(f"no resolver for {kind!r}")
