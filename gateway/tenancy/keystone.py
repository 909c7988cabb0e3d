"""Keystone identity: X-Auth-Token checked against a real Keystone, behind a bounded cache.

    [identity]
    backend = "keystone"
    auth_url = "https://keystone.example.org:5000/v3"
    # the gateway's own (service) credentials; it needs a role that may validate tokens
    # (admin or service); any keystoneauth1 v3 plugin: auth_type = "password" (default) or
    # "v3applicationcredential" (application_credential_id, application_credential_secret)
    username = "moorage"
    password = "..."
    project_name = "service"
    user_domain_name = "Default"
    project_domain_name = "Default"
    timeout = 5           # seconds, every call to Keystone
    cache_ttl = 60        # seconds a validated token is trusted without asking again (never past
                          # its expiry): a revoked token is refused at most this long after
    cache_size = 10000    # entries (per worker); least recently used go first
    negative_cache_ttl = 5
    cafile = "..."        # or insecure = true (tests only)

The keys other than gateway/config.py's IdentitySettings fields go to the keystoneauth1 plugin
that auth_type names; one that plugin does not take is refused, naming it, so that a misspelt
credential is not silently left out.

A token is validated with ``GET /v3/auth/tokens`` (``X-Subject-Token``) under the service's own
token. Keystone answers 404 for a garbage, expired or revoked token: 401 here. A token scoped to
another project than X-Auth-Project-Id: 401. Keystone unreachable, timing out, answering 5xx, or
refusing the service's own credentials: 503, never a pass. The gateway runs this inside gevent
workers: keystoneauth1 talks through requests, which the monkey-patched socket makes cooperative,
and the cache's lock is a plain (patched) lock held for dictionary operations only.

Tokens never reach a log line: the cache is keyed by their SHA-256, and keystoneauth's request
logging is off for validation calls (it hashes token headers anyway).
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import logging
import threading
import time
from dataclasses import dataclass

from gateway.config import IdentitySettings
from gateway.errors import DockerError
from gateway.tenancy.identity import LOGIN_HINT, Identity, IdentityProvider
from gateway.wire import PROJECT_HEADER

log = logging.getLogger("moorage.identity.keystone")

REFRESH_HINT = (
    "get a new token with `moorage login --refresh` (after sourcing your OpenStack credentials) "
    "and export the DOCKER_CONFIG it prints"
)


@dataclass(frozen=True)
class _Entry:
    """What Keystone said about one token, until ``until`` (time.monotonic())."""

    until: float
    identity: Identity | None = None
    expires_at: float = 0.0  # time.time() of the token's expiry
    reason: str = ""  # why the token is refused, when identity is None


def _parse_time(value: str) -> float:
    """Keystone's ISO 8601 timestamps ("2026-12-01T19:49:17.000000Z") as a Unix time."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _v3_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v3") else url + "/v3"


def plugin(config: IdentitySettings):
    """(the keystoneauth1 loader of ``config.auth_type``, the plugin options given for it);
    ValueError naming an [identity] key that is neither a field of IdentitySettings nor one of
    the plugin's options."""
    from keystoneauth1 import loading

    auth_type = config.auth_type
    plugin_name = {
        "password": "v3password",
        "applicationcredential": "v3applicationcredential",
        "v3applicationcredential": "v3applicationcredential",
    }.get(auth_type, auth_type)
    try:
        loader = loading.get_plugin_loader(plugin_name)
    except Exception as exc:  # keystoneauth1's NoMatchingPlugin
        raise ValueError(f"[identity] auth_type {auth_type!r} is not a keystoneauth1 plugin") from exc
    known = sorted(opt.dest for opt in loader.get_options() if opt.dest != "auth_url")
    unknown = [key for key in config.plugin_options if key not in known]
    if unknown:
        raise ValueError(
            f"unknown key [identity] {unknown[0]} (auth_type {auth_type!r}); its plugin's keys: "
            f"{', '.join(known)}"
        )
    return loader, dict(config.plugin_options)


class KeystoneIdentity(IdentityProvider):
    def __init__(self, config: IdentitySettings):
        from keystoneauth1 import session

        if not config.auth_url:
            raise ValueError("[identity] backend = 'keystone' needs auth_url (Keystone's v3 endpoint)")
        self.auth_url = _v3_url(config.auth_url)
        self.validate_url = self.auth_url + "/auth/tokens?nocatalog"
        self.timeout = config.timeout
        self.cache_ttl = max(0.0, config.cache_ttl)
        self.negative_ttl = max(0.0, config.negative_ttl)
        self.cache_size = max(1, config.cache_size)

        loader, options = plugin(config)
        try:
            auth = loader.load_from_options(auth_url=self.auth_url, **options)
        except Exception as exc:  # MissingRequiredOptions names what is missing
            raise ValueError(f"[identity] Keystone service credentials are incomplete: {exc}") from exc
        verify: bool | str = True
        if config.insecure:
            verify = False
        elif config.cafile:
            verify = config.cafile
        # Built per worker (the gateway's factory runs after the fork): no shared sockets.
        self.session = session.Session(
            auth=auth, verify=verify, timeout=self.timeout, user_agent="moorage-gateway"
        )
        self._cache: collections.OrderedDict[bytes, _Entry] = collections.OrderedDict()
        self._lock = threading.Lock()

    # -- the cache ------------------------------------------------------------------------
    def _cached(self, key: bytes) -> _Entry | None:
        now = time.monotonic()
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            if entry.until <= now:
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return entry

    def _remember(self, key: bytes, entry: _Entry) -> None:
        if entry.until <= time.monotonic():
            return
        with self._lock:
            self._cache[key] = entry
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def forget(self, token: str) -> None:
        """Drop a token from the cache (tests; an operator's revocation hook)."""
        with self._lock:
            self._cache.pop(hashlib.sha256(token.encode()).digest(), None)

    def cache_len(self) -> int:
        with self._lock:
            return len(self._cache)

    # -- Keystone -------------------------------------------------------------------------
    def _unavailable(self, why: str) -> DockerError:
        return DockerError(
            503,
            f"identity service unavailable: {why}; the gateway cannot check tokens "
            "right now, try again shortly (operators: see the gateway log)",
        )

    def _get(self, url: str, headers: dict | None = None):
        """GET ``url`` under the service's own token; every failure to get an answer is 503."""
        from keystoneauth1 import exceptions as ksa_exc

        try:
            return self.session.get(
                url,
                headers=headers or {},
                authenticated=True,
                raise_exc=False,
                log=False,
                timeout=self.timeout,
            )
        except ksa_exc.Unauthorized as exc:
            log.error("Keystone at %s refused the gateway's service credentials: %s", self.auth_url, exc)
            raise self._unavailable("Keystone refused the gateway's service credentials") from exc
        except (
            ksa_exc.ConnectFailure,
            ksa_exc.ConnectionError,
            ksa_exc.RequestTimeout,
            ksa_exc.DiscoveryFailure,
        ) as exc:
            log.warning("Keystone at %s unreachable: %s", self.auth_url, type(exc).__name__)
            raise self._unavailable(f"cannot reach Keystone at {self.auth_url}") from exc
        except ksa_exc.HttpError as exc:  # during the service's own login
            log.warning("Keystone at %s answered %s to the gateway's login", self.auth_url, exc.http_status)
            raise self._unavailable(f"Keystone answered {exc.http_status} to the gateway's login") from exc
        except ksa_exc.ClientException as exc:
            log.warning("Keystone at %s: %s", self.auth_url, type(exc).__name__)
            raise self._unavailable(f"Keystone at {self.auth_url} failed ({type(exc).__name__})") from exc

    def _ask(self, token: str) -> _Entry:
        started = time.monotonic()
        resp = self._get(self.validate_url, {"X-Subject-Token": token})
        elapsed = time.monotonic() - started
        status = resp.status_code
        if status == 404:
            return _Entry(
                until=time.monotonic() + self.negative_ttl,
                reason="the token is not valid (expired, revoked, or not a Keystone token)",
            )
        if status == 401:  # after keystoneauth re-authenticated once: our own credentials
            log.error("Keystone at %s refused the gateway's own token after re-authenticating", self.auth_url)
            raise self._unavailable("Keystone refused the gateway's service credentials")
        if status == 403:
            log.error(
                "Keystone at %s: the gateway's service user may not validate tokens (403); "
                "give it the admin or service role",
                self.auth_url,
            )
            raise self._unavailable("the gateway's service user may not validate tokens")
        if status != 200:
            log.warning("Keystone at %s answered %s to a token validation", self.auth_url, status)
            raise self._unavailable(f"Keystone answered {status}")
        try:
            body = resp.json()["token"]
            expires_at = _parse_time(body["expires_at"])
            user = body.get("user") or {}
            project = body.get("project")
            roles = tuple(r.get("name", "") for r in body.get("roles") or () if r.get("name"))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("Keystone at %s answered an unreadable token validation: %s", self.auth_url, exc)
            raise self._unavailable("Keystone's answer could not be read") from exc
        log.debug("token validated by Keystone in %.1f ms", elapsed * 1000)
        lifetime = expires_at - time.time()
        if not project or not project.get("id"):
            return _Entry(
                until=time.monotonic() + min(self.negative_ttl, max(lifetime, 0)),
                reason="the token is not scoped to a project (set OS_PROJECT_NAME and log in again)",
            )
        identity = Identity(
            project_id=project["id"],
            project_name=project.get("name", ""),
            user_id=user.get("id", ""),
            user_name=user.get("name", ""),
            roles=roles,
        )
        return _Entry(
            until=time.monotonic() + min(self.cache_ttl, max(lifetime, 0)),
            identity=identity,
            expires_at=expires_at,
        )

    # -- client certificates (gateway/tenancy/certs.py) -------------------------------------
    def _json(self, path: str, what: str) -> dict | None:
        """GET a v3 resource as the service: its JSON, None for 404; 503 for anything else."""
        resp = self._get(self.auth_url + path)
        if resp.status_code == 404:
            return None
        if resp.status_code == 403:
            log.error("Keystone at %s: the gateway's service user may not read %s (403)", self.auth_url, what)
            raise self._unavailable(f"the gateway's service user may not read {what}")
        if resp.status_code != 200:
            raise self._unavailable(f"Keystone answered {resp.status_code} reading {what}")
        try:
            return resp.json()
        except ValueError as exc:
            raise self._unavailable("Keystone's answer could not be read") from exc

    def membership(self, user_id: str, project_id: str) -> Identity:
        """The project exists and is enabled, the user exists and is enabled, and has at least
        one (effective: through groups and inherited too) role on the project."""
        from urllib.parse import quote, urlencode

        project = (self._json(f"/projects/{quote(project_id, safe='')}", "projects") or {}).get("project")
        if not project:
            raise DockerError(401, "its project no longer exists")
        if not project.get("enabled", True):
            raise DockerError(401, f"its project {project.get('name', project_id)} is disabled")
        user = (self._json(f"/users/{quote(user_id, safe='')}", "users") or {}).get("user")
        if not user:
            raise DockerError(401, "its user no longer exists")
        if not user.get("enabled", True):
            raise DockerError(401, f"its user {user.get('name', user_id)} is disabled")
        query = urlencode(
            {"user.id": user_id, "scope.project.id": project_id, "effective": "", "include_names": "1"}
        )
        found = self._json(f"/role_assignments?{query}", "role assignments") or {}
        roles = tuple(
            sorted(
                {(a.get("role") or {}).get("name", "") for a in found.get("role_assignments") or ()} - {""}
            )
        )
        if not roles:
            raise DockerError(
                401, f"its user {user.get('name', user_id)} has no role in the project any more"
            )
        return Identity(
            project_id=project_id,
            project_name=project.get("name", ""),
            user_id=user_id,
            user_name=user.get("name", ""),
            roles=roles,
        )

    # -- readiness ----------------------------------------------------------------------------
    READY_TIMEOUT = 2.0  # seconds: /readyz answers promptly even when Keystone does not
    READY_CACHE = 10.0  # seconds a readiness answer is reused: probes every few seconds stay cheap

    def unreachable(self) -> str:
        """GET the v3 root (no token needed, no service login): any HTTP answer below 500
        means Keystone is up. Cached for READY_CACHE seconds, successes and failures alike."""
        now = time.monotonic()
        cached = getattr(self, "_ready", None)
        if cached is not None and now - cached[0] < self.READY_CACHE:
            return cached[1]
        try:
            resp = self.session.get(
                self.auth_url, authenticated=False, raise_exc=False, log=False, timeout=self.READY_TIMEOUT
            )
            why = "" if resp.status_code < 500 else f"Keystone at {self.auth_url} answered {resp.status_code}"
        except Exception as exc:  # noqa: BLE001 - every failure to reach it is the answer
            why = f"cannot reach Keystone at {self.auth_url} ({type(exc).__name__})"
        self._ready = (now, why)
        return why

    # -- the interface ----------------------------------------------------------------------
    def validate(self, token: str, project_id: str) -> Identity:
        key = hashlib.sha256(token.encode()).digest()
        entry = self._cached(key)
        if entry is None:
            entry = self._ask(token)
            self._remember(key, entry)
        if entry.identity is None:
            raise DockerError(401, f"authentication failed: {entry.reason}; {REFRESH_HINT}")
        if entry.expires_at <= time.time():
            self.forget(token)
            raise DockerError(401, f"authentication failed: the token expired; {REFRESH_HINT}")
        identity = entry.identity
        if identity.project_id != project_id:
            raise DockerError(
                401,
                f"authentication failed: the token is scoped to project {identity.project_name or '?'} "
                f"({identity.project_id}), not to the project {PROJECT_HEADER} names ({project_id}); "
                f"{LOGIN_HINT}",
            )
        return identity
