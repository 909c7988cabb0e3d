"""The per-host subcommands (`hosts`, `stop-host`, `start-host`) and `seed`, `busybox-tar`."""

from __future__ import annotations

import os

from .agents import start_agent
from .busybox import build_busybox_tar, seed_busybox
from .common import RUN_BASE, STOP_TIMEOUT, Fail, Usage, require_root, say
from .daemons import start_dockerd, wait_dockerd
from .endpoints import answers
from .envfile import current_hosts
from .network import setup_host_net
from .state import Stack


def stop_host(st: Stack, i: int) -> None:
    st.stop(f"agent-{i}", f"agent of host {i}", STOP_TIMEOUT, group=True)
    if not (i == 1 and st.external):
        st.stop(f"dockerd-{i}", f"dockerd of host {i}", STOP_TIMEOUT, group=False)


def host_index(st: Stack, arg: str) -> int:
    try:
        i = int(arg)
    except ValueError:
        raise Usage(f"host index must be a number, not {arg!r}") from None
    if not 1 <= i <= st.nhosts:
        raise Usage(f"host index {i} is out of range: the stack at {st.dir} has {st.nhosts} host(s)")
    return i


def open_stack(directory: str) -> Stack:
    require_root()
    st = Stack(directory)
    if not os.path.exists(st.state_path):
        raise Fail(f"no stack at {st.dir} (no state.json); run `scripts/devstack up {st.dir}`")
    st.lock()
    st.load()
    return st


def cmd_stop_host(args) -> int:
    st = open_stack(args.dir)
    i = host_index(st, args.index)
    was = st.alive(f"agent-{i}") or st.alive(f"dockerd-{i}")
    stop_host(st, i)
    say(f"host {i} stopped" if was else f"host {i} was already stopped")
    return 0


def cmd_start_host(args) -> int:
    st = open_stack(args.dir)
    i = host_index(st, args.index)
    if not st.state.get("up"):
        raise Fail(f"the stack at {st.dir} is not up; run `scripts/devstack up {st.dir}`")
    if not (i == 1 and st.external):
        setup_host_net(st, i)
        if start_dockerd(st, i):
            say(f"starting dockerd of host {i}")
        wait_dockerd(st, i)
        seed_busybox(st.endpoint(i), st.path("busybox.tar"), verify=False)
    if not st.state.get("no_gateway"):
        start_agent(st, i)
    say(f"host {i} is up")
    return 0


def cmd_hosts(args) -> int:
    st = Stack(args.dir)
    if not st.load():
        raise Fail(f"no stack at {st.dir} (no state.json)")
    if not st.state.get("up"):
        return 0
    for uid, endpoint in current_hosts(st):
        print(f"{uid} {endpoint}")
    return 0


def cmd_seed(args) -> int:
    tarball = args.tar
    if not tarball:
        os.makedirs(RUN_BASE, exist_ok=True)
        tarball = os.path.join(RUN_BASE, "busybox.tar")
        if not os.path.exists(tarball):
            build_busybox_tar(tarball)
    if not answers(args.endpoint, timeout=5):
        raise Fail(f"{args.endpoint} does not answer GET /_ping")
    imported = seed_busybox(args.endpoint, tarball, verify=True)
    say(f"busybox:latest {'imported into' if imported else 'already on'} {args.endpoint}")
    return 0


def cmd_busybox_tar(args) -> int:
    build_busybox_tar(os.path.abspath(args.file))
    return 0
