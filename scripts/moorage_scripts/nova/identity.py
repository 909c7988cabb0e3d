"""Nova's side of Keystone: the service users, the endpoints, the project and user `moorage`."""

from __future__ import annotations

import urllib.parse

from ..keystone.api import password_auth
from .api import http_call
from .common import MOORAGE_PROJECT, MOORAGE_USER, SERVICE_USERS, Fail
from .state import Nova


class Keystone:
    def __init__(self, auth_url: str):
        self.auth_url = auth_url.rstrip("/")
        self.token = ""

    def call(self, method: str, path: str, body=None, expect=(200,)) -> dict:
        headers = {"X-Auth-Token": self.token} if self.token else {}
        status, _, doc = http_call(method, self.auth_url + path, body, headers)
        if status not in expect:
            raise Fail(f"Keystone answered {status} to {method} {path}: {doc}")
        return doc

    def login(self, user: str, password: str, project: str) -> str:
        body = password_auth(user, password, project)
        status, headers, doc = http_call("POST", self.auth_url + "/auth/tokens?nocatalog", body)
        if status != 201:
            raise Fail(f"Keystone refused {user}'s password ({status}): {doc}")
        return headers["x-subject-token"]

    def find(self, kind: str, name: str, **extra: str) -> dict | None:
        query = urllib.parse.urlencode({"name": name, **extra})
        items = self.call("GET", f"/{kind}?{query}").get(kind, [])
        return items[0] if items else None

    def ensure(self, kind: str, name: str, body: dict) -> dict:
        one = kind[:-1]
        return (
            self.find(kind, name) or self.call("POST", f"/{kind}", {one: {"name": name, **body}}, (201,))[one]
        )

    def user(self, name: str, password: str, project: dict) -> dict:
        user = self.find("users", name)
        if user is None:
            return self.call(
                "POST",
                "/users",
                {
                    "user": {
                        "name": name,
                        "domain_id": "default",
                        "password": password,
                        "default_project_id": project["id"],
                    }
                },
                (201,),
            )["user"]
        self.call("PATCH", f"/users/{user['id']}", {"user": {"password": password}})
        return user

    def grant(self, project: dict, user: dict, role: dict) -> None:
        self.call("PUT", f"/projects/{project['id']}/users/{user['id']}/roles/{role['id']}", expect=(204,))

    def endpoint(self, service_type: str, name: str, url: str) -> None:
        service = next(
            (s for s in self.call("GET", "/services").get("services", []) if s["type"] == service_type), None
        )
        if service is None:
            service = self.call(
                "POST", "/services", {"service": {"type": service_type, "name": name}}, (201,)
            )["service"]
        existing = self.call("GET", f"/endpoints?service_id={service['id']}").get("endpoints", [])
        for iface in ("public", "internal", "admin"):
            mine = [e for e in existing if e["interface"] == iface]
            if mine and mine[0]["url"] == url:
                continue
            for e in mine:
                self.call("DELETE", f"/endpoints/{e['id']}", expect=(204,))
            self.call(
                "POST",
                "/endpoints",
                {
                    "endpoint": {
                        "service_id": service["id"],
                        "interface": iface,
                        "url": url,
                        "region_id": "RegionOne",
                    }
                },
                (201,),
            )


def setup_keystone(nv: Nova, admin: dict) -> None:
    ks = Keystone(admin["OS_AUTH_URL"])
    ks.token = ks.login(admin["OS_USERNAME"], admin["OS_PASSWORD"], admin["OS_PROJECT_NAME"])
    service = ks.ensure("projects", "service", {"domain_id": "default", "description": "OpenStack services"})
    admin_role = ks.find("roles", "admin")
    service_role = ks.ensure("roles", "service", {})
    member = ks.find("roles", "member")
    if admin_role is None or member is None:
        raise Fail("Keystone has no admin or member role (its bootstrap creates them)")
    pw = nv.state["service_password"]
    for name in SERVICE_USERS:
        user = ks.user(name, pw, service)
        ks.grant(service, user, admin_role)
        ks.grant(service, user, service_role)  # keystonemiddleware 13 requires it on service tokens
    project = ks.ensure(
        "projects",
        MOORAGE_PROJECT,
        {"domain_id": "default", "description": "Moorage: the instances of its pool"},
    )
    user = ks.user(MOORAGE_USER, nv.state["moorage_password"], project)
    ks.grant(project, user, member)
    nv.state["moorage_project_id"] = project["id"]
    ports = nv.state["ports"]
    ks.endpoint("compute", "nova", f"http://127.0.0.1:{ports['nova-api']}/v2.1")
    ks.endpoint("placement", "placement", f"http://127.0.0.1:{ports['placement']}")
    ks.endpoint("network", "neutron", f"http://127.0.0.1:{ports['neutron']}")


# --- configuration -----------------------------------------------------------------------------


def authtoken(nv: Nova, admin: dict, user: str, section: str = "keystone_authtoken") -> str:
    www = admin["OS_AUTH_URL"]
    return f"""
[{section}]
www_authenticate_uri = {www}
auth_url = {www}
auth_type = password
username = {user}
password = {nv.state["service_password"]}
project_name = service
user_domain_name = Default
project_domain_name = Default
region_name = RegionOne
memcached_servers =
"""
