"""A worker's table of kept answers, bounded in entries and in bytes, the oldest dropped first:
the read cache's daemon answers (gateway/services/readcache.py) and the replays' whole answers
(gateway/replay.py)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Budgeted(Generic[V]):
    """``keep(key, value)``, ``get(key)``, ``drop(key)``: at most ``max_entries`` values of
    ``size(value)`` bytes adding up to at most ``budget``."""

    def __init__(self, max_entries: int, budget: int, size: Callable[[V], int]):
        self.max_entries = max_entries
        self.budget = budget
        self._size = size
        self._values: dict[Hashable, V] = {}
        self._bytes = 0

    def get(self, key: Hashable) -> V | None:
        return self._values.get(key)

    def keep(self, key: Hashable, value: V) -> None:
        self.drop(key)
        size = self._size(value)
        while self._values and (len(self._values) >= self.max_entries or self._bytes + size > self.budget):
            self.drop(next(iter(self._values)))  # the oldest first
        self._values[key] = value
        self._bytes += size

    def drop(self, key: Hashable) -> None:
        old = self._values.pop(key, None)
        if old is not None:
            self._bytes -= self._size(old)

    def clear(self) -> None:
        self._values.clear()
        self._bytes = 0
