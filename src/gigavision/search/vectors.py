"""FAISS indexes of unit vectors (inner product = cosine): exact while small, IVF with 8-bit codes beyond.

- **Exact** (``IndexFlatIP``) up to ``FLAT_MAX`` vectors: every query is scored against every vector, which
  BLAS does fast enough at that size (benchmarks/bench_search.py measures it) and is never wrong.
- **IVF-SQ8** beyond: k-means cells (``nlist ≈ 4·√n``) with each vector stored as 8-bit scalar codes (a
  quarter of float32's memory; the codes lose almost nothing on cosine ranking, unlike product
  quantisation: IVF-PQ with 32 or 64 sub-quantisers reached recall@10 0.84-0.87 on the benchmark's 200,000
  vectors even visiting 128 cells, short of 0.95 without a full-precision re-ranking copy). How many
  cells a query visits (``nprobe``) is **chosen from the data**: the smallest power of two whose recall@10
  against exact search, on a sample of the indexed vectors as queries, reaches ``TARGET_RECALL``.

An exact index that grows past ``FLAT_MAX`` (``index add``) is rebuilt as IVF from its own vectors.
Filtered searches (a dataset version, a label, a metadata value) pass the allowed ids to FAISS
(``IDSelectorBatch``), so the k results are the k best *allowed* ones, not a filtered top-k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gigavision.errors import InvalidInput

FLAT_MAX = 20_000  # exact search up to this many vectors (a one-query scan of 100k x 512 took 45 ms here)
TARGET_RECALL = 0.97  # recall@10 against exact search that nprobe is tuned to (the claim is 0.95)
TUNE_QUERIES = 500  # indexed vectors used as queries to tune nprobe
TRAIN_PER_CELL = 64  # k-means training vectors per IVF cell (FAISS warns under 39)


def _faiss() -> Any:
    from gigavision.extras import require

    require("search", "faiss", feature="embedding indexes")
    import faiss

    return faiss


@dataclass
class IndexParams:
    """How an index is built: ``kind`` ``flat`` or ``ivf-sq8``, and the IVF's cells and probes."""

    kind: str = "flat"
    nlist: int | None = None
    nprobe: int | None = None
    trained_on: int | None = None
    tuned_recall: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for key in ("nlist", "nprobe", "trained_on", "tuned_recall"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexParams:
        return cls(
            kind=str(data.get("kind", "flat")),
            nlist=data.get("nlist"),
            nprobe=data.get("nprobe"),
            trained_on=data.get("trained_on"),
            tuned_recall=data.get("tuned_recall"),
        )


def as_matrix(vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    """``vectors`` as a C-contiguous ``(N, D)`` float32 matrix (what FAISS takes), checked against ``dim``."""
    arr = np.asarray(vectors, dtype=np.float32)
    out = np.ascontiguousarray(arr.reshape(len(arr), -1 if len(arr) else (dim or 0)))
    if dim is not None and len(out) and out.shape[1] != dim:
        raise InvalidInput(f"vectors have {out.shape[1]} dimensions, the index holds {dim}")
    if not np.isfinite(out).all():
        raise InvalidInput("vectors hold NaN or infinite values")
    return out


def new_flat(dim: int) -> Any:
    return _faiss().IndexFlatIP(int(dim))


def nlist_for(n: int) -> int:
    """IVF cells for ``n`` vectors: about 4·√n (FAISS's guideline), 16 to 4096, and at most n / 39."""
    return int(max(16, min(4096, round(4 * math.sqrt(n)), n // 39)))


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids of the exact top ``k`` of each query (the ground truth recall is measured against)."""
    flat = new_flat(vectors.shape[1])
    flat.add(vectors)
    _, ids = flat.search(queries, k)
    return np.asarray(ids)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true top-k found in its returned top-k."""
    k = truth.shape[1]
    hits = sum(len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) for f, t in zip(found, truth, strict=True))
    return float(hits / max(1, (truth >= 0).sum())) if k else 1.0


def build_ivf(vectors: np.ndarray, *, seed: int = 0, target: float = TARGET_RECALL) -> tuple[Any, IndexParams]:
    """An IVF-SQ8 index of ``vectors`` with ``nprobe`` tuned on the data (module docstring)."""
    faiss = _faiss()
    x = as_matrix(vectors)
    n, dim = x.shape
    nlist = nlist_for(n)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    rng = np.random.default_rng(seed)
    train = x[np.sort(rng.choice(n, min(n, nlist * TRAIN_PER_CELL), replace=False))]
    index.cp.seed = seed
    index.train(train)
    index.add(x)
    queries = x[np.sort(rng.choice(n, min(n, TUNE_QUERIES), replace=False))]
    truth = exact_neighbours(x, queries, 10)
    nprobe, recall = 1, 0.0
    while True:
        index.nprobe = nprobe
        _, found = index.search(queries, 10)
        recall = recall_at(np.asarray(found), truth)
        if recall >= target or nprobe >= nlist:
            break
        nprobe = min(nlist, nprobe * 2)
    params = IndexParams("ivf-sq8", nlist=nlist, nprobe=nprobe, trained_on=n, tuned_recall=round(recall, 4))
    return index, params


def build(vectors: np.ndarray, dim: int, *, flat_max: int = FLAT_MAX) -> tuple[Any, IndexParams]:
    """The index for ``vectors``: exact up to ``flat_max``, else IVF-SQ8 (tuned)."""
    x = as_matrix(vectors, dim)
    if len(x) <= flat_max:
        index = new_flat(dim)
        if len(x):
            index.add(x)
        return index, IndexParams("flat")
    return build_ivf(x)


def add(index: Any, params: IndexParams, vectors: np.ndarray, *, flat_max: int = FLAT_MAX) -> tuple[Any, IndexParams]:
    """``index`` with ``vectors`` appended (ids continue from ``index.ntotal``); an exact index that grows past
    ``flat_max`` is rebuilt as IVF from its own vectors and the new ones, keeping every id."""
    x = as_matrix(vectors, int(index.d))
    if not len(x):
        return index, params
    if params.kind == "flat" and index.ntotal + len(x) > flat_max:
        old = index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, index.d), np.float32)
        return build_ivf(np.concatenate([old, x]))
    index.add(x)
    return index, params


def search(
    index: Any, params: IndexParams, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) ``(Q, k)`` of the ``k`` best entries per query (id −1: fewer than k exist or are allowed).

    ``allowed``: entry ids a result may have (None: any).
    """
    faiss = _faiss()
    q = as_matrix(queries, int(index.d))
    k = int(k)
    if k < 1:
        raise InvalidInput(f"k must be at least 1, got {k}")
    if index.ntotal == 0 or (allowed is not None and len(allowed) == 0):
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    k = min(k, int(index.ntotal) if allowed is None else len(allowed))
    selector = None if allowed is None else faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
    if params.kind == "flat":
        sp = faiss.SearchParameters(sel=selector) if selector is not None else None
    else:
        sp = faiss.SearchParametersIVF(sel=selector, nprobe=int(params.nprobe or 1))
    scores, ids = index.search(q, k, params=sp) if sp is not None else index.search(q, k)
    return np.asarray(scores), np.asarray(ids)


def write(index: Any, path: Path) -> None:
    _faiss().write_index(index, str(path))


def read(path: Path) -> Any:
    return _faiss().read_index(str(path))


def vectors_of(index: Any) -> np.ndarray:
    """Every stored vector ``(N, D)`` (an IVF-SQ8's are decoded from their 8-bit codes)."""
    if index.ntotal == 0:
        return np.zeros((0, index.d), np.float32)
    if hasattr(index, "make_direct_map"):
        index.make_direct_map()
    return np.asarray(index.reconstruct_n(0, index.ntotal))
