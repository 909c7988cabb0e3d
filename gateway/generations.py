"""Generations: per instance, a value that changes whenever what its daemon would answer to a
read may have changed, shared by every process of one gateway (gunicorn's workers, a relay).

The read cache (gateway/services/readcache.py) keeps a daemon's answer to ``ps`` or
``inspect`` with the generation it read before asking; the answer is good only while the
generation is unchanged. Two things change it:

- every request the gateway sends an instance that is not a GET or HEAD (create, start, kill,
  rm, rename, exec, attach, wait, network connect...): before it is sent, when its answer's
  head arrives, and while its body is relayed (gateway/agentclient.py, gateway/forward.py), so
  that a read after a write, through any worker, finds the generation changed;
- every event the instance's daemon reports (a container that exits by itself), when the
  event recorder reads it (gateway/notifications/recorder.py).

The values live in one file mapped into every process (``SLOTS`` slots of ``SLOT``: the
instance's key, its generation, and when the recorder last said its event follower was
connected), beside the SQLite store: the processes that share a store file share the table.
A generation is a random 64-bit value, not a counter, so that two processes that change one
slot at once (a read-modify-write of a counter could go back to a value a cache holds) can
only ever make it new. Instances whose keys share a slot change each other's generation, which
costs only extra misses; the follower's mark is kept only for the key in the slot, so a
colliding instance is never cached. With the PostgreSQL store several replicas write to the
same instances and none sees another's memory: no table, and no cache (``configure``).
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import os
import struct
import time

SLOTS = 65536
SLOT = struct.Struct("=QQQ")  # key, generation, follower mark (ms of CLOCK_MONOTONIC)
# The recorder marks every connected follower each pass (PASS_SECONDS, 2 s): a mark older than
# this means the follower, or the worker that ran it, is gone.
FOLLOWER_FRESH_MS = 6000
SUFFIX = "-generations"

_table: mmap.mmap | None = None


def path_for(database: str) -> str:
    """The table's file for a store URL: beside a SQLite file; "" for anything else (the
    PostgreSQL store, an in-memory SQLite)."""
    if not database.startswith("sqlite:///"):
        return ""
    path = database[len("sqlite:///") :].split("?", 1)[0]
    if not path or path == ":memory:":
        return ""
    return path + SUFFIX


def configure(settings) -> bool:
    """Map the table of this gateway's store (idempotent); False when there is none, and the
    read cache stays off."""
    if _table is not None:
        return True
    path = path_for(settings.gateway.database)
    if not path or not settings.gateway.read_cache:
        return False
    return open_table(path)


def open_table(path: str) -> bool:
    global _table
    size = SLOTS * SLOT.size
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)  # zeros; another process growing it too writes the same
        _table = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    return True


def close() -> None:
    global _table
    if _table is not None:
        _table.close()
        _table = None


def enabled() -> bool:
    return _table is not None


@functools.lru_cache(maxsize=65536)
def _slot(uuid: str) -> tuple[int, int]:
    """(offset, key) of an instance: the same in every process (Python's hash() is not)."""
    key = int.from_bytes(hashlib.blake2b(uuid.encode(), digest_size=8).digest(), "little") | 1
    return (key % SLOTS) * SLOT.size, key


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


def bump(uuid: str) -> None:
    """What the instance's daemon answers may have changed: every cached answer is stale."""
    if _table is not None and uuid:
        offset, _key = _slot(uuid)
        struct.pack_into("=Q", _table, offset + 8, int.from_bytes(os.urandom(8), "little"))


def current(uuid: str) -> int | None:
    """The instance's generation, or None when a cached answer cannot be trusted at all: no
    table, or no event follower of this instance connected just now (a change the daemon made
    by itself would go unseen)."""
    if _table is None:
        return None
    offset, key = _slot(uuid)
    held, generation, mark = SLOT.unpack_from(_table, offset)
    age = _now_ms() - mark
    if held != key or not mark or age < 0 or age > FOLLOWER_FRESH_MS:
        return None
    return generation


def follower_connected(uuid: str) -> None:
    """The recorder follows the instance's events now (marked again every pass; the caller
    changes the generation when it connects, since what happened before is unknown)."""
    if _table is None:
        return
    offset, key = _slot(uuid)
    held, _generation, mark = SLOT.unpack_from(_table, offset)
    if held not in (0, key) and mark and 0 <= _now_ms() - mark <= FOLLOWER_FRESH_MS:
        return  # another instance's slot while its follower lives: this one is never cached
    struct.pack_into("=Q", _table, offset, key)
    struct.pack_into("=Q", _table, offset + 16, _now_ms())


def follower_gone(uuid: str) -> None:
    """The instance's events are not followed: nothing of it is cached until they are again."""
    if _table is None:
        return
    offset, key = _slot(uuid)
    held, _generation, _mark = SLOT.unpack_from(_table, offset)
    if held == key:
        struct.pack_into("=Q", _table, offset + 16, 0)
    bump(uuid)
