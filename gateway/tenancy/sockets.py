"""Tenant sockets' credentials: the third kind of identity, beside Keystone headers and client
certificates.

A container that binds the Docker socket is given a socket of its own on its instance
(gateway/services/tenantsocket.py, agent/sockets.py). Its agent sends every request made on it
to the gateway with a credential, ``ID.SECRET`` in the SOCKET_CREDENTIAL_HEADER, that the
gateway issued when it created the container:

    issue()     -> a new credential for the creating identity's project (the store keeps the
                   secret's SHA-256 only; the agent keeps the secret, the container never sees it)
    identify()  -> the Identity it stands for, or 401 once it is revoked, expired, or its
                   container is gone from the map (removed, or removed by its daemon: --rm)
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from gateway.errors import DockerError
from gateway.store import sockets as socket_store
from gateway.store import utcnow
from gateway.tenancy.identity import Identity

HINT = (
    "the socket a container is given for /var/run/docker.sock works while that container "
    "exists; outside it, use DOCKER_HOST with `moorage login`"
)


@dataclass(frozen=True)
class Issued:
    id: str
    credential: str  # ID.SECRET: what the agent presents


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(identity: Identity, instance: str, source: str, ttl: float) -> Issued:
    """A credential for a container of ``identity``'s project about to be created on ``instance``
    that asked to bind ``source``; it counts for ``ttl`` seconds at most."""
    credential_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    socket_store.record(
        {
            "id": credential_id,
            "secret_hash": _digest(secret),
            "project": identity.project_id,
            "project_name": identity.project_name,
            "user_id": identity.user_id,
            "user_name": identity.user_name,
            "roles": ",".join(identity.roles)[:1024],
            "instance": instance,
            "source": source,
            "expires_at": utcnow() + datetime.timedelta(seconds=max(60.0, ttl)),
        }
    )
    return Issued(credential_id, f"{credential_id}.{secret}")


def identify(presented: str) -> Identity:
    """The identity of a tenant socket's credential, or 401 saying why it no longer counts."""
    credential_id, _, secret = presented.strip().partition(".")
    row = socket_store.credential(credential_id) if credential_id.isalnum() else None
    if row is None or not hmac.compare_digest(row.secret_hash.encode(), _digest(secret).encode()):
        raise DockerError(401, f"authentication failed: the tenant socket's credential is not valid; {HINT}")
    if row.revoked_at is not None:
        raise DockerError(
            401, f"authentication failed: this tenant socket was closed (its container was removed); {HINT}"
        )
    if row.expires_at <= utcnow():
        raise DockerError(
            401,
            f"authentication failed: this tenant socket's credential expired at "
            f"{row.expires_at:%Y-%m-%d %H:%M:%S} UTC ([policy] tenant_socket_ttl); {HINT}",
        )
    if socket_store.live_container(credential_id) is None:
        raise DockerError(
            401,
            "authentication failed: this tenant socket's container is not (or no longer) in "
            f"its project; {HINT}",
        )
    return Identity(
        project_id=row.project,
        project_name=row.project_name,
        user_id=row.user_id,
        user_name=row.user_name,
        roles=tuple(r for r in row.roles.split(",") if r),
    )


def bind(credential_id: str, container_id: str) -> None:
    """The container is created: the credential counts from now on, while it exists."""
    socket_store.bind(credential_id, container_id)


def revoke(credential_id: str) -> None:
    socket_store.revoke(credential_id)


def of_container(container_id: str) -> list[tuple[str, str]]:
    """(credential ID, instance) of every credential made for ``container_id``."""
    return [(row.id, row.instance) for row in socket_store.of_container(container_id)]


def sources(credential_ids: list[str]) -> dict[str, str]:
    return socket_store.sources(credential_ids)
