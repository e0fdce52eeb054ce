"""Active-learning selection: which unlabelled items are worth labelling next, as pure NumPy functions.

``select(strategy, probs, embeddings, labelled_embeddings, budget, seed)`` → ``Selection`` (indices into the
pool, best first, and each pick's score). Items are images or regions: the callers (image-level selection in
``active.pool_selection``, region-level selection in big images) only build the arrays.

Strategies:

- ``entropy``, ``margin``, ``least-confidence``: the most uncertain items by their class probabilities, scored
  as ``metrics.uncertainty.class_uncertainty`` scores them for the routing queue (normalised to [0, 1],
  1 = most unsure). Without class
  probabilities (detection, segmentation) a per-item ``uncertainty`` is given instead and all three rank by it.
- ``coreset``: k-center greedy (Sener & Savarese 2018) on the embeddings: each pick is the item farthest from
  its nearest labelled or already-picked item, so the batch covers the pool's clusters. Score: that distance.
- ``badge`` (Ash et al. 2020), classifiers only: gradient embeddings ``(p − onehot(argmax p)) ⊗ h`` of the
  last layer's loss at the predicted label (``h``: the penultimate features given as ``embeddings``),
  picked by k-means++ seeding, so the batch is both uncertain (long gradients) and diverse. Distances are
  computed from ``p`` and ``h`` without forming the ``C·D``-wide vectors. Score: the squared distance at
  pick time (the first pick: its squared gradient norm).
- ``hybrid``: diverse mini-batch selection (Zhdanov 2019, "Diverse mini-batch Active Learning"): uncertainty
  first, then diversity. Candidates are the ``HYBRID_POOL × budget`` items with the highest margin uncertainty
  (or the given ``uncertainty``) that are no near-duplicate of a labelled item; k-means with k = budget
  clusters them, each candidate weighted by its uncertainty (weighted k-means++ seeding from ``seed``, then
  Lloyd rounds), and the candidate nearest each centre is picked. The batch thus holds one representative of
  each dense region of uncertain items instead of the outliers that pure uncertainty (or a farthest-point
  rule) favours. Picks come in the order of the uncertainty their cluster holds; score: that share of the
  candidates' total uncertainty. Should near-duplicates use up the candidates, the most uncertain of the rest
  of the pool follow (score 0). Cost: ``HYBRID_ITERS`` rounds over ``HYBRID_POOL·budget × budget`` distances.
- ``random``: a uniform sample (the baseline). Score: 0.

Every batch avoids near-duplicates: an item whose embedding has cosine similarity ≥ ``dedup`` (after
subtracting the mean embedding of the pool and the labelled items, so that all-positive features do not look
alike) with a labelled item or an item already in the batch is skipped. ``near_duplicates`` replaces that
rule with other vectors (``phash_duplicates``: perceptual hashes within a Hamming distance, the rule dataset
versions use). ``embeddings=None`` and no ``near_duplicates`` turns the check off. A batch can therefore be
smaller than the budget; ``Selection.skipped`` says how many were passed over as near-duplicates.

Everything is deterministic for a given ``seed`` (ties break by index; random draws use
``numpy.random.default_rng(seed)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gigavision.errors import InvalidInput
from gigavision.metrics.uncertainty import class_uncertainty

UNCERTAINTY_STRATEGIES = ("entropy", "margin", "least-confidence")
DIVERSITY_STRATEGIES = ("coreset", "badge", "hybrid")
STRATEGIES = (*UNCERTAINTY_STRATEGIES, *DIVERSITY_STRATEGIES, "random")
DEFAULT_DEDUP = 0.98  # cosine of centred embeddings at or above which two items count as near-duplicates
HYBRID_POOL = 10  # hybrid's candidates: this many times the budget, the most uncertain first (Zhdanov's β)
HYBRID_ITERS = 20  # hybrid's k-means: at most this many Lloyd rounds
_EPS = 1e-12
_CHUNK = 4096  # rows per matrix product when comparing the pool with the labelled items


@dataclass(frozen=True)
class Selection:
    """The picks, best first: ``indices`` into the pool and each one's ``scores`` (meaning per strategy);
    ``uncertainty``: each pick's uncertainty in [0, 1] when probabilities or uncertainties were given (else
    None); ``skipped``: items passed over as near-duplicates of a labelled item or of an earlier pick."""

    strategy: str
    indices: np.ndarray
    scores: np.ndarray
    uncertainty: np.ndarray | None
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class NearDuplicates:
    """Which items count as near-duplicates: rows of ``pool`` ``(N, K)`` and ``labelled`` ``(M, K)`` whose cosine
    similarity is ≥ ``threshold`` (after subtracting their mean when ``centre``)."""

    pool: np.ndarray
    labelled: np.ndarray | None
    threshold: float
    centre: bool = True


HASH_BITS = 64


def hash_bits(hashes: np.ndarray) -> np.ndarray:
    """``(n, 64)`` ±1 vectors of 64-bit hashes: their cosine is ``1 − 2·hamming/64``."""
    h = np.asarray(hashes, dtype=np.uint64).reshape(-1, 1)
    bits = (h >> np.arange(HASH_BITS, dtype=np.uint64)) & np.uint64(1)
    return np.asarray(bits, dtype=np.float64) * 2.0 - 1.0


def phash_duplicates(pool: np.ndarray, labelled: np.ndarray | None, max_distance: int) -> NearDuplicates:
    """Near-duplicates as perceptual hashes (``datasets.phash``) at most ``max_distance`` bits apart."""
    if isinstance(max_distance, bool) or not 0 <= int(max_distance) <= HASH_BITS // 2:
        raise InvalidInput(f"near-duplicate distance must be 0..{HASH_BITS // 2} bits, got {max_distance!r}")
    lab = hash_bits(labelled) if labelled is not None and len(labelled) else None
    # 1e-9 below the exact value: a float cosine of two hashes exactly max_distance apart still counts
    return NearDuplicates(hash_bits(pool), lab, 1.0 - 2.0 * int(max_distance) / HASH_BITS - 1e-9, centre=False)


# -- uncertainty -------------------------------------------------------------------------------------------
def uncertainty_scores(probs: np.ndarray, method: str = "entropy") -> np.ndarray:
    """``(N,)`` uncertainty in [0, 1] of ``(N, C)`` class probabilities: ``entropy`` (normalised by log C),
    ``margin`` (1 − (top1 − top2)) or ``least-confidence`` (1 − top1, rescaled so a uniform row is 1): the
    routing queue's scores (``metrics.uncertainty.class_uncertainty``), under the strategies' names."""
    if method not in UNCERTAINTY_STRATEGIES:
        raise InvalidInput(f"uncertainty method must be one of {', '.join(UNCERTAINTY_STRATEGIES)}, got {method!r}")
    return class_uncertainty(_probs(probs), method.replace("-", "_"))


# -- the one entry point -----------------------------------------------------------------------------------
def select(
    strategy: str,
    probs: np.ndarray | None,
    embeddings: np.ndarray | None,
    labelled_embeddings: np.ndarray | None,
    budget: int,
    seed: int = 0,
    *,
    uncertainty: np.ndarray | None = None,
    dedup: float | None = DEFAULT_DEDUP,
    near_duplicates: NearDuplicates | None = None,
) -> Selection:
    """Pick up to ``budget`` items of a pool of N (see the module docstring).

    ``probs``: ``(N, C)`` class probabilities (None without a classifier); ``uncertainty``: ``(N,)`` in
    [0, 1] instead of ``probs`` (detection, segmentation: per image or region); ``embeddings``: ``(N, D)``
    (a classifier's penultimate features for ``badge``); ``labelled_embeddings``: ``(M, D)`` of the items
    already labelled (None or empty: none); ``dedup``: the near-duplicate cosine threshold on the embeddings
    (None: off); ``near_duplicates``: another near-duplicate rule, used instead of ``dedup``.
    A budget above N picks all N (callers say so).
    """
    if strategy not in STRATEGIES:
        raise InvalidInput(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 1:
        raise InvalidInput(f"budget must be a whole number ≥ 1, got {budget!r}")
    if dedup is not None and not (0.0 < dedup <= 1.0):
        raise InvalidInput(f"dedup must be a cosine similarity in (0, 1], got {dedup!r}")
    n = _pool_size(probs, embeddings, uncertainty)
    p = _probs(probs) if probs is not None else None
    emb = _matrix(embeddings, "embeddings", n) if embeddings is not None else None
    lab = _labelled(labelled_embeddings, emb)
    u: np.ndarray | None
    if uncertainty is not None:
        u = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
        if len(u) != n or not np.all(np.isfinite(u)):
            raise InvalidInput(f"uncertainty must be {n} finite values, got {len(u)}")
        u = np.clip(u, 0.0, 1.0)
    elif p is not None:
        method = strategy if strategy in UNCERTAINTY_STRATEGIES else "margin"
        u = uncertainty_scores(p, method)
    else:
        u = None
    if strategy in UNCERTAINTY_STRATEGIES and u is None:
        raise InvalidInput(f"strategy {strategy} needs class probabilities or per-item uncertainty (a model)")
    if strategy in ("coreset", "hybrid") and emb is None:
        raise InvalidInput(f"strategy {strategy} needs embeddings of the pool")
    if strategy == "hybrid" and u is None:
        raise InvalidInput("strategy hybrid needs class probabilities or per-item uncertainty (a model)")
    if strategy == "badge" and (p is None or emb is None or p.shape[1] < 2):
        raise InvalidInput("strategy badge needs a classifier's probabilities (≥ 2 classes) and penultimate features")
    budget = min(int(budget), n)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Selection(strategy, empty, np.zeros(0), None if u is None else np.zeros(0))
    rng = np.random.default_rng(seed)
    dup: _Dedup | None = None
    if near_duplicates is not None:
        nd = near_duplicates
        vectors = _matrix(nd.pool, "near-duplicate vectors", n)
        others = _labelled(nd.labelled, vectors) if nd.labelled is not None else np.zeros((0, vectors.shape[1]))
        dup = _Dedup(vectors, others, nd.threshold, centre=nd.centre)
    elif emb is not None and dedup is not None:
        dup = _Dedup(emb, lab, dedup)
    picks: list[int]
    scores: list[float]
    if strategy in UNCERTAINTY_STRATEGIES:
        assert u is not None
        picks, scores = _ranked(u, budget, dup)
    elif strategy == "random":
        picks, scores = _ranked(np.zeros(n), budget, dup, order=rng.permutation(n))
    elif strategy == "coreset":
        assert emb is not None
        picks, scores = _k_center(emb, lab, budget, dup, rng)
    elif strategy == "hybrid":
        assert emb is not None and u is not None
        picks, scores = _hybrid(emb, u, budget, dup, rng)
    else:
        assert p is not None and emb is not None
        picks, scores = _badge(p, emb, budget, dup, rng)
    idx = np.asarray(picks, dtype=np.int64)
    return Selection(
        strategy,
        idx,
        np.asarray(scores, dtype=np.float64),
        None if u is None else u[idx],
        dup.skipped if dup is not None else 0,
    )


# -- checks ------------------------------------------------------------------------------------------------
def _probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 1:
        raise InvalidInput(f"class probabilities must be (N, C), got shape {p.shape}")
    if not np.all(np.isfinite(p)) or (p.size and (p.min() < 0 or p.max() > 1 + 1e-6)):
        raise InvalidInput("class probabilities must be finite numbers in [0, 1]")
    return p


def _matrix(values: np.ndarray, name: str, n: int) -> np.ndarray:
    m = np.asarray(values, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != n or m.shape[1] < 1:
        raise InvalidInput(f"{name} must be ({n}, D), got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise InvalidInput(f"{name} must be finite numbers")
    return m


def _pool_size(probs: np.ndarray | None, embeddings: np.ndarray | None, uncertainty: np.ndarray | None) -> int:
    sizes = {len(a) for a in (probs, embeddings, uncertainty) if a is not None}
    if not sizes:
        raise InvalidInput("give the pool's class probabilities, uncertainty or embeddings")
    if len(sizes) > 1:
        raise InvalidInput(f"probabilities, uncertainty and embeddings disagree on the pool size: {sorted(sizes)}")
    return sizes.pop()


def _labelled(labelled: np.ndarray | None, emb: np.ndarray | None) -> np.ndarray:
    if labelled is None or len(labelled) == 0 or emb is None:
        return np.zeros((0, emb.shape[1] if emb is not None else 1))
    lab = np.asarray(labelled, dtype=np.float64)
    if lab.ndim != 2 or lab.shape[1] != emb.shape[1] or not np.all(np.isfinite(lab)):
        raise InvalidInput(f"labelled embeddings must be finite (M, {emb.shape[1]}), got shape {lab.shape}")
    return lab


# -- near-duplicates ---------------------------------------------------------------------------------------
class _Dedup:
    """Tracks each pool item's highest cosine similarity (centred embeddings) to the labelled items and the
    picks so far; ``ok(i)`` is False for a near-duplicate, counted in ``skipped``."""

    def __init__(self, emb: np.ndarray, lab: np.ndarray, threshold: float, centre: bool = True) -> None:
        mean = np.concatenate([emb, lab]).mean(axis=0) if centre else np.zeros(emb.shape[1])
        self.unit = _unit(emb - mean)
        self.threshold = threshold
        self.best = np.full(len(emb), -np.inf)
        self.skipped = 0
        if len(lab):
            lab_unit = _unit(lab - mean)
            for start in range(0, len(emb), _CHUNK):
                sims = self.unit[start : start + _CHUNK] @ lab_unit.T
                self.best[start : start + _CHUNK] = sims.max(axis=1)

    def ok(self, i: int) -> bool:
        if self.best[i] >= self.threshold:
            self.skipped += 1
            return False
        return True

    def blocked(self) -> np.ndarray:
        return np.asarray(self.best >= self.threshold)

    def add(self, i: int) -> None:
        np.maximum(self.best, self.unit @ self.unit[i], out=self.best)


def _unit(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return np.asarray(m / np.maximum(norms, _EPS))


# -- strategies --------------------------------------------------------------------------------------------
def _ranked(
    score: np.ndarray, budget: int, dup: _Dedup | None, order: np.ndarray | None = None
) -> tuple[list[int], list[float]]:
    """Walk ``order`` (default: highest score first, ties by index) taking items that are no near-duplicate."""
    if order is None:
        order = np.lexsort((np.arange(len(score)), -score))
    picks: list[int] = []
    for i in order:
        i = int(i)
        if dup is not None and not dup.ok(i):
            continue
        picks.append(i)
        if dup is not None:
            dup.add(i)
        if len(picks) == budget:
            break
    return picks, [float(score[i]) for i in picks]


def _sq_dist_to(emb: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``(N,)`` squared Euclidean distance of each row of ``emb`` to its nearest row of ``centres``."""
    out = np.full(len(emb), np.inf)
    if not len(centres):
        return out
    sq = (emb**2).sum(axis=1)
    for start in range(0, len(centres), _CHUNK):
        c = centres[start : start + _CHUNK]
        d = sq[:, None] + (c**2).sum(axis=1)[None, :] - 2.0 * emb @ c.T
        np.minimum(out, d.min(axis=1), out=out)
    return np.asarray(np.maximum(out, 0.0))


def _greedy(
    n: int,
    budget: int,
    dup: _Dedup | None,
    value: Callable[[np.ndarray], np.ndarray],
    update: Callable[[int], None],
    allowed: np.ndarray | None = None,
) -> tuple[list[int], list[float]]:
    """Take, ``budget`` times, the allowed item of highest ``value(taken mask)`` (ties: lowest index),
    skipping near-duplicates; ``update(i)`` after each pick."""
    taken = np.zeros(n, dtype=bool) if allowed is None else ~allowed
    picks: list[int] = []
    scores: list[float] = []
    while len(picks) < budget:
        if dup is not None:
            newly = dup.blocked() & ~taken
            dup.skipped += int(newly.sum())
            taken |= newly
        if taken.all():
            break
        v = np.where(taken, -np.inf, value(taken))
        i = int(np.argmax(v))
        picks.append(i)
        scores.append(float(v[i]))
        taken[i] = True
        if dup is not None:
            dup.add(i)
        update(i)
    return picks, scores


def _k_center(
    emb: np.ndarray, lab: np.ndarray, budget: int, dup: _Dedup | None, rng: np.random.Generator
) -> tuple[list[int], list[float]]:
    """k-center greedy; with nothing labelled the first pick is drawn at random (the seed)."""
    dist = np.sqrt(_sq_dist_to(emb, lab))
    cold = not np.isfinite(dist).any()
    if cold:  # no centre yet: the drawn item scores 0 and wins, every other item waits for a centre
        dist = np.full(len(emb), -1.0)
        dist[int(rng.integers(len(emb)))] = 0.0

    def update(i: int) -> None:
        nonlocal cold
        far = np.linalg.norm(emb - emb[i], axis=1)
        if cold:
            dist[:] = far
            cold = False
        else:
            np.minimum(dist, far, out=dist)

    return _greedy(len(emb), budget, dup, lambda _: dist, update)


def _hybrid(
    emb: np.ndarray, u: np.ndarray, budget: int, dup: _Dedup | None, rng: np.random.Generator
) -> tuple[list[int], list[float]]:
    """Diverse mini-batch selection (Zhdanov 2019): the ``HYBRID_POOL × budget`` most uncertain items that are
    no near-duplicate of a labelled one, k-means (k = budget) weighted by uncertainty, the candidate nearest
    each centre; centres in order of the uncertainty their cluster holds."""
    n = len(emb)
    done = np.zeros(n, dtype=bool)  # picked, or passed over as a near-duplicate
    blocked = dup.blocked() if dup is not None else done.copy()
    order = np.lexsort((np.arange(n), -u))  # walk down by uncertainty until enough candidates are found
    walked = order[: int(np.searchsorted(np.cumsum(~blocked[order]), HYBRID_POOL * budget)) + 1]
    passed = walked[blocked[walked]]
    done[passed] = True
    if dup is not None:
        dup.skipped += len(passed)
    candidates = walked[~blocked[walked]]
    if not len(candidates):
        return [], []
    x = emb[candidates]
    sq = (x**2).sum(axis=1)
    w = u[candidates] + 1e-6  # all-zero uncertainty: plain k-means
    centres, assigned = _weighted_k_means(x, w, min(budget, len(candidates)), rng)
    mass = np.bincount(assigned, weights=w, minlength=len(centres)) / w.sum()
    picks: list[int] = []
    scores: list[float] = []
    for j in np.lexsort((np.arange(len(centres)), -mass)):
        if dup is not None:  # near-duplicates of an earlier pick are passed over
            newly = candidates[dup.blocked()[candidates] & ~done[candidates]]
            dup.skipped += len(newly)
            done[newly] = True
        free = ~done[candidates]
        if not free.any():
            break
        d2 = np.where(free, sq - 2.0 * (x @ centres[j]), np.inf)  # + |centre|²: the same for every row
        i = int(candidates[int(np.argmin(d2))])
        picks.append(i)
        scores.append(float(mass[j]))
        done[i] = True
        if dup is not None:
            dup.add(i)
    if len(picks) < budget:  # near-duplicates used up candidates: the most uncertain of the rest follow
        more, _ = _greedy(n, budget - len(picks), dup, lambda _: u, lambda _: None, ~done)
        picks, scores = picks + more, scores + [0.0] * len(more)
    return picks, scores


def _weighted_k_means(x: np.ndarray, w: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with sample weights ``w`` from a weighted k-means++ seeding (≤ ``HYBRID_ITERS`` rounds,
    stops when no item changes cluster): the centres ``(k, D)`` and each row's cluster."""
    sq = (x**2).sum(axis=1)
    first = int(rng.choice(len(x), p=w / w.sum()))
    seeds = [first]
    d2 = np.maximum(sq + sq[first] - 2.0 * (x @ x[first]), 0.0)
    for _ in range(1, k):
        p = w * d2
        if p.sum() > _EPS:
            i = int(rng.choice(len(x), p=p / p.sum()))
        else:  # every row sits on a seed (identical rows): the first unused one
            i = int(np.flatnonzero(~np.isin(np.arange(len(x)), seeds))[0])
        seeds.append(i)
        np.minimum(d2, np.maximum(sq + sq[i] - 2.0 * (x @ x[i]), 0.0), out=d2)
    centres = x[seeds].copy()
    assigned = _nearest_centre(x, centres)
    for _ in range(HYBRID_ITERS):
        mass = np.bincount(assigned, weights=w, minlength=k)
        order = np.argsort(assigned, kind="stable")
        present, starts = np.unique(assigned[order], return_index=True)
        sums = np.zeros_like(centres)
        sums[present] = np.add.reduceat((w[:, None] * x)[order], starts, axis=0)
        filled = mass > 0  # an emptied cluster keeps its centre
        centres[filled] = sums[filled] / mass[filled, None]
        new = _nearest_centre(x, centres)
        if np.array_equal(new, assigned):
            break
        assigned = new
    return centres, assigned


def _nearest_centre(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Each row's nearest centre (ties: the lower index), ``_CHUNK``-bounded blocks of the distance matrix."""
    out = np.empty(len(x), dtype=np.int64)
    sq_c = (centres**2).sum(axis=1)
    rows = max(1, _CHUNK * _CHUNK // max(1, len(centres)))
    for start in range(0, len(x), rows):
        block = x[start : start + rows]
        out[start : start + rows] = np.argmin(sq_c[None, :] - 2.0 * block @ centres.T, axis=1)
    return out


def _badge(
    p: np.ndarray, h: np.ndarray, budget: int, dup: _Dedup | None, rng: np.random.Generator
) -> tuple[list[int], list[float]]:
    """k-means++ seeding on ``g_i = (p_i − e_{argmax p_i}) ⊗ h_i``; ``|g_i − g_j|² = |a_i|²|h_i|² + |a_j|²|h_j|²
    − 2 (a_i·a_j)(h_i·h_j)`` with ``a = p − onehot``, so no ``C·D`` vector is formed."""
    n = len(p)
    a = p.copy()
    a[np.arange(n), np.argmax(p, axis=1)] -= 1.0
    norm2 = (a**2).sum(axis=1) * (h**2).sum(axis=1)
    d2 = norm2.copy()  # the first pick: the longest gradient (deterministic), then D² sampling
    picks: list[int] = []
    scores: list[float] = []
    taken = np.zeros(n, dtype=bool)
    while len(picks) < budget:
        if dup is not None:
            newly = dup.blocked() & ~taken
            dup.skipped += int(newly.sum())
            taken |= newly
        if taken.all():
            break
        w = np.where(taken, 0.0, np.maximum(d2, 0.0))
        if not picks:
            i = int(np.argmax(np.where(taken, -np.inf, norm2)))
        elif w.sum() <= _EPS:  # every remaining item sits on a centre: take them in index order
            i = int(np.argmin(taken))
        else:
            i = int(rng.choice(n, p=w / w.sum()))
        picks.append(i)
        scores.append(float(norm2[i] if len(picks) == 1 else d2[i]))
        taken[i] = True
        if dup is not None:
            dup.add(i)
        dist = norm2 + norm2[i] - 2.0 * (a @ a[i]) * (h @ h[i])
        np.minimum(d2, np.maximum(dist, 0.0), out=d2)
    return picks, scores
