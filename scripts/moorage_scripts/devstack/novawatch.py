"""--nova: devstack as Nova's cloud-init.

The watcher (`devstack nova-watch DIR`, recorded as the process nova-watcher) polls Nova as admin:
for each ACTIVE server carrying this stack's pool mark it makes an instance host (network
namespace, dockerd, busybox:latest) and runs that server's user-data there
(OS-EXT-SRV-ATTR:user_data, microversion >= 2.3), so the agent bootstraps from what the gateway
wrote; when the server goes away, it tears the host down.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import sys
import time
import urllib.parse

from .. import REPO
from .common import MAX_HOSTS, Fail, parse_exports, say
from .daemons import moorage_argv, moorage_env
from .endpoints import http_request
from .envfile import write_env
from .gateways import publish_busybox
from .identity import Keystone
from .localhosts import make_host, unmake_host
from .novaconf import novarc, pool_id
from .state import Stack

WATCH_INTERVAL = 0.5
MICROVERSION = "2.90"


def start_watcher(st) -> None:
    if st.alive("nova-watcher"):
        return
    say("starting the Nova watcher (devstack's cloud-init for the servers the gateway boots)")
    st.spawn(
        "nova-watcher",
        [sys.executable, os.path.join(REPO, "scripts", "devstack"), "nova-watch", st.dir],
        st.path("nova-watcher.log"),
        env=moorage_env(),
    )


class NovaAdmin:
    def __init__(self, st):
        with open(st.path("keystone", "openrc")) as fh:
            self.admin = parse_exports(fh.read())
        self.keystone = Keystone(self.admin["OS_AUTH_URL"])
        self.url = novarc(st)["MOORAGE_NOVA_URL"]
        self.token_at = 0.0

    def token(self) -> str:
        if time.monotonic() - self.token_at > 1800 or not self.keystone.token:
            status, token, _ = self.keystone.password_token(
                self.admin["OS_USERNAME"], self.admin["OS_PASSWORD"], self.admin["OS_PROJECT_NAME"]
            )
            if status != 201:
                raise Fail(f"Keystone refused the admin's password ({status})")
            self.keystone.token = token
            self.token_at = time.monotonic()
        return self.keystone.token

    def servers(self, pool: str) -> list[dict]:
        query = urllib.parse.urlencode({"all_tenants": "1"})
        prefix = urllib.parse.urlsplit(self.url).path.rstrip("/")
        status, body = http_request(
            self.url,
            "GET",
            f"{prefix}/servers/detail?{query}",
            headers={"X-Auth-Token": self.token(), "X-OpenStack-Nova-API-Version": MICROVERSION},
            timeout=15,
        )
        if status == 401:
            self.token_at = 0.0
        if status != 200:
            raise Fail(f"nova-api answered {status} to GET /servers/detail")
        doc = json.loads(body)
        return [s for s in doc.get("servers", []) if (s.get("metadata") or {}).get("moorage:pool") == pool]


_busy = []  # set while the watcher changes a host: SIGTERM then waits for the change to finish
_stopping = []


def _on_term(*_) -> None:
    _stopping.append(1)
    if not _busy:
        raise SystemExit(0)


def _locked(st):
    """Take the stack's lock with its state fresh; the caller releases it with _unlock."""
    st.lock()
    _busy.append(1)
    st.load()


def _unlock(st) -> None:
    _busy.clear()
    if st._lock_fh is not None:
        st._lock_fh.close()
        st._lock_fh = None
    if _stopping:
        raise SystemExit(0)


def add_host(st, server: dict) -> None:
    sid = server["id"]
    t0 = time.monotonic()
    _locked(st)
    try:
        if sid in st.state.setdefault("nova_hosts", {}):
            return
        # A server keeps its host index (and so its host's files) across `down` and `up`.
        index = st.state.setdefault("nova_index", {})
        i = index.get(sid)
        if i is None:
            i = next(n for n in range(1, MAX_HOSTS + 1) if n not in index.values())
            shutil.rmtree(st.host_dir(i), ignore_errors=True)  # of an earlier server: a new host
        index[sid] = i
        st.state["nova_hosts"][sid] = i
        st.save()
        try:
            make_host(st, i)
            if not st.state.get("busybox_public"):
                # Public before any agent registers: the create waiting for this host runs busybox.
                status, body = http_request(st.endpoint(i), "GET", "/images/busybox:latest/json", timeout=10)
                if status != 200:
                    raise Fail(f"host {i}: busybox:latest is missing after seeding ({status})")
                publish_busybox(st, json.loads(body)["Id"])
                st.state["busybox_public"] = True
        except BaseException:
            del st.state["nova_hosts"][sid]  # not made: the next pass tries again
            raise
        finally:
            st.save()
        user_data = base64.b64decode(server.get("OS-EXT-SRV-ATTR:user_data") or "").decode()
        if not user_data:
            say(f"server {sid} has no user-data: its host has no agent")
            return
        script = os.path.join(st.host_dir(i), "user-data")
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w") as fh:
            fh.write(user_data)
        env = moorage_env()
        env.update(
            DOCKER_HOST=st.endpoint(i),
            MOORAGE_AGENT_STATE=os.path.join(st.host_dir(i), "agent"),
            MOORAGE_AGENT_FOREGROUND="1",
            MOORAGE_AGENT_COMMAND=moorage_argv()[0],
        )
        st.spawn(
            f"agent-{i}",
            ["nsenter", f"--net={st.netns_path(i)}", "/bin/sh", script],
            os.path.join(st.host_dir(i), "agent.log"),
            env=env,
        )
        write_env(st)
        say(f"host {i} up for server {sid} in {time.monotonic() - t0:.1f} s (its user-data runs the agent)")
    finally:
        _unlock(st)


def remove_host(st, sid: str) -> None:
    _locked(st)
    try:
        i = st.state.setdefault("nova_hosts", {}).get(sid)
        if i is None:
            return
        unmake_host(st, i)
        del st.state["nova_hosts"][sid]
        st.state.setdefault("nova_index", {}).pop(sid, None)
        st.save()
        write_env(st)
        say(f"host {i} removed: server {sid} is gone")
    finally:
        _unlock(st)


def watch(directory: str) -> int:
    st = Stack(directory)
    if not st.load():
        raise Fail(f"no stack at {st.dir}")
    stopping = _stopping
    signal.signal(signal.SIGTERM, _on_term)
    admin = NovaAdmin(st)
    pool = pool_id(st)
    say(f"watching Nova for servers of pool {pool}")
    while not stopping:
        try:
            servers = admin.servers(pool)
            present = {s["id"]: s for s in servers if s.get("status") not in ("DELETED", "SOFT_DELETED")}
            st.load()
            known = dict(st.state.get("nova_hosts", {}))
            for sid, server in present.items():
                if sid not in known and server.get("status") == "ACTIVE" and not stopping:
                    add_host(st, server)
            for sid in known:
                if sid not in present and not stopping:
                    remove_host(st, sid)
        except (Fail, OSError, ValueError, KeyError) as exc:
            say(f"watcher: {exc}")
            time.sleep(2)
        time.sleep(WATCH_INTERVAL)
    return 0
