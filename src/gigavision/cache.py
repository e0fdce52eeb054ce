"""The one bounded least-recently-used cache: by count, or by weight (bytes), closing what it evicts.

For objects that are slow to make and hold resources (loaded models, open images, open workspaces) a
process keeps the last few, and one that falls out is closed (its ``close()`` called, when it has one)
rather than left to the garbage collector. With ``weigh`` the bound is a total weight instead, as for the
byte-bounded tile caches (``images/cache.py``). Thread-safe; ``get_or_create`` makes a missing value under
the lock, so two threads asking for the same key at once make it once.
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


def keep(value: object) -> None:
    """``on_evict`` for plain values (arrays, bytes, rows): nothing to close."""


class LRUCache(Generic[K, V]):
    """At most ``size`` values (or, with ``weigh``, values weighing ``size`` in all); the least recently used
    is evicted (and passed to ``on_evict``, which closes it by default) first. A value heavier than ``size``
    on its own is not kept."""

    def __init__(
        self, size: int, *, weigh: Callable[[V], int] | None = None, on_evict: Callable[[V], None] = close_quietly
    ) -> None:
        if size < 1:
            raise ValueError(f"an LRUCache holds at least 1 value, got size={size}")
        self.size = size
        self._weigh = weigh
        self._on_evict = on_evict
        self._items: OrderedDict[K, V] = OrderedDict()
        self._weight = 0
        self._lock = threading.RLock()

    @property
    def weight(self) -> int:
        """The total weight held (the number of values without ``weigh``)."""
        return self._weight

    def _weight_of(self, value: V) -> int:
        return self._weigh(value) if self._weigh is not None else 1

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
                evicted = [v for v in self._insert(key, value) if v is not value]  # too heavy: returned, not kept
            else:
                self._items.move_to_end(key)
        for old in evicted:
            self._on_evict(old)
        return value

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` under ``key``; a value it replaces is closed like an evicted one."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._weight -= self._weight_of(old)
            evicted = self._insert(key, value)
        for gone in ([old] if old is not None and old is not value else []) + [v for v in evicted if v is not value]:
            self._on_evict(gone)

    def add(self, key: K, value: V) -> V:
        """Keep ``value`` unless ``key`` already holds one (another thread made it meanwhile); returns the
        value kept under ``key``, closing ``value`` when it lost the race."""
        with self._lock:
            kept = self._items.get(key)
            if kept is None:
                evicted = self._insert(key, value)
                kept = value
            else:
                self._items.move_to_end(key)
                evicted = [value]
        for gone in evicted:
            if gone is not kept:
                self._on_evict(gone)
        return kept

    def discard(self, key: K) -> V | None:
        """Forget ``key`` (a stale entry) and return its value, without passing it to ``on_evict``."""
        with self._lock:
            value = self._items.pop(key, None)
            if value is not None:
                self._weight -= self._weight_of(value)
            return value

    def clear(self) -> None:
        """Evict (and close) everything."""
        with self._lock:
            values = list(self._items.values())
            self._items.clear()
            self._weight = 0
        for value in values:
            self._on_evict(value)

    def _insert(self, key: K, value: V) -> list[V]:
        """Add ``value`` as the most recent (caller holds the lock) and return what falls out."""
        weight = self._weight_of(value)
        if weight > self.size:  # would evict everything and still not fit
            return [value]
        self._items[key] = value
        self._weight += weight
        evicted = []
        while self._weight > self.size:
            _, old = self._items.popitem(last=False)
            self._weight -= self._weight_of(old)
            evicted.append(old)
        return evicted
