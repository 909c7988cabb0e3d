"""Identity providers: from the two headers to a project, or a 401."""

from __future__ import annotations

import hmac
import json
import os
import threading
import weakref
from dataclasses import dataclass, field

from gateway.errors import DockerError
from gateway.wire import PROJECT_HEADER, TOKEN_HEADER

LOGIN_HINT = (
    "run `moorage login` (or source your OpenStack credentials and run it), then export the "
    "DOCKER_CONFIG it prints so the docker client sends X-Auth-Token and X-Auth-Project-Id"
)


@dataclass(frozen=True)
class Identity:
    project_id: str
    project_name: str = ""
    user_id: str = ""
    user_name: str = ""
    roles: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class IdentityProvider:
    def validate(self, token: str, project_id: str) -> Identity:
        """Return the identity for ``token`` scoped to ``project_id`` or raise DockerError 401/503."""
        raise NotImplementedError

    def membership(self, user_id: str, project_id: str) -> Identity:
        """The user's identity in the project now (its roles there), for a client certificate
        (gateway/tenancy/certs.py); DockerError 401 saying why not (no role left, project or
        user disabled or gone), 503 when the backend cannot say."""
        raise NotImplementedError

    def unreachable(self) -> str:
        """Why the backend cannot be reached now, in a few words ("": it can; /readyz).
        The embedded backend is this process: always reachable."""
        return ""


class EmbeddedIdentity(IdentityProvider):
    """DEVELOPMENT ONLY: tokens mapped to projects in a local JSON file.

    For the quickstart and tests without Keystone. Tokens never expire and are stored in the
    clear; never point a production gateway at this provider.
    """

    def __init__(self, token_file: str):
        self.token_file = token_file
        self._lock = threading.Lock()
        self._mtime = None
        self._tokens: dict[str, dict] = {}
        self._load()

    def _load(self) -> None:
        mtime = os.stat(self.token_file).st_mtime_ns
        if mtime == self._mtime:
            return
        with open(self.token_file) as fh:
            data = json.load(fh)
        with self._lock:
            self._tokens = dict(data.get("tokens", {}))
            self._mtime = mtime

    def validate(self, token: str, project_id: str) -> Identity:
        try:
            self._load()  # picks up edits to the file without a restart
        except (OSError, ValueError) as exc:
            raise DockerError(503, f"identity service unavailable: cannot read token file ({exc})") from exc
        entry = None
        for known, value in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                entry = value
                break
        if entry is None:
            raise DockerError(401, f"authentication failed: the token is not valid; {LOGIN_HINT}")
        if entry.get("project_id") != project_id:
            raise DockerError(
                401,
                f"authentication failed: the token is scoped to another project than {PROJECT_HEADER} "
                f"names ({project_id}); {LOGIN_HINT}",
            )
        return Identity(
            project_id=entry["project_id"],
            project_name=entry.get("project_name", ""),
            user_id=entry.get("user_id", ""),
            user_name=entry.get("user_name", ""),
            roles=tuple(entry.get("roles", ())),
        )

    def membership(self, user_id: str, project_id: str) -> Identity:
        """A user keeps a project while the token file has an entry for both."""
        try:
            self._load()
        except (OSError, ValueError) as exc:
            raise DockerError(503, f"identity service unavailable: cannot read token file ({exc})") from exc
        for entry in list(self._tokens.values()):
            if entry.get("project_id") == project_id and entry.get("user_id", "") == user_id:
                return Identity(
                    project_id=project_id,
                    project_name=entry.get("project_name", ""),
                    user_id=user_id,
                    user_name=entry.get("user_name", ""),
                    roles=tuple(entry.get("roles", ())),
                )
        raise DockerError(401, "its user has no role in its project any more")


# Credentials last presented on each client connection (keyed weakly by its socket).
_connection_credentials: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def authenticate(provider: IdentityProvider, headers: dict[str, str], connection=None) -> Identity:
    """Both headers or 401, then the provider's verdict.

    A request with neither header, on a connection whose earlier request presented both, is
    that earlier request's client: it is judged on the same credentials (validated again,
    so an expired or revoked token still ends it). docker-py's ``attach_socket`` (compose
    v1's ``run`` and foreground ``up``) sends its attach without the configured HttpHeaders,
    on the pooled connection that carried the headers a moment before."""
    token = headers.get(TOKEN_HEADER.upper(), "").strip()
    project = headers.get(PROJECT_HEADER.upper(), "").strip()
    if connection is not None:
        try:
            if token and project:
                _connection_credentials[connection] = (token, project)
            elif not token and not project and connection in _connection_credentials:
                token, project = _connection_credentials[connection]
        except TypeError:  # a socket object that takes no weak reference: no memory, no harm
            pass
    missing = [name for name, value in ((TOKEN_HEADER, token), (PROJECT_HEADER, project)) if not value]
    if missing:
        raise DockerError(
            401, f"authentication required: missing {' and '.join(missing)} header; {LOGIN_HINT}"
        )
    return provider.validate(token, project)
