"""The byte-bounded, thread-safe tile caches: decoded tiles (arrays) or encoded tiles (bytes).

``cache.LRUCache`` weighted by bytes, plus hit/miss counts; cached arrays are made read-only, because a
cached tile is shared between threads and a caller that changed it in place would change it for all.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

import numpy as np

from gigavision.cache import LRUCache, keep

V = TypeVar("V", bound=np.ndarray | bytes)


def nbytes(value: np.ndarray | bytes) -> int:
    return value.nbytes if isinstance(value, np.ndarray) else len(value)


class ByteCache(LRUCache[Hashable, V]):
    """Arrays or bytes keyed by any hashable, bounded by their total size in bytes."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max(1, max_bytes), weigh=nbytes, on_evict=keep)
        self.hits = 0
        self.misses = 0

    @property
    def max_bytes(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        return self.weight

    def get(self, key: Hashable) -> V | None:
        value = super().get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: Hashable, value: V) -> None:
        if isinstance(value, np.ndarray):
            value.setflags(write=False)  # cached tiles are shared between threads: never mutate them
        super().put(key, value)


TileCache = ByteCache[np.ndarray]
DEFAULT_CACHE: TileCache = ByteCache(256 * 1024**2)
