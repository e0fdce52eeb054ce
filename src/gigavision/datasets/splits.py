"""Grouping and split assignment, pure NumPy/Python (no database): union-find groups, near-duplicate pairs
from 64-bit perceptual hashes, and a deterministic greedy assignment of whole groups to splits.

The unit of assignment is a *group* of whole images, so tiles or patches of one image can never end up on
both sides, and neither can images joined into one group (same patient, near-identical photos).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

PAIR_CHUNK_ELEMENTS = 8_000_000  # hashes compared per NumPy step (64 MB of uint64)


class UnionFind:
    """Disjoint sets over ``0..n-1`` (path halving, union by size)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, a: int, b: int) -> bool:
        """Join the sets of ``a`` and ``b``; False when they were already one."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return True

    def groups(self) -> list[list[int]]:
        """Members of each set, sets ordered by their smallest member, members ascending."""
        by_root: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            by_root.setdefault(self.find(i), []).append(i)
        return sorted(by_root.values(), key=lambda members: members[0])


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Edges ``(i, j)``, ``i < j``, joining ``(n,) uint64`` hashes at Hamming distance ≤ ``max_distance``.

    Enough edges to connect every near-duplicate, not every pair: images with identical hashes are chained
    to one representative, and only the distinct hashes are compared all-against-all, in chunks of the upper
    triangle (XOR + popcount), so memory stays bounded and cost is ~n_distinct²/2 popcounts (30,000
    distinct hashes: ~2 s on one core). Returns ``(k, 2) int64``, sorted.
    """
    hashes = np.asarray(hashes, dtype=np.uint64).reshape(-1)
    if len(hashes) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    distinct, inverse = np.unique(hashes, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    first = np.searchsorted(inverse[order], np.arange(len(distinct)))
    representative = order[first]  # one image per distinct hash
    pairs: list[np.ndarray] = []
    # images sharing a hash: chain each to the representative of its hash
    same = np.nonzero(order != representative[inverse[order]])[0]
    if len(same):
        members = order[same]
        pairs.append(np.stack([representative[inverse[members]], members], axis=1))
    if max_distance > 0 and len(distinct) > 1:
        n = len(distinct)
        rows = max(1, PAIR_CHUNK_ELEMENTS // n)
        for start in range(0, n - 1, rows):
            block = distinct[start : start + rows]
            other = distinct[start + 1 :]
            dist = np.bitwise_count(block[:, None] ^ other[None, :])
            i, j = np.nonzero(dist <= max_distance)
            j = j + start + 1
            keep = j > i + start  # upper triangle only
            if keep.any():
                pairs.append(np.stack([representative[i[keep] + start], representative[j[keep]]], axis=1))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    out = np.concatenate(pairs).astype(np.int64)
    out.sort(axis=1)
    return np.unique(out, axis=0)


def group_order_key(seed: int, member_ids: Sequence[str]) -> str:
    """A seeded, order-independent shuffle key for a group of image ids (stable across databases)."""
    h = hashlib.sha256(f"{seed}\n".encode())
    for image_id in sorted(member_ids):
        h.update(image_id.encode())
    return h.hexdigest()


def assign_splits(
    groups: Sequence[Sequence[int]],
    strata: Sequence[str],
    ratios: Mapping[str, float],
    order_keys: Sequence[str],
    fixed: Mapping[int, int] | None = None,
) -> list[int]:
    """The split index of every group.

    ``groups``: image indices per group; ``strata``: the class of every image (one value for all when not
    stratifying); ``ratios``: ordered split -> fraction; ``order_keys``: a seeded key per group; ``fixed``:
    group -> split for groups that must stay where an earlier version put them.

    Fixed groups are placed first. The others go, largest first and then in ``order_keys`` order, to the split
    whose stratum counts are furthest below target (``ratio × images of that stratum``), weighted by the
    group's images per stratum; ties go to the split with the largest overall deficit, then the first split.
    With one stratum this is a plain greedy fill by image count; with one class per image it fills every
    class in its own proportions.
    """
    names = list(ratios)
    ratio = np.array([ratios[n] for n in names], dtype=np.float64)
    stratum_names = sorted(set(strata))
    index = {s: k for k, s in enumerate(stratum_names)}
    image_stratum = np.array([index[s] for s in strata], dtype=np.int64)
    per_stratum = np.bincount(image_stratum, minlength=len(stratum_names)).astype(np.float64)
    target = ratio[:, None] * per_stratum[None, :]  # (splits, strata)
    current = np.zeros_like(target)
    fixed = dict(fixed or {})
    result = [-1] * len(groups)

    def counts_of(members: Sequence[int]) -> np.ndarray:
        return np.bincount(image_stratum[list(members)], minlength=len(stratum_names)).astype(np.float64)

    for g, split in sorted(fixed.items()):
        result[g] = split
        current[split] += counts_of(groups[g])
    free = [g for g in range(len(groups)) if g not in fixed]
    free.sort(key=lambda g: (-len(groups[g]), order_keys[g]))
    for g in free:
        counts = counts_of(groups[g])
        deficit = target - current
        score = deficit @ counts
        overall = deficit.sum(axis=1)
        best = max(range(len(names)), key=lambda s: (round(score[s], 9), round(overall[s], 9), -s))
        result[g] = best
        current[best] += counts
    return result
