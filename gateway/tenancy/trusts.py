"""Keystone trusts: how the nova provider acts in a tenant's own project (dedicated tenancy).

With ``[placement] tenancy = "dedicated"`` an instance belongs to one project, and the nova
provider creates its server in that project, so that it counts against the project's Nova quota
and shows in its ``openstack server list``. The gateway's service user ([nova] username) has no
role there; the project's user lends it one, once, through a Keystone trust:

- at the project's first create that needs a new instance, the caller's own token (the
  request's X-Auth-Token, Keystone identity backend) makes ``POST /v3/OS-TRUST/trusts`` with
  the caller as trustor, the service user as trustee, the project, the roles of
  ``[nova] trust_roles`` (default ``member``: what Nova's default policy asks to create, list
  and delete servers; nothing more), ``impersonation`` on (the trust-scoped token's user is the
  trustor, so each server is the user's own, as if they had booted it), no expiry and no
  redelegation;
- the trust's ID is kept in the store (gateway/store/models.py Trust), sealed with Fernet under
  the key(s) of ``[nova] trust_key_file``, and reused for every later boot, listing and delete
  in that project: the service user authenticates with its password and the trust ID;
- a trust Keystone no longer honours (deleted, or its trustor lost the role or was disabled) is
  dropped from the store; nothing is done in the project until a later create of one of its
  users, carrying a token, needs a new instance and makes a new trust.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from gateway import store
from gateway.errors import DockerError

log = logging.getLogger("moorage.trusts")


@dataclass(frozen=True)
class Delegation:
    """A caller's Keystone credentials, for one request: what a project's trust is made from
    when the nova provider must boot in that project and holds no trust for it yet."""

    token: str = field(repr=False)
    user_id: str
    project_id: str
    user_name: str = ""
    project_name: str = ""

    def describe(self) -> str:
        return f"project {self.project_name or self.project_id} ({self.project_id})"


class TrustKeyError(ValueError):
    """The trust key file is missing, unreadable or holds no Fernet key."""


class Sealer:
    """Fernet over the keys of a key file (one a line, as Fernet.generate_key() writes them):
    the first seals, every one opens, so a new key goes first and an old one stays below it
    until every stored trust was sealed again (or made anew)."""

    def __init__(self, keys: list[bytes]):
        from cryptography.fernet import Fernet, MultiFernet

        if not keys:
            raise TrustKeyError("no Fernet key given")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except (ValueError, TypeError) as exc:
            raise TrustKeyError(f"not a Fernet key ({exc})") from exc

    @classmethod
    def from_file(cls, path: str) -> Sealer:
        if not path:
            raise TrustKeyError("[nova] trust_key_file is not set")
        try:
            with open(path, "rb") as fh:
                keys = [line.strip() for line in fh.read().splitlines() if line.strip()]
        except OSError as exc:
            raise TrustKeyError(f"[nova] trust_key_file {path}: {exc.strerror or exc}") from exc
        try:
            return cls(keys)
        except TrustKeyError as exc:
            raise TrustKeyError(f"[nova] trust_key_file {path}: {exc}") from exc

    def seal(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode()

    def open(self, sealed: str) -> str:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as exc:
            raise TrustKeyError(
                "a stored trust cannot be opened with the keys of [nova] trust_key_file "
                "(was the key replaced? keep the old key on a later line)"
            ) from exc


@dataclass(frozen=True)
class StoredTrust:
    project: str
    trust_id: str = field(repr=False)
    sealed_id: str = field(repr=False)
    trustor_user_id: str = ""
    roles: tuple[str, ...] = ()


class TrustStore:
    """The projects' trusts in the store, sealed at rest."""

    def __init__(self, sealer: Sealer):
        self.sealer = sealer

    def get(self, project: str) -> StoredTrust | None:
        row = store.trust_of(project)
        if row is None:
            return None
        return StoredTrust(
            project=row.project,
            trust_id=self.sealer.open(row.sealed_id),
            sealed_id=row.sealed_id,
            trustor_user_id=row.trustor_user_id,
            roles=tuple(row.roles or ()),
        )

    def put(
        self, project: str, trust_id: str, trustor_user_id: str, trustee_user_id: str, roles: list[str]
    ) -> StoredTrust:
        """Keep a new trust; if another worker kept one for the project meanwhile, that one
        wins and is returned (the caller deletes its own)."""
        sealed = self.sealer.seal(trust_id)
        store.record_trust(project, sealed, trustor_user_id, trustee_user_id, list(roles))
        return self.get(project) or StoredTrust(project, trust_id, sealed, trustor_user_id, tuple(roles))

    def forget(self, trust: StoredTrust) -> None:
        store.forget_trust(trust.project, trust.sealed_id)

    def projects(self) -> list[str]:
        return store.trusted_projects()


# -- Keystone ---------------------------------------------------------------------------------


def v3_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v3") else url + "/v3"


def create_trust(
    session, auth_url: str, delegation: Delegation, trustee_user_id: str, roles: list[str]
) -> str:
    """``POST /v3/OS-TRUST/trusts`` under the caller's own token (Keystone lets a user delegate
    only as themselves, and only roles they hold in the project); returns the trust's ID.
    ``session``: a keystoneauth1 Session (its own auth is not used for this call)."""
    from keystoneauth1 import exceptions as ksa_exc

    body = {
        "trust": {
            "trustor_user_id": delegation.user_id,
            "trustee_user_id": trustee_user_id,
            "project_id": delegation.project_id,
            "roles": [{"name": name} for name in roles],
            "impersonation": True,
            "allow_redelegation": False,
        }
    }
    try:
        resp = session.post(
            v3_url(auth_url) + "/OS-TRUST/trusts",
            json=body,
            headers={"X-Auth-Token": delegation.token},
            authenticated=False,
            raise_exc=False,
            log=False,
        )
    except ksa_exc.ClientException as exc:
        raise DockerError(
            503,
            f"cannot reach Keystone to delegate {delegation.describe()} to Moorage ({type(exc).__name__})",
        ) from exc
    if resp.status_code == 201:
        trust_id = resp.json()["trust"]["id"]
        log.info(
            "Keystone trust made for %s by user %s: roles %s delegated to the gateway's service user",
            delegation.describe(),
            delegation.user_name or delegation.user_id,
            ", ".join(roles),
        )
        return trust_id
    try:
        why = resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        why = resp.text[:300]
    if resp.status_code in (401, 403, 404):
        raise DockerError(
            403,
            f"Moorage creates this project's instances in {delegation.describe()} through a Keystone "
            f"trust from your user to its service user, with the role(s) {', '.join(roles)}, and "
            f"Keystone refused to make it ({resp.status_code}: {why}); ask a project administrator "
            "to give you those roles in the project, or run the containers from a user who has them",
        )
    raise DockerError(
        503, f"Keystone answered {resp.status_code} to the trust for {delegation.describe()}: {why}"
    )


def delete_trust(session, auth_url: str, delegation: Delegation, trust_id: str) -> None:
    """Delete a trust made in vain (another worker's won), as its trustor; best effort."""
    try:
        session.delete(
            v3_url(auth_url) + f"/OS-TRUST/trusts/{trust_id}",
            headers={"X-Auth-Token": delegation.token},
            authenticated=False,
            raise_exc=False,
            log=False,
        )
    except Exception as exc:  # noqa: BLE001 (an unused trust left behind harms nothing)
        log.warning("could not delete an unused trust of %s: %s", delegation.describe(), type(exc).__name__)
