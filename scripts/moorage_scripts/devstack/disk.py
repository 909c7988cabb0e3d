"""--host-disk-mb N: each host's dockerd data-root on a filesystem of its own, N MB.

A file DIR/hosts/I/disk.img (sparse: it takes what is written) holds an ext4 filesystem with no
blocks reserved for root (dockerd runs as root and would otherwise get 5 % more than a test
expects), loop-mounted on DIR/hosts/I/docker before dockerd starts. Filling that filesystem is
the disk-full fault (tests/faults/test_disk_full.py): write a file into DIR/hosts/I/docker until
ENOSPC, and every write of that dockerd fails with "no space left on device".

The filesystem lives as long as the file: `down` unmounts it (down.unmount_all takes every mount
under DIR/hosts) and keeps the file, so the host's data survives down and up as without the
option; `down --purge` removes it with the data.
"""

from __future__ import annotations

import os

from .common import Fail, run, say
from .state import Stack

IMAGE = "disk.img"


def image_path(st: Stack, i: int) -> str:
    return os.path.join(st.host_dir(i), IMAGE)


def data_root(st: Stack, i: int) -> str:
    return os.path.join(st.host_dir(i), "docker")


def ensure_host_disk(st: Stack, i: int) -> None:
    """Mount host i's filesystem on its data-root unless mounted (make it on first use)."""
    size_mb = int(st.state.get("host_disk_mb") or 0)
    if size_mb <= 0 or os.path.ismount(data_root(st, i)):
        return
    image = image_path(st, i)
    os.makedirs(data_root(st, i), exist_ok=True)
    if not os.path.exists(image):
        if os.listdir(data_root(st, i)):
            raise Fail(
                f"host {i} already has data in {data_root(st, i)} on the machine's disk; "
                f"--host-disk-mb needs a fresh stack (`scripts/devstack down {st.dir} --purge` first)"
            )
        with open(image, "wb") as fh:
            fh.truncate(size_mb * 1024 * 1024)
        run(["mkfs.ext4", "-q", "-F", "-m", "0", "-L", f"mrg-{st.hash}-h{i}", image], timeout=60)
        say(f"host {i}: a {size_mb} MB filesystem for its dockerd ({image})")
    run(["mount", "-o", "loop", image, data_root(st, i)], timeout=30)
