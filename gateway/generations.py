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

The values live in one file mapped into every process (``SLOTS`` slots of three words: the
instance's key, its generation, and when the recorder last said its event follower was
connected), beside the SQLite store: the processes that share a store file share the table.
A generation is a random 64-bit value, not a counter, so that two processes that change one
slot at once (a read-modify-write of a counter could go back to a value a cache holds) can
only ever make it new. Instances whose keys share a slot change each other's generation, which
costs only extra misses; the follower's mark is kept only for the key in the slot, so a
colliding instance is never cached. With the PostgreSQL store several replicas write to the
same instances and none sees another's memory: no table, and no cache (``configure``).

One more value lives there, the store's: it changes after every statement that may have
changed a row of the SQLite store and after every commit and rollback, in any process that
opened that store (gateway/store/db.py maps the table for it), the admin CLI's included. The
store's kept reads (gateway/store/kept.py) hold a row a moment while it is unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import os
import time

SLOTS = 65536
# A slot: the instance's key, its generation, the follower's mark (ms of CLOCK_MONOTONIC), as
# three 8-byte words, each read and written whole through a memoryview of native words (one
# aligned access: struct's pack_into zero-fills before it writes, and a reader could see 0).
WORDS = 3
SLOT_BYTES = WORDS * 8
# The recorder marks every connected follower each pass (PASS_SECONDS, 2 s): a mark older than
# this means the follower, or the worker that ran it, is gone.
FOLLOWER_FRESH_MS = 6000
SUFFIX = "-generations"

_table: mmap.mmap | None = None
_words: memoryview | None = None
_mapped_path = ""
# The store's generation is a slot of its own key (a colliding instance's bumps only cost the
# store's kept reads a miss, and the store's cost that instance's cached answers one).
_STORE_KEY = "moorage:store"
# Whether this process keeps reads of the store (configure: [gateway] read_cache).
_store_reads_kept = False


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
    read cache (and the store's kept reads) stay off."""
    global _store_reads_kept
    path = path_for(settings.gateway.database)
    if not path or not settings.gateway.read_cache:
        _store_reads_kept = False
        return False
    _store_reads_kept = open_table(path)
    return _store_reads_kept


def open_table(path: str) -> bool:
    """Map the table at ``path``, in place of another store's (a process that opens a second
    store, as tests do, must change that store's generation, not the first one's)."""
    global _table, _words, _mapped_path
    if _table is not None and path == _mapped_path:
        return True
    close()
    size = SLOTS * SLOT_BYTES
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)  # zeros; another process growing it too writes the same
        _table = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        _words = memoryview(_table).cast("Q")
        _mapped_path = path
    finally:
        os.close(fd)
    return True


def close() -> None:
    global _table, _words, _mapped_path, _store_reads_kept
    _mapped_path = ""
    _store_reads_kept = False
    if _words is not None:
        _words.release()
        _words = None
    if _table is not None:
        _table.close()
        _table = None


def enabled() -> bool:
    return _words is not None


@functools.lru_cache(maxsize=65536)
def _slot(uuid: str) -> tuple[int, int]:
    """(first word, key) of an instance: the same in every process (Python's hash() is not)."""
    key = int.from_bytes(hashlib.blake2b(uuid.encode(), digest_size=8).digest(), "little") | 1
    return (key % SLOTS) * WORDS, key


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


def bump(uuid: str) -> None:
    """What the instance's daemon answers may have changed: every cached answer is stale."""
    if _words is not None and uuid:
        first, _key = _slot(uuid)
        _words[first + 1] = int.from_bytes(os.urandom(8), "little") | 1  # never the file's 0


def current(uuid: str) -> int | None:
    """The instance's generation, or None when a cached answer cannot be trusted at all: no
    table, or no event follower of this instance connected just now (a change the daemon made
    by itself would go unseen)."""
    words = _words
    if words is None:
        return None
    first, key = _slot(uuid)
    mark = words[first + 2]
    age = _now_ms() - mark
    if words[first] != key or not mark or age < 0 or age > FOLLOWER_FRESH_MS:
        return None
    return words[first + 1]


def follower_connected(uuid: str) -> None:
    """The recorder follows the instance's events now (marked again every pass; the caller
    changes the generation when it connects, since what happened before is unknown)."""
    words = _words
    if words is None:
        return
    first, key = _slot(uuid)
    held, mark = words[first], words[first + 2]
    if held != key:
        if held and mark and 0 <= _now_ms() - mark <= FOLLOWER_FRESH_MS:
            return  # another instance's slot while its follower lives: this one is never cached
        words[first + 2] = 0  # the other's mark is not this one's
        words[first] = key
    words[first + 2] = _now_ms()


def follower_gone(uuid: str) -> None:
    """The instance's events are not followed: nothing of it is cached until they are again."""
    words = _words
    if words is None:
        return
    first, key = _slot(uuid)
    if words[first] == key:
        words[first + 2] = 0
    bump(uuid)


def store_changed() -> None:
    """A row of the store may have changed (after the statement or the commit that did it)."""
    bump(_STORE_KEY)


def store_generation() -> int | None:
    """The store's generation, or None when reads of it are not kept in this process (no
    table, [gateway] read_cache off)."""
    words = _words
    if words is None or not _store_reads_kept:
        return None
    return words[_slot(_STORE_KEY)[0] + 1]
