"""The nova lane: a `scripts/devstack up DIR --nova --capacity 2 --nova-grace 5 --notifications`
stack for the session.

Select it with `pytest -m nova` (every test here carries the mark). Needs root (devstack makes
network namespaces and runs dockerd, MariaDB and RabbitMQ) and, once per machine, apt and PyPI
(scripts/nova installs mariadb-server, rabbitmq-server and a pinned Nova virtualenv, cached under
~/.cache/moorage). The stack starts with no instance host: the gateway's nova provider boots them.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import sys

import pytest

from tests.lanes import DEVSTACK, DOCKER, REPO, devstack, read_exports, require_stack_tools, run

CAPACITY = 2
GRACE = 5  # seconds an empty instance lives


def pytest_configure(config):
    config.addinivalue_line("markers", "nova: needs a real Nova (scripts/devstack up DIR --nova)")


class Stack:
    def __init__(self, directory: str, env: dict):
        self.dir = directory
        self.env = env
        self.nova_rc = read_exports(env["MOORAGE_NOVA_RC"])
        self.admin_rc = read_exports(env["MOORAGE_KEYSTONE_OPENRC"])
        self.pool = env["MOORAGE_NOVA_POOL"]
        self._admin = None
        self._service = None
        self._tenants: dict = {}

    def docker(self, *args: str, tenant: str = "alpha", timeout: int = 120) -> subprocess.CompletedProcess:
        """The docker CLI as a tenant, always under `timeout -s KILL`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "OS_"))}
        env.update(DOCKER_HOST=self.env["DOCKER_HOST"], DOCKER_CONFIG=self.env[f"MOORAGE_CONFIG_{tenant}"])
        return subprocess.run(
            ["timeout", "-s", "KILL", str(timeout), DOCKER, *args],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
        )

    def hosts(self) -> list[tuple[str, str]]:
        proc = run([sys.executable, DEVSTACK, "hosts", self.dir], timeout=30)
        assert proc.returncode == 0, proc.stderr
        return [tuple(line.split()) for line in proc.stdout.splitlines() if line.strip()]

    def admin_cli(self, *args: str) -> subprocess.CompletedProcess:
        return run(shlex.split(self.env["MOORAGE_ADMIN"]) + list(args), timeout=30)

    def instances(self) -> list[dict]:
        proc = self.admin_cli("instances", "list", "--format", "json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def _client(self, rc_user: str, password: str, project: str):
        from keystoneauth1 import session
        from keystoneauth1.identity import v3
        from novaclient import client

        auth = v3.Password(
            auth_url=self.nova_rc["MOORAGE_NOVA_AUTH_URL"],
            username=rc_user,
            password=password,
            project_name=project,
            user_domain_name="Default",
            project_domain_name="Default",
        )
        return client.Client("2.90", session=session.Session(auth=auth, timeout=30))

    def tenant(self, name: str):
        """novaclient as the tenant's own user (its openrc), in its own project."""
        if name not in self._tenants:
            rc = read_exports(self.env[f"MOORAGE_OPENRC_{name}"])
            self._tenants[name] = self._client(rc["OS_USERNAME"], rc["OS_PASSWORD"], rc["OS_PROJECT_NAME"])
        return self._tenants[name]

    def ids(self, name: str) -> tuple[str, str]:
        """(project ID, user ID) of the tenant."""
        sess = self.tenant(name).client.session
        return sess.get_project_id(), sess.get_user_id()

    def trusts(self, name: str) -> list[dict]:
        """The Keystone trusts the tenant's user is trustor of, as that user lists them."""
        sess = self.tenant(name).client.session
        _, user_id = self.ids(name)
        url = (
            self.nova_rc["MOORAGE_NOVA_AUTH_URL"].rstrip("/") + f"/OS-TRUST/trusts?trustor_user_id={user_id}"
        )
        listed = sess.get(url).json()["trusts"]
        return [sess.get(f"{url.split('?')[0]}/{t['id']}").json()["trust"] for t in listed]

    @property
    def nova_admin(self):
        if self._admin is None:
            self._admin = self._client(
                self.admin_rc["OS_USERNAME"], self.admin_rc["OS_PASSWORD"], self.admin_rc["OS_PROJECT_NAME"]
            )
        return self._admin

    @property
    def nova_service(self):
        """novaclient as the gateway's own service user, in its project."""
        if self._service is None:
            rc = self.nova_rc
            self._service = self._client(
                rc["MOORAGE_NOVA_USERNAME"], rc["MOORAGE_NOVA_PASSWORD"], rc["MOORAGE_NOVA_PROJECT_NAME"]
            )
        return self._service

    def pool_servers(self, since: str | None = None) -> list:
        """The servers carrying this stack's pool mark (with `since`, deleted ones too)."""
        opts = {"all_tenants": 1}
        if since:
            opts["changes-since"] = since
        return [
            s
            for s in self.nova_admin.servers.list(search_opts=opts)
            if (s.metadata or {}).get("moorage:pool") == self.pool
        ]

    def trust_ids(self) -> dict:
        return {t: [x["id"] for x in self.trusts(t)] for t in ("alpha", "beta")}

    def boots_since(self, since: str) -> list:
        """Every server the pool booted since `since` (an ISO time), deleted ones included: a
        deleted server loses its metadata, so these are the `moorage-*` servers of the service
        project and of the tenants' projects (dedicated tenancy boots there)."""
        projects = {self.nova_rc["MOORAGE_NOVA_PROJECT_ID"], self.ids("alpha")[0], self.ids("beta")[0]}
        return [
            s
            for s in self.nova_admin.servers.list(search_opts={"all_tenants": 1, "changes-since": since})
            if s.tenant_id in projects and s.name.startswith("moorage-") and s.created >= since
        ]

    def user_data(self, server_id: str) -> str:
        server = self.nova_admin.servers.get(server_id)
        return base64.b64decode(getattr(server, "OS-EXT-SRV-ATTR:user_data") or "").decode()


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    require_stack_tools("nova")
    directory = str(tmp_path_factory.mktemp("nova-stack"))
    flags = [
        "--nova",
        "--capacity",
        str(CAPACITY),
        "--nova-grace",
        str(GRACE),
        "--notifications",  # tests/nova/test_pool_notifications.py listens on its RabbitMQ
    ]
    try:
        with devstack(directory, flags, lane="nova", up_timeout=1800, down_timeout=600) as env:
            yield Stack(directory, env)
    finally:
        run(
            [
                sys.executable,
                os.path.join(REPO, "scripts", "nova"),
                "down",
                os.path.join(directory, "nova"),
                "--purge",
            ],
            timeout=300,
        )
