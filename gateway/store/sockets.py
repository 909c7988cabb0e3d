"""The tenant sockets' credentials (gateway/tenancy/sockets.py): one row per socket the gateway
asked an agent to open for a container that binds the Docker socket.

A row keeps only a hash of the credential's secret (the agent holds the secret; the gateway
never needs it again), who it stands for, the container it was made for and until when it
counts. A credential counts while its row is not revoked, not expired, and its container is in
the map: removing the container (or the daemon removing it, ``--rm``) ends it without another
write.
"""

from __future__ import annotations

import datetime as _dt

import peewee

from gateway.store.models import BaseModel, Container, utcnow


class SocketCredential(BaseModel):
    id = peewee.CharField(primary_key=True, max_length=32)  # the public half, hex
    secret_hash = peewee.CharField(max_length=64)  # sha256 hex of the secret half
    project = peewee.CharField(max_length=64, index=True)
    project_name = peewee.CharField(max_length=255, default="")
    user_id = peewee.CharField(max_length=64, default="")
    user_name = peewee.CharField(max_length=255, default="")
    roles = peewee.CharField(max_length=1024, default="")  # comma-separated, as the creator had them
    instance = peewee.CharField(max_length=64)
    container = peewee.CharField(max_length=64, null=True, index=True)  # set once created
    source = peewee.CharField(max_length=255, default="")  # the path the tenant asked to bind
    created_at = peewee.DateTimeField(default=utcnow)
    expires_at = peewee.DateTimeField()
    revoked_at = peewee.DateTimeField(null=True)

    class Meta:
        table_name = "socket_credential"


def create_socket_credentials(db: peewee.Database) -> None:
    """The tenant sockets' credentials (gateway/store/sockets.py)."""
    db.create_tables([SocketCredential], safe=True)


def record(row: dict) -> SocketCredential:
    # Rows of sockets long gone go first: a revoked or expired credential is refused by its
    # absence as well as by its row.
    cutoff = utcnow() - _dt.timedelta(days=1)
    SocketCredential.delete().where(
        (SocketCredential.expires_at < cutoff) | (SocketCredential.revoked_at < cutoff)
    ).execute()
    return SocketCredential.create(**row)


def credential(credential_id: str) -> SocketCredential | None:
    return SocketCredential.get_or_none(SocketCredential.id == credential_id)


def live_container(credential_id: str) -> Container | None:
    """The container a credential was made for, while the map holds it."""
    row = credential(credential_id)
    if row is None or not row.container:
        return None
    return Container.get_or_none((Container.id == row.container) & (Container.project == row.project))


def bind(credential_id: str, container_id: str) -> None:
    SocketCredential.update(container=container_id).where(SocketCredential.id == credential_id).execute()


def revoke(credential_id: str) -> None:
    SocketCredential.update(revoked_at=utcnow()).where(
        (SocketCredential.id == credential_id) & SocketCredential.revoked_at.is_null()
    ).execute()


def of_container(container_id: str) -> list[SocketCredential]:
    return list(SocketCredential.select().where(SocketCredential.container == container_id))


def sources(credential_ids: list[str]) -> dict[str, str]:
    """The path each credential's container asked to bind, by credential ID."""
    if not credential_ids:
        return {}
    rows = SocketCredential.select(SocketCredential.id, SocketCredential.source).where(
        SocketCredential.id.in_(credential_ids)
    )
    return {row.id: row.source for row in rows}
