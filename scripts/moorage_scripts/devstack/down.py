"""`devstack down`: stop what `up` recorded, then sweep what outlived it, unmount, tear the network down."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import time

from . import novaconf
from .broker import forget_epmd, stop_broker
from .common import DAEMON_COMMS, DOCKERD_STOP_TIMEOUT, STOP_TIMEOUT, require_root, run, say
from .identity import keystone_down
from .network import link_exists, teardown_network
from .pg import pg_data, pg_home, pg_home_owner, stop_postgres
from .procs import all_pids, proc_cmdline, proc_comm, proc_stat, rec_alive, signal_pid, wait_gone
from .state import Stack, run_dir_owner


def scan_leftovers(st: Stack, skip: set[int]) -> dict[str, list[int]]:
    """Processes of this stack by kind: "services" (gateways, agents, registry, resolver), "dockerd",
    "daemons" (containerd, shims, proxies) and "containers" (processes in the cgroup of a
    container of this stack's daemons). Nothing else: a process qualifies by its executable's
    name *and* a command line naming this stack, or by its cgroup."""
    markers = (st.run + "/", st.dir + "/")
    gateway_mark = f"--config {st.path('moorage.toml')} serve"
    agent_mark = f"--state-dir {os.path.join(st.dir, 'hosts')}/"
    resolver_mark = f" dns-refuse {st.gw_ip} --stack {st.dir}" if st.state.get("subnet") else None
    ids = {
        os.path.basename(p)
        for p in glob.glob(os.path.join(glob.escape(st.dir), "hosts", "*", "docker", "containers", "*"))
    }
    ids = {i for i in ids if len(i) == 64}
    found: dict[str, list[int]] = {"services": [], "dockerd": [], "daemons": [], "containers": []}
    skip = skip | {os.getpid()}
    for pid in all_pids():
        if pid in skip:
            continue
        st_ = proc_stat(pid)
        if st_ is None or st_[0] in ("Z", "X"):
            continue
        comm = proc_comm(pid)
        line = " ".join(proc_cmdline(pid))
        if comm == "postgres" and f"-D {pg_data(st)} " in line:
            found["services"].append(pid)
            continue
        if comm in DAEMON_COMMS or comm.startswith("containerd-shim"):
            if any(m in line for m in markers):
                kind = {"dockerd": "dockerd", "docker-registry": "services"}.get(comm, "daemons")
                found[kind].append(pid)
                continue
        elif (
            gateway_mark in line
            or (agent_mark in line and " agent " in f" {line} ")
            or (resolver_mark and line.endswith(resolver_mark))
        ):
            found["services"].append(pid)
            continue
        if ids:
            try:
                with open(f"/proc/{pid}/cgroup") as fh:
                    cgroup = fh.read()
            except OSError:
                continue
            if any(cid in cgroup for cid in ids):
                found["containers"].append(pid)
    return found


def sweep_leftovers(st: Stack, recorded: set[int]) -> None:
    """Stop what outlived its recorded parent (a killed dockerd's shims, a lost state.json)."""
    plan = (
        ("services", signal.SIGTERM, STOP_TIMEOUT),
        ("dockerd", signal.SIGTERM, DOCKERD_STOP_TIMEOUT),
        ("daemons", signal.SIGTERM, 5),
        ("containers", signal.SIGKILL, 5),
    )
    for kind, sig, timeout in plan:
        pids = scan_leftovers(st, recorded)[kind]
        if not pids:
            continue
        say(
            f"stopping {len(pids)} leftover process(es) of this stack: "
            + ", ".join(f"{p} ({proc_comm(p)})" for p in pids[:8])
            + (" ..." if len(pids) > 8 else "")
        )

        def remaining(pids=pids) -> list[int]:
            return [p for p in pids if (s := proc_stat(p)) and s[0] not in ("Z", "X")]

        for pid in pids:
            signal_pid(pid, sig)
        if not wait_gone(remaining, timeout):
            for pid in remaining():
                signal_pid(pid, signal.SIGKILL)
            if not wait_gone(remaining, 5):
                say(f"warning: process(es) {remaining()} survived SIGKILL")


def unescape_mount(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def unmount_all(st: Stack) -> None:
    prefixes = (st.run + "/", os.path.join(st.dir, "hosts") + "/")
    for _ in range(3):
        with open("/proc/self/mountinfo") as fh:
            points = [unescape_mount(line.split()[4]) for line in fh]
        mine = sorted(
            {p for p in points if p.startswith(prefixes) or p == st.run},
            key=lambda p: (p.count("/"), len(p)),
            reverse=True,
        )
        if not mine:
            return
        for point in mine:
            run(["umount", "-l", point], check=False, timeout=15)
    say("warning: some mounts under the stack survived `umount -l`")


def cmd_down(args) -> int:
    require_root()
    st = Stack(args.dir)
    st.lock()
    existed = st.load()
    if existed:
        st.state.setdefault("procs", {})
    else:
        st.state = {"procs": {}, "hosts": 0}
    procs = st.state["procs"]
    recorded = {r["pid"] for r in procs.values() if rec_alive(r)}
    t0 = time.monotonic()
    anything = bool(recorded)
    if "nova-watcher" in procs:  # first: it would make hosts for servers meanwhile
        st.stop("nova-watcher", "Nova watcher")
    for name in sorted(n for n in procs if n.startswith("agent-")):
        st.stop(name, f"agent of host {name.split('-')[1]}")
    for name in sorted(n for n in procs if n.startswith("gateway-")):
        st.stop(name, name)
    if "registry" in procs:
        st.stop("registry", "registry", group=False)
    if st.state.get("nova") or os.path.isdir(st.path("nova")):
        novaconf.nova_down(st, purge=args.purge)
    stop_postgres(st)
    keystone_down(st)
    stop_broker(st)  # --notifications: after the gateways, which were its clients
    forget_epmd(st)
    daemons = [n for n in procs if n.startswith("dockerd-")]
    for name in daemons:  # all at once: each stops its containers
        if st.alive(name):
            signal_pid(procs[name]["pid"], signal.SIGTERM)
    for name in daemons:
        st.stop(name, f"dockerd of host {name.split('-')[1]}", DOCKERD_STOP_TIMEOUT, group=False, term=False)
    for name in list(procs):
        st.stop(name, name)
    sweep_leftovers(st, recorded)
    unmount_all(st)
    if os.path.isdir(st.run) or link_exists(st.bridge):
        anything = True
    teardown_network(st)
    if os.path.isdir(st.run) and run_dir_owner(st) in (None, st.dir):
        shutil.rmtree(st.run, ignore_errors=True)
    if args.purge:  # the daemons' data, and the map of it; identity and logs stay
        for data in sorted(glob.glob(os.path.join(glob.escape(st.dir), "hosts", "*", "docker"))):
            say(f"removing {data}")
            shutil.rmtree(data, ignore_errors=True)
        for image in glob.glob(os.path.join(glob.escape(st.dir), "hosts", "*", "disk.img")):
            os.unlink(image)  # --host-disk-mb's filesystems (disk.py), unmounted above
        shutil.rmtree(st.path("rabbitmq"), ignore_errors=True)  # the broker's queues went with the map
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(st.path("moorage.db" + suffix))
        if os.path.isdir(pg_home(st)) and pg_home_owner(st) in (None, st.dir):
            say(f"removing {pg_home(st)}")
            shutil.rmtree(pg_home(st), ignore_errors=True)
    if existed:
        st.state["up"] = False
        st.state.pop("nova_hosts", None)
        # Booted hosts are gone with their namespaces; their files only with --purge (their
        # rows in moorage.db name them until the reaper finds them missing).
        st.state.pop("local_hosts", None)
        if args.purge:
            st.state.pop("busybox_public", None)  # the database went with it
            st.state.pop("host_disk_mb", None)  # its filesystems too
        st.save()
    say(
        f"stack at {st.dir} down in {time.monotonic() - t0:.1f} s"
        if anything
        else f"no stack running at {st.dir}"
    )
    return 0
