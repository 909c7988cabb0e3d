"""One agent per instance host, inside the host's namespace, registered with the first gateway replica."""

from __future__ import annotations

import json
import os
import subprocess

from .common import AGENT_PORT, AGENT_START_TIMEOUT, Fail, say
from .daemons import moorage_argv, moorage_env
from .endpoints import tcp_open
from .state import Stack


def agent_argv(st: Stack, i: int) -> list[str]:
    # Agents register with replica 1 (st.state["port"]); the replicas share the database.
    if i == 1 and st.external:
        gateway = f"http://127.0.0.1:{st.state['port']}"
        listen = f"127.0.0.1:{st.state['agent_port']}"
        prefix: list[str] = []
    else:
        gateway = f"http://{st.gw_ip}:{st.state['port']}"
        listen = f"{st.host_ip(i)}:{AGENT_PORT}"
        prefix = ["nsenter", f"--net={st.netns_path(i)}"]
    argv = (
        prefix
        + moorage_argv()
        + [
            "agent",
            "--gateway",
            gateway,
            "--registration-secret",
            st.state["secret"],
            "--docker",
            st.endpoint(i),
            "--listen",
            listen,
            "--uuid",
            st.host_uuid(i),
        ]
    )
    if st.state.get("capacity") is not None:
        argv += ["--capacity", str(int(st.state["capacity"]))]
    return [*argv, "--state-dir", os.path.join(st.host_dir(i), "agent")]


def agent_listen(st: Stack, i: int) -> tuple[str, int]:
    if i == 1 and st.external:
        return "127.0.0.1", st.state["agent_port"]
    return st.host_ip(i), AGENT_PORT


def instance_states(st: Stack) -> dict[str, str]:
    argv = [*moorage_argv(), "--config", st.path("moorage.toml"), "instances", "list", "--format", "json"]
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=15, env=moorage_env()
        )
    except (subprocess.TimeoutExpired, OSError):
        return {}
    if proc.returncode != 0:
        st.last_admin_error = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
        return {}
    try:
        rows = json.loads(proc.stdout)
    except ValueError:
        st.last_admin_error = f"not JSON: {proc.stdout[:200]!r}"
        return {}
    return {str(r.get("uuid")): str(r.get("state")) for r in rows if isinstance(r, dict)}


def start_agent(st: Stack, i: int) -> None:
    name = f"agent-{i}"
    host, port = agent_listen(st, i)
    if st.alive(name):
        return
    log = os.path.join(st.host_dir(i), "agent.log")
    os.makedirs(os.path.join(st.host_dir(i), "agent"), exist_ok=True)
    say(f"starting the agent of host {i} ({st.host_uuid(i)}) on {host}:{port}")
    st.spawn(name, agent_argv(st, i), log, env=moorage_env(), redact=("--registration-secret",))
    st.last_admin_error = ""
    uid = st.host_uuid(i)

    def registered() -> bool:
        return tcp_open(host, port, timeout=1) and instance_states(st).get(uid) == "up"

    try:
        st.wait_for(
            name,
            f'agent of host {i} (listening on {host}:{port}, state "up" in `moorage instances list`)',
            registered,
            AGENT_START_TIMEOUT,
        )
    except Fail as exc:
        extra = f"; `instances list` said: {st.last_admin_error[-200:]}" if st.last_admin_error else ""
        raise Fail(f"{exc}{extra}") from None


def forget_removed_hosts(st: Stack) -> None:
    """After `up --hosts N` on a DIR that once had more hosts, drop the extra instances from the
    gateway's map (their rows outlive a `down` in DIR/moorage.db). Best effort."""
    for i in range(st.nhosts + 1, int(st.state.get("known_hosts", 0)) + 1):
        argv = [*moorage_argv(), "--config", st.path("moorage.toml"), "instances", "remove", st.host_uuid(i)]
        try:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=15, env=moorage_env()
            )
        except (subprocess.TimeoutExpired, OSError):
            continue
        out = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
        if proc.returncode != 0 and "no such instance" not in out:
            say(f"warning: could not remove host {i} ({st.host_uuid(i)}) from the map: {out[-200:]}")
    st.state["known_hosts"] = st.nhosts
