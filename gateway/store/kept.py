"""Reads of the store kept a moment per worker, while the store is unchanged.

Two reads come with nearly every request: a project's live instances (every ``ps``, every
list and prune) and a container by ID or name (every container request). Their SQL is
prepared (gateway/store/prepared.py); what is left is making the rows into models, several
times what SQLite takes to answer (about 100 of 130 µs for a project's instances). A kept
read is used only while

- the store's generation (gateway/generations.py) is the one read before the rows were: every
  statement that may change a row of the SQLite store, and every commit and rollback, changes
  it, in whichever process of the gateway (or the admin CLI) made it, so that a read after a
  write sees the write;
- it is younger than MAX_AGE: a writer that could not say so (a process without the table)
  is seen that soon.

On with the SQLite store and ``[gateway] read_cache`` (the default); with PostgreSQL another
replica's writes are unseen, and every read goes to the database.

The rows are shared by the requests of a worker that read them while they are kept: a caller
must not change them (an update goes through the store, which changes the generation).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from gateway import generations

MAX_AGE = 0.5  # seconds
MAX_ENTRIES = 4096

T = TypeVar("T")


class KeptReads(Generic[T]):
    """``get(key, read)``: ``read()``'s value, or the one it gave a moment ago for ``key``
    while the store is unchanged."""

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._generation: int | None = None
        self._kept: dict[Hashable, tuple[float, T]] = {}

    def get(self, key: Hashable, read: Callable[[], T]) -> T:
        generation = generations.store_generation()  # before the read: see gateway/store/db.py
        if generation is None:
            return read()
        now = time.monotonic()
        if generation != self._generation:
            self._kept.clear()  # every kept read is stale: none is kept past a change
            self._generation = generation
        else:
            kept = self._kept.get(key)
            if kept is not None and now - kept[0] < MAX_AGE:
                return kept[1]
        value = read()
        if len(self._kept) >= self.max_entries:
            self._kept.clear()
        self._kept[key] = (now, value)  # under the generation read before it
        return value
