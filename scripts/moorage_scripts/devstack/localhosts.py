"""Hosts booted on demand: the commands the gateway's local provider runs
(gateway/placement/local.py, `[local] boot_command` and the rest in DIR/moorage.toml).

    devstack boot-host DIR      the bootstrap secret on stdin, $MOORAGE_POOL_MEMBER set; makes a
                                host (network namespace, dockerd, busybox:latest, an agent that
                                registers with that secret) and prints its UUID last
    devstack delete-host DIR UUID
    devstack list-hosts DIR     JSON: [{"id", "member", "created"}]

Booted hosts take indices from BOOT_FIRST up, apart from the `--hosts N` hosts (1..N), so
that growing either never reuses the other's index, address or files.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import sys
import time
import uuid

from .busybox import seed_busybox
from .common import AGENT_PORT, DOCKERD_STOP_TIMEOUT, MAX_HOSTS, Fail, run, say
from .daemons import moorage_argv, moorage_env, start_dockerd, wait_dockerd
from .envfile import write_env
from .hosts import open_stack
from .network import link_exists, setup_host_net
from .state import Stack

BOOT_FIRST = 101


def make_host(st: Stack, i: int) -> None:
    """Host i's namespace, dockerd and busybox:latest (no agent)."""
    setup_host_net(st, i)
    start_dockerd(st, i)
    wait_dockerd(st, i)
    seed_busybox(st.endpoint(i), st.path("busybox.tar"), verify=True)


def unmake_host(st: Stack, i: int) -> None:
    """Stop host i's agent and dockerd, and remove its namespace, link and files."""
    st.stop(f"agent-{i}", f"agent of host {i}")
    st.stop(f"dockerd-{i}", f"dockerd of host {i}", DOCKERD_STOP_TIMEOUT, group=False)
    if link_exists(st.veth(i)):
        run(["ip", "link", "del", st.veth(i)], check=False, timeout=10)
    if os.path.exists(st.netns_path(i)):
        run(["ip", "netns", "del", st.netns(i)], check=False, timeout=10)
    shutil.rmtree(st.host_dir(i), ignore_errors=True)
    shutil.rmtree(st.host_run(i), ignore_errors=True)


def booted(st: Stack) -> dict[str, dict]:
    """UUID -> {"index", "member", "created"} of the hosts booted on demand."""
    return st.state.setdefault("local_hosts", {})


def cmd_boot_host(args) -> int:
    secret = sys.stdin.readline().strip()
    if not secret:
        raise Fail("boot-host reads the agent's bootstrap secret on stdin")
    member = os.environ.get("MOORAGE_POOL_MEMBER", "")
    st = open_stack(args.dir)
    if not st.state.get("up"):
        raise Fail(f"the stack at {st.dir} is not up")
    t0 = time.monotonic()
    used = {h["index"] for h in booted(st).values()}
    free = [i for i in range(BOOT_FIRST, MAX_HOSTS + 1) if i not in used]
    if not free:
        raise Fail(f"every host index from {BOOT_FIRST} to {MAX_HOSTS} is in use")
    i = free[0]
    host_id = str(uuid.uuid4())
    shutil.rmtree(st.host_dir(i), ignore_errors=True)  # of an earlier host: a new one
    created = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    booted(st)[host_id] = {"index": i, "member": member, "created": created}
    st.save()
    try:
        make_host(st, i)
        state = os.path.join(st.host_dir(i), "agent")
        os.makedirs(state, exist_ok=True)
        secret_file = os.path.join(state, "bootstrap-secret")
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret + "\n")
        argv = [
            "nsenter",
            f"--net={st.netns_path(i)}",
            *moorage_argv(),
            "agent",
            "--gateway",
            f"http://{st.gw_ip}:{st.state['port']}",
            "--bootstrap-secret-file",
            secret_file,
            "--docker",
            st.endpoint(i),
            "--listen",
            f"{st.host_ip(i)}:{AGENT_PORT}",
            "--provider",
            "local",
            "--state-dir",
            state,
        ]
        if st.state.get("capacity") is not None:
            argv += ["--capacity", str(int(st.state["capacity"]))]
        st.spawn(f"agent-{i}", argv, os.path.join(st.host_dir(i), "agent.log"), env=moorage_env())
    except BaseException:
        unmake_host(st, i)
        booted(st).pop(host_id, None)
        st.save()
        raise
    write_env(st)
    say(f"host {i} booted as {host_id} for pool member {member} in {time.monotonic() - t0:.1f} s")
    print(host_id)
    return 0


def cmd_delete_host(args) -> int:
    st = open_stack(args.dir)
    host = booted(st).get(args.uuid)
    if host is None:
        say(f"no booted host {args.uuid}: nothing to delete")
        return 0
    unmake_host(st, host["index"])
    booted(st).pop(args.uuid, None)
    st.save()
    write_env(st)
    say(f"host {host['index']} ({args.uuid}) deleted")
    return 0


def cmd_list_hosts(args) -> int:
    st = Stack(args.dir)
    st.load()
    rows = [
        {"id": sid, "member": h.get("member"), "created": h.get("created")} for sid, h in booted(st).items()
    ]
    print(json.dumps(rows))
    return 0
