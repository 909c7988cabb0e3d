"""Tenants alpha and beta: the embedded identity, or projects and users in a real Keystone (--keystone)."""

from __future__ import annotations

import contextlib
import datetime
import http.client
import json
import os
import secrets
import shlex
import subprocess
import sys
import time
import urllib.parse
import uuid

from .. import REPO
from ..keystone.api import password_auth
from .common import TENANTS, Fail, parse_exports, run_down, say, write_private
from .state import Stack

KEYSTONE_SCRIPT = os.path.join(REPO, "scripts", "keystone")
KEYSTONE_UP_TIMEOUT = 1200  # a first `up` installs Keystone into its virtualenv
KEYSTONE_CACHE_TTL = 5  # seconds the gateway trusts a validated token: revocations bite quickly
KEYSTONE_TOKEN_MIN_LEFT = 24 * 3600  # `up` re-issues a tenant token that lives less than this


def ensure_identity(st: Stack) -> dict:
    path = st.path("identity.json")
    data: dict = {}
    if os.path.exists(path):
        try:
            with open(path) as fh:
                data = json.load(fh)
        except ValueError as exc:
            raise Fail(f"{path} is not valid JSON ({exc}); fix or remove it") from exc
    tokens = data.get("tokens", {})
    have = {v.get("project_name"): k for k, v in tokens.items()}
    changed = not data
    for name, roles in [(t, ["member"]) for t in TENANTS] + [("admin", ["admin"])]:
        if name not in have:
            token = secrets.token_hex(32)
            tokens[token] = {
                "project_id": uuid.uuid4().hex,
                "project_name": name,
                "user_id": uuid.uuid4().hex,
                "user_name": "admin" if name == "admin" else f"{name}-user",
                "roles": roles,
            }
            have[name] = token
            changed = True
    if changed:
        data = {
            "development_only": True,
            "comment": "Embedded identity for development and tests only; use Keystone in production.",
            "tokens": tokens,
        }
        write_private(path, json.dumps(data, indent=2) + "\n")
    os.chmod(path, 0o600)
    out = {}
    for name in TENANTS:
        token = have[name]
        out[name] = {"token": token, "project_id": tokens[token]["project_id"]}
        tdir = st.path("tenants", name)
        os.makedirs(tdir, mode=0o700, exist_ok=True)
        os.chmod(tdir, 0o700)
        write_private(
            os.path.join(tdir, "config.json"),
            json.dumps(
                {"HttpHeaders": {"X-Auth-Token": token, "X-Auth-Project-Id": out[name]["project_id"]}},
                indent=2,
            )
            + "\n",
        )
        with contextlib.suppress(FileNotFoundError):  # of an earlier --keystone stack
            os.unlink(os.path.join(tdir, "openrc"))
    return out


def keystone_up(st: Stack) -> dict:
    """scripts/keystone up DIR/keystone (its progress goes to our stderr); its admin's OS_* values."""
    argv = [sys.executable, KEYSTONE_SCRIPT, "up", st.path("keystone")]
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, timeout=KEYSTONE_UP_TIMEOUT
        )
    except subprocess.TimeoutExpired as exc:
        raise Fail(f"`{shlex.join(argv)}` did not finish within {KEYSTONE_UP_TIMEOUT} s") from exc
    if proc.returncode != 0:
        raise Fail(f"`{shlex.join(argv)}` failed (exit {proc.returncode}; its error is above)")
    admin = parse_exports(proc.stdout.decode())
    if not admin.get("OS_AUTH_URL") or not admin.get("OS_PASSWORD"):
        raise Fail(f"`{shlex.join(argv)}` printed no OS_AUTH_URL/OS_PASSWORD")
    return admin


def keystone_down(st: Stack) -> None:
    if not os.path.isdir(st.path("keystone")):
        return
    run_down([sys.executable, KEYSTONE_SCRIPT, "down", st.path("keystone")], timeout=60)


class Keystone:
    """Just enough of Keystone's v3 API for devstack (stdlib HTTP, timeouts on every call)."""

    def __init__(self, auth_url: str):
        self.auth_url = auth_url.rstrip("/")
        self.endpoint = self.auth_url[: -len("/v3")] if self.auth_url.endswith("/v3") else self.auth_url
        self.token = ""

    def call(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        subject: str | None = None,
        anonymous: bool = False,
    ) -> tuple[int, dict, dict]:
        netloc = urllib.parse.urlsplit(self.endpoint).netloc
        conn = http.client.HTTPConnection(netloc, timeout=15)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.token and not anonymous:
            headers["X-Auth-Token"] = self.token
        if subject:
            headers["X-Subject-Token"] = subject
        try:
            conn.request(
                method,
                "/v3" + path,
                body=json.dumps(body).encode() if body is not None else None,
                headers=headers,
            )
            resp = conn.getresponse()
            data = resp.read()
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
        except (OSError, http.client.HTTPException) as exc:
            raise Fail(f"Keystone at {self.auth_url} did not answer {method} /v3{path}: {exc}") from exc
        finally:
            conn.close()
        try:
            doc = json.loads(data) if data.strip() else {}
        except ValueError:
            doc = {}
        return resp.status, hdrs, doc

    def expect(self, statuses: tuple[int, ...], method: str, path: str, body: dict | None = None) -> dict:
        status, _, doc = self.call(method, path, body)
        if status not in statuses:
            raise Fail(
                f"Keystone answered {status} to {method} /v3{path}: "
                f"{(doc.get('error') or {}).get('message', doc)}"
            )
        return doc

    def password_token(self, user: str, password: str, project: str) -> tuple[int, str, dict]:
        body = password_auth(user, password, project)
        status, hdrs, doc = self.call("POST", "/auth/tokens?nocatalog", body, anonymous=True)
        return status, hdrs.get("x-subject-token", ""), doc.get("token", {})

    def find(self, kind: str, name: str) -> dict | None:
        query = urllib.parse.urlencode(
            {"name": name} if kind == "roles" else {"name": name, "domain_id": "default"}
        )
        items = self.expect((200,), "GET", f"/{kind}?{query}").get(kind, [])
        return items[0] if items else None

    def token_left(self, token: str) -> float | None:
        """Seconds the token still lives, or None if Keystone refuses it."""
        status, _, doc = self.call("GET", "/auth/tokens?nocatalog", subject=token)
        if status != 200:
            return None
        text = doc["token"]["expires_at"].replace("Z", "+00:00")
        return datetime.datetime.fromisoformat(text).timestamp() - time.time()


def ensure_keystone_identity(st: Stack) -> dict:
    """Keystone up; projects alpha and beta, a member user each, their openrc and tokens."""
    admin = keystone_up(st)
    ks = Keystone(admin["OS_AUTH_URL"])
    status, token, _ = ks.password_token(admin["OS_USERNAME"], admin["OS_PASSWORD"], admin["OS_PROJECT_NAME"])
    if status != 201 or not token:
        raise Fail(f"Keystone at {ks.auth_url} refused the admin's password ({status})")
    ks.token = token
    secrets_path = st.path("keystone", "tenants.json")
    try:
        with open(secrets_path) as fh:
            passwords = json.load(fh)
    except (OSError, ValueError):
        passwords = {}
    member = ks.find("roles", "member")
    if member is None:
        raise Fail(f"Keystone at {ks.auth_url} has no `member` role (bootstrap creates it)")
    out = {}
    for name in TENANTS:
        user_name = f"{name}-user"
        project = (
            ks.find("projects", name)
            or ks.expect(
                (201,),
                "POST",
                "/projects",
                {
                    "project": {
                        "name": name,
                        "domain_id": "default",
                        "description": f"Moorage devstack tenant {name}",
                    }
                },
            )["project"]
        )
        password = passwords.get(user_name) or secrets.token_urlsafe(18)
        if passwords.get(user_name) != password:
            passwords[user_name] = password
            write_private(secrets_path, json.dumps(passwords, indent=2) + "\n")
        user = ks.find("users", user_name)
        if user is None:
            user = ks.expect(
                (201,),
                "POST",
                "/users",
                {
                    "user": {
                        "name": user_name,
                        "domain_id": "default",
                        "password": password,
                        "default_project_id": project["id"],
                    }
                },
            )["user"]
        ks.expect((204,), "PUT", f"/projects/{project['id']}/users/{user['id']}/roles/{member['id']}")
        tdir = st.path("tenants", name)
        os.makedirs(tdir, mode=0o700, exist_ok=True)
        os.chmod(tdir, 0o700)
        openrc = [
            ("OS_AUTH_URL", ks.auth_url),
            ("OS_USERNAME", user_name),
            ("OS_PASSWORD", password),
            ("OS_PROJECT_NAME", name),
            ("OS_USER_DOMAIN_NAME", "Default"),
            ("OS_PROJECT_DOMAIN_NAME", "Default"),
            ("OS_IDENTITY_API_VERSION", "3"),
        ]
        write_private(
            os.path.join(tdir, "openrc"), "".join(f"export {k}={shlex.quote(v)}\n" for k, v in openrc)
        )
        # keep the token in the tenant's config dir while Keystone accepts it for another day
        config_path = os.path.join(tdir, "config.json")
        try:
            with open(config_path) as fh:
                held = json.load(fh).get("HttpHeaders", {})
        except (OSError, ValueError, AttributeError):
            held = {}
        token = held.get("X-Auth-Token", "")
        if not (
            token
            and held.get("X-Auth-Project-Id") == project["id"]
            and (ks.token_left(token) or 0) > KEYSTONE_TOKEN_MIN_LEFT
        ):
            status, token, _ = ks.password_token(user_name, password, name)
            if status == 401:  # the user outlived tenants.json: give it the password we hold
                ks.expect((200,), "PATCH", f"/users/{user['id']}", {"user": {"password": password}})
                status, token, _body = ks.password_token(user_name, password, name)
            if status != 201 or not token:
                raise Fail(f"Keystone at {ks.auth_url} did not issue a token for {user_name} ({status})")
            write_private(
                config_path,
                json.dumps(
                    {"HttpHeaders": {"X-Auth-Token": token, "X-Auth-Project-Id": project["id"]}}, indent=2
                )
                + "\n",
            )
        out[name] = {"token": token, "project_id": project["id"]}
    say(
        f"Keystone {ks.auth_url}: projects {', '.join(TENANTS)} with members "
        f"{', '.join(t + '-user' for t in TENANTS)}"
    )
    return out
