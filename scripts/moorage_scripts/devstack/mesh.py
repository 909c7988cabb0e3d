"""The routing mesh on devstack (gateway/mesh.py): published ports at 127.0.0.1, the host of
DOCKER_HOST and of the TLS listener, forwarded by `moorage mesh` to the hosts' 198.18.X.Y.

Each stack chooses Moorage's ports from a block of its own below the kernel's ephemeral
range (scripts/moorage_scripts/ports.py), so that two stacks on one machine do not meet.
`up --no-mesh` keeps the instances' addresses (the mesh off)."""

from __future__ import annotations

import json
import random

from ..ports import port_free
from .common import say
from .daemons import moorage_argv, moorage_env
from .state import Stack

ADDRESS = "127.0.0.1"
BLOCK = 200  # Moorage's ports per stack (-P, -p PORT)


def mesh_span(st: Stack) -> tuple[int, int]:
    """The stack's block of ports, chosen once (kept in its state)."""
    span = st.state.get("mesh_span")
    if not span:
        for _ in range(50):
            low = random.randrange(10000, 20000 - BLOCK, 10)
            if all(port_free(p) for p in range(low, low + BLOCK, 20)):
                break
        span = st.state["mesh_span"] = [low, low + BLOCK - 1]
    return span[0], span[1]


def mesh_config(st: Stack) -> list[str]:
    low, high = mesh_span(st)
    return [
        "",
        "[mesh]",
        f"enabled = {json.dumps(bool(st.state.get('mesh', True)))}",
        f"address = {json.dumps(ADDRESS)}",
        f"port_min = {low}",
        f"port_max = {high}",
        "udp_idle = 30",
        "poll_interval = 0.2",
    ]


def start_mesh(st: Stack) -> None:
    """`moorage mesh` for 127.0.0.1, unless it runs (or the mesh is off)."""
    if not st.state.get("mesh", True):
        st.stop("mesh", "the mesh")
        return
    if st.alive("mesh"):
        return
    low, high = mesh_span(st)
    say(f"starting the mesh on {ADDRESS} (ports {low}-{high})")
    argv = [*moorage_argv(), "--config", st.path("moorage.toml"), "mesh"]
    st.spawn("mesh", argv, st.path("mesh.log"), env=moorage_env())
