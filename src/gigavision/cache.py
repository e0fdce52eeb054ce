"""A small bounded least-recently-used cache that closes what it evicts.

For objects that are slow to make and hold resources (loaded models, open workspaces): a process keeps the
last few, and one that falls out is closed (its ``close()`` called, when it has one) rather than left to the
garbage collector. Thread-safe; ``get_or_create`` makes a missing value under the lock, so two threads asking
for the same key at once make it once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def close_quietly(value: object) -> None:
    """Call ``value.close()`` when it has one."""
    close = getattr(value, "close", None)
    if callable(close):
        close()


class LRUCache(Generic[K, V]):
    """At most ``size`` values; the least recently used is evicted (and closed) first."""

    def __init__(self, size: int, *, on_evict: Callable[[V], None] = close_quietly) -> None:
        if size < 1:
            raise ValueError(f"an LRUCache holds at least 1 value, got size={size}")
        self.size = size
        self._on_evict = on_evict
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[K]:
        with self._lock:
            return iter(list(self._items))

    def get(self, key: K) -> V | None:
        """The value of ``key`` (now the most recently used), or None."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def get_or_create(self, key: K, make: Callable[[], V]) -> V:
        """The value of ``key``, made by ``make()`` (under the lock) when it is not kept."""
        evicted: list[V] = []
        with self._lock:
            value = self._items.get(key)
            if value is None:
                value = make()
                self._items[key] = value
                evicted = self._trim()
            self._items.move_to_end(key)
        for old in evicted:
            self._on_evict(old)
        return value

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` under ``key``; a value it replaces is closed like an evicted one."""
        with self._lock:
            old = self._items.pop(key, None)
            self._items[key] = value
            evicted = self._trim()
        for gone in ([old] if old is not None and old is not value else []) + evicted:
            self._on_evict(gone)

    def clear(self) -> None:
        """Evict (and close) everything."""
        with self._lock:
            values = list(self._items.values())
            self._items.clear()
        for value in values:
            self._on_evict(value)

    def _trim(self) -> list[V]:
        evicted = []
        while len(self._items) > self.size:
            evicted.append(self._items.popitem(last=False)[1])
        return evicted
