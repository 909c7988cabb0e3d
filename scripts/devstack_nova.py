"""devstack --nova: a real Nova behind the gateway's nova provider, and devstack as its cloud-init.

Imported by scripts/devstack (which passes itself as `ds`: Stack, spawn, the host functions).
`up --nova` implies --keystone, starts Nova (scripts/nova up DIR/nova), configures the gateway with
`[placement] provider = "nova"` and starts no instance host. The watcher (`devstack nova-watch DIR`,
recorded as the process nova-watcher) polls Nova as admin: for each ACTIVE server carrying this
stack's pool mark it makes an instance host (network namespace, dockerd, busybox:latest) and runs
that server's user-data there (OS-EXT-SRV-ATTR:user_data, microversion >= 2.3), so the agent
bootstraps from what the gateway wrote; when the server goes away, it tears the host down.
Stdlib only.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse

NOVA_SCRIPT = os.path.join(os.path.dirname(os.path.realpath(__file__)), "nova")
NOVA_UP_TIMEOUT = 1800  # a first `up` installs apt packages and the virtualenv
WATCH_INTERVAL = 0.5
DEFAULT_GRACE = 60
DEFAULT_BOOT_TIMEOUT = 120
MICROVERSION = "2.90"


def pool_id(st) -> str:
    return f"devstack-{st.hash}"


def nova_up(ds, st) -> dict:
    """scripts/nova up DIR/nova; the gateway's [nova] credentials."""
    argv = [
        sys.executable,
        NOVA_SCRIPT,
        "up",
        st.path("nova"),
        "--keystone-openrc",
        st.path("keystone", "openrc"),
    ]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, timeout=NOVA_UP_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise ds.Fail(f"`{' '.join(argv)}` did not finish within {NOVA_UP_TIMEOUT} s") from exc
    if proc.returncode != 0:
        raise ds.Fail(f"`{' '.join(argv)}` failed (exit {proc.returncode}; its error is above)")
    return ds.parse_exports(proc.stdout.decode())


def nova_down(ds, st, purge: bool = False) -> None:
    """Stop Nova; with purge, also its databases (so its servers: hosts start afresh)."""
    if purge:
        st.state.pop("nova_index", None)
    if not os.path.isdir(st.path("nova")):
        return
    argv = [sys.executable, NOVA_SCRIPT, "down", st.path("nova")] + (["--purge"] if purge else [])
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=180)
    except subprocess.TimeoutExpired:
        ds.say(f"warning: `{' '.join(argv)}` did not finish within 180 s")
        return
    if proc.returncode != 0:
        ds.say(f"warning: `{' '.join(argv)}` failed: {proc.stderr.decode('utf-8', 'replace').strip()[-300:]}")


def novarc(st) -> dict:
    from_file = {}
    with contextlib.suppress(OSError), open(st.path("nova", "novarc")) as fh:
        for line in fh:
            words = line.split(None, 1)
            if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                key, _, value = words[1].strip().partition("=")
                from_file[key] = value.strip("'")
    return from_file


def gateway_config(ds, st) -> list[str]:
    """The [placement] and [nova] lines of the gateway's moorage.toml."""
    q = json.dumps
    rc = novarc(st)
    capacity = st.state.get("capacity")
    gateway_url = f"http://{st.gw_ip}:{st.state['port']}"
    lines = ["", "[placement]"]
    if capacity is not None:
        lines.append(f"capacity = {int(capacity)}")
    lines += [
        'provider = "nova"',
        f"pool_id = {q(pool_id(st))}",
        "reap_interval = 1",
        "",
        "[nova]",
        f"auth_url = {q(rc['MOORAGE_NOVA_AUTH_URL'])}",
        f"username = {q(rc['MOORAGE_NOVA_USERNAME'])}",
        f"password = {q(rc['MOORAGE_NOVA_PASSWORD'])}",
        f"project_name = {q(rc['MOORAGE_NOVA_PROJECT_NAME'])}",
        'user_domain_name = "Default"',
        'project_domain_name = "Default"',
        f"flavor = {q(rc['MOORAGE_NOVA_FLAVOR'])}",
        'image = ""  # a blank local disk: no Glance',
        'network = "none"',
        f"gateway_url = {q(gateway_url)}",
        f"boot_timeout = {int(st.state.get('nova_boot_timeout') or DEFAULT_BOOT_TIMEOUT)}",
        f"empty_grace_seconds = {float(st.state.get('nova_grace', DEFAULT_GRACE)):g}",
        f"agent_command = {q(ds.moorage_argv()[0])}",
        'agent_install = "echo moorage is missing >&2; exit 1"',
    ]
    return lines


def start_watcher(ds, st) -> None:
    if st.alive("nova-watcher"):
        return
    ds.say("starting the Nova watcher (devstack's cloud-init for the servers the gateway boots)")
    st.spawn(
        "nova-watcher",
        [sys.executable, os.path.join(ds.REPO, "scripts", "devstack"), "nova-watch", st.dir],
        st.path("nova-watcher.log"),
        env=ds.moorage_env(),
    )


def hosts(st) -> list[tuple[int, str]]:
    """(index, server UUID) of the current hosts, in index order."""
    return sorted((i, sid) for sid, i in st.state.get("nova_hosts", {}).items())


# --- the watcher -----------------------------------------------------------------------------


class NovaAdmin:
    def __init__(self, ds, st):
        self.ds = ds
        with open(st.path("keystone", "openrc")) as fh:
            self.admin = ds.parse_exports(fh.read())
        self.keystone = ds.Keystone(self.admin["OS_AUTH_URL"])
        self.url = novarc(st)["MOORAGE_NOVA_URL"]
        self.token_at = 0.0

    def token(self) -> str:
        if time.monotonic() - self.token_at > 1800 or not self.keystone.token:
            status, token, _ = self.keystone.password_token(
                self.admin["OS_USERNAME"], self.admin["OS_PASSWORD"], self.admin["OS_PROJECT_NAME"]
            )
            if status != 201:
                raise self.ds.Fail(f"Keystone refused the admin's password ({status})")
            self.keystone.token = token
            self.token_at = time.monotonic()
        return self.keystone.token

    def servers(self, pool: str) -> list[dict]:
        query = urllib.parse.urlencode({"all_tenants": "1"})
        prefix = urllib.parse.urlsplit(self.url).path.rstrip("/")
        status, body = self.ds.http_request(
            self.url,
            "GET",
            f"{prefix}/servers/detail?{query}",
            headers={"X-Auth-Token": self.token(), "X-OpenStack-Nova-API-Version": MICROVERSION},
            timeout=15,
        )
        if status == 401:
            self.token_at = 0.0
        if status != 200:
            raise self.ds.Fail(f"nova-api answered {status} to GET /servers/detail")
        doc = json.loads(body)
        return [s for s in doc.get("servers", []) if (s.get("metadata") or {}).get("moorage:pool") == pool]


_busy = []  # set while the watcher changes a host: SIGTERM then waits for the change to finish
_stopping = []


def _on_term(*_) -> None:
    _stopping.append(1)
    if not _busy:
        raise SystemExit(0)


def _locked(ds, st):
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


def add_host(ds, st, server: dict) -> None:
    sid = server["id"]
    t0 = time.monotonic()
    _locked(ds, st)
    try:
        if sid in st.state.setdefault("nova_hosts", {}):
            return
        # A server keeps its host index (and so its host's files) across `down` and `up`.
        index = st.state.setdefault("nova_index", {})
        i = index.get(sid)
        if i is None:
            i = next(n for n in range(1, ds.MAX_HOSTS + 1) if n not in index.values())
            shutil.rmtree(st.host_dir(i), ignore_errors=True)  # of an earlier server: a new host
        index[sid] = i
        st.state["nova_hosts"][sid] = i
        st.save()
        try:
            ds.setup_host_net(st, i)
            ds.start_dockerd(st, i)
            ds.wait_dockerd(st, i)
            ds.seed_busybox(st.endpoint(i), st.path("busybox.tar"), verify=True)
            if not st.state.get("busybox_public"):
                # Public before any agent registers: the create waiting for this host runs busybox.
                status, body = ds.http_request(
                    st.endpoint(i), "GET", "/images/busybox:latest/json", timeout=10
                )
                if status != 200:
                    raise ds.Fail(f"host {i}: busybox:latest is missing after seeding ({status})")
                ds.publish_busybox(st, json.loads(body)["Id"])
                st.state["busybox_public"] = True
        except BaseException:
            del st.state["nova_hosts"][sid]  # not made: the next pass tries again
            raise
        finally:
            st.save()
        user_data = base64.b64decode(server.get("OS-EXT-SRV-ATTR:user_data") or "").decode()
        if not user_data:
            ds.say(f"server {sid} has no user-data: its host has no agent")
            return
        script = os.path.join(st.host_dir(i), "user-data")
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w") as fh:
            fh.write(user_data)
        env = ds.moorage_env()
        env.update(
            DOCKER_HOST=st.endpoint(i),
            MOORAGE_AGENT_STATE=os.path.join(st.host_dir(i), "agent"),
            MOORAGE_AGENT_FOREGROUND="1",
            MOORAGE_AGENT_COMMAND=ds.moorage_argv()[0],
        )
        st.spawn(
            f"agent-{i}",
            ["nsenter", f"--net={st.netns_path(i)}", "/bin/sh", script],
            os.path.join(st.host_dir(i), "agent.log"),
            env=env,
        )
        ds.write_env(st)
        ds.say(
            f"host {i} up for server {sid} in {time.monotonic() - t0:.1f} s (its user-data runs the agent)"
        )
    finally:
        _unlock(st)


def remove_host(ds, st, sid: str) -> None:
    _locked(ds, st)
    try:
        i = st.state.setdefault("nova_hosts", {}).get(sid)
        if i is None:
            return
        st.stop(f"agent-{i}", f"agent of host {i}")
        st.stop(f"dockerd-{i}", f"dockerd of host {i}", ds.DOCKERD_STOP_TIMEOUT, group=False)
        if ds.link_exists(st.veth(i)):
            ds.run(["ip", "link", "del", st.veth(i)], check=False, timeout=10)
        if os.path.exists(st.netns_path(i)):
            ds.run(["ip", "netns", "del", st.netns(i)], check=False, timeout=10)
        shutil.rmtree(st.host_dir(i), ignore_errors=True)
        shutil.rmtree(st.host_run(i), ignore_errors=True)
        del st.state["nova_hosts"][sid]
        st.state.setdefault("nova_index", {}).pop(sid, None)
        st.save()
        ds.write_env(st)
        ds.say(f"host {i} removed: server {sid} is gone")
    finally:
        _unlock(st)


def watch(ds, directory: str) -> int:
    st = ds.Stack(directory)
    if not st.load():
        raise ds.Fail(f"no stack at {st.dir}")
    stopping = _stopping
    signal.signal(signal.SIGTERM, _on_term)
    admin = NovaAdmin(ds, st)
    pool = pool_id(st)
    ds.say(f"watching Nova for servers of pool {pool}")
    while not stopping:
        try:
            servers = admin.servers(pool)
            present = {s["id"]: s for s in servers if s.get("status") not in ("DELETED", "SOFT_DELETED")}
            st.load()
            known = dict(st.state.get("nova_hosts", {}))
            for sid, server in present.items():
                if sid not in known and server.get("status") == "ACTIVE" and not stopping:
                    add_host(ds, st, server)
            for sid in known:
                if sid not in present and not stopping:
                    remove_host(ds, st, sid)
        except (ds.Fail, OSError, ValueError, KeyError) as exc:
            ds.say(f"watcher: {exc}")
            time.sleep(2)
        time.sleep(WATCH_INTERVAL)
    return 0
