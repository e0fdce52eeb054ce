"""The one bounded LRU cache (gigavision.cache): by count closing what it evicts, or by bytes for tiles."""

from __future__ import annotations

import numpy as np

from gigavision.cache import LRUCache
from gigavision.images.cache import ByteCache


class _Handle:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_byte_bounded_cache_evicts_by_size_and_counts_hits() -> None:
    cache: ByteCache[np.ndarray] = ByteCache(100)
    a, b = np.zeros(60, np.uint8), np.zeros(30, np.uint8)
    cache.put("a", a)
    cache.put("b", b)
    assert cache.nbytes == 90 and cache.get("a") is a  # "a" is now the most recent
    cache.put("c", np.zeros(30, np.uint8))  # 120 bytes > 100: the least recent ("b") goes
    assert "b" not in cache and cache.nbytes == 90
    cache.put("huge", np.zeros(101, np.uint8))  # larger than the whole cache: not kept, nothing evicted
    assert "huge" not in cache and len(cache) == 2
    assert cache.get("b") is None and (cache.hits, cache.misses) == (1, 1)
    assert not a.flags.writeable  # a cached tile is shared between threads: read-only


def test_add_keeps_the_first_value_and_closes_the_loser_and_the_evicted() -> None:
    cache: LRUCache[str, _Handle] = LRUCache(1)
    first, second = _Handle(), _Handle()
    assert cache.add("k", first) is first
    assert cache.add("k", second) is first and second.closed and not first.closed  # lost the race
    third = _Handle()
    cache.add("other", third)
    assert first.closed and not third.closed  # evicted
    assert cache.discard("other") is third and not third.closed and len(cache) == 0
