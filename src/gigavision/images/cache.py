"""A byte-bounded, thread-safe LRU cache for decoded tiles (arrays) or encoded tiles (bytes)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

import numpy as np

V = TypeVar("V", np.ndarray, bytes)


def _size(value: np.ndarray | bytes) -> int:
    return value.nbytes if isinstance(value, np.ndarray) else len(value)


class LRUCache(Generic[V]):
    """LRU of arrays or bytes keyed by any hashable, bounded by their total size in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: V) -> None:
        size = _size(value)
        if size > self.max_bytes:
            return
        if isinstance(value, np.ndarray):
            value.setflags(write=False)  # cached tiles are shared between threads: never mutate them
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= _size(old)
            self._items[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= _size(evicted)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes


TileCache = LRUCache[np.ndarray]
DEFAULT_CACHE: TileCache = LRUCache(256 * 1024**2)
