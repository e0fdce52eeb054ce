"""Cross-tile merge: one answer per object after a detector has run window by window over a big image.

Overlapping windows see an object near a window border twice (two whole copies) or in pieces (an object
cut by the border of 2-4 windows). A merge strategy, picked by name from ``MERGERS``, turns those
predictions into one row per object:

``ios``       greedy non-maximum *merging* by intersection over the smaller area, IoS (SAHI's GREEDYNMM
              with IOS, extended for cut objects): from the best unmerged box in score order, the boxes
              whose IoS with it is ``>= threshold`` join (SAHI's rule); then boxes overlapping a member
              join when their IoS with the union box of that first group is ``>= threshold``. The second
              step joins the far pieces of an object cut at a window corner, which share no area with the
              best piece; as that union box does not keep growing, a crowd cannot snowball into one
              group. The output box is the union of all members, the score the best member's. **Use for
              objects cut by window borders.** Pieces must overlap, so windows must: an object much
              wider than the overlap is cut into pieces that share too little of themselves and may stay
              apart (make the overlap about the size of the objects, as SAHI advises).
``nms``       greedy non-maximum suppression by IoU (``> threshold`` suppresses), the same rows and order
              as ``torchvision.ops.batched_nms``. **Use for whole duplicates** (the overlap is at least as
              wide as the objects, so every object is seen whole by some window).
``soft_nms``  Gaussian soft-NMS (Bodla et al. 2017): instead of removing, each box's score is multiplied by
              ``exp(-IoU² / sigma)`` for every higher-scoring box selected before it; rows whose score falls
              below ``score_floor`` are dropped. ``threshold`` is unused (the Gaussian decay has none).
              **Use for crowded scenes** where true neighbours overlap and hard NMS would drop them.
``wbf``       weighted boxes fusion (Solovyev et al., the ``ensemble_boxes`` reference with one model): in
              score order each box joins the cluster whose running fused box it overlaps most by IoU
              (``> threshold``), else starts one; the fused box is the score-weighted mean of the members,
              its score their mean score (``conf_type="avg"``; with one model the reference's
              ``min(count, n_models) / n_models`` factor is 1). **Use for ensembles and test-time
              augmentation**, where every member is a whole-object estimate worth averaging.
``none``      every row kept as it is (to measure what merging changes).

Everything is NumPy: candidate pairs come from a uniform grid (``overlapping_pairs``), never an N×N matrix.
No strategy lets one cluster of overlapping boxes affect another, so lone boxes and lone pairs (most of them
after tiling) are settled with array operations and the greedy loops run only over larger clusters: 100k
boxes merge in a fraction of a second.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.boxes import box_area, iou_of, suppress
from gigavision.errors import InvalidInput
from gigavision.registry import Registry

if TYPE_CHECKING:
    from gigavision.annotations import Annotations

SPATIAL_KINDS = ("box", "polygon", "mask")


@dataclass(frozen=True)
class Merged:
    """The result of ``merge_boxes``: M output rows (highest output score first) and where each input went."""

    xyxy: np.ndarray  # (M, 4) float64 output boxes
    scores: np.ndarray  # (M,) float64 output scores
    labels: np.ndarray  # (M,) the representative's label, same dtype as the input labels
    group: np.ndarray  # (N,) int64 output row each input row went into; -1 when dropped (soft_nms below floor)
    keep: np.ndarray  # (M,) int64 input row representing each output (the highest-scoring member)

    def __len__(self) -> int:
        return len(self.keep)


@dataclass(frozen=True)
class MergeOptions:
    """Numbers a strategy may use (validated by ``merge_boxes``)."""

    threshold: float = 0.5
    sigma: float = 0.5
    score_floor: float = 1e-3


@dataclass(frozen=True)
class Candidates:
    """What every strategy starts from: boxes, the score order, and the pairs that overlap with positive area.

    ``i``/``j`` hold each overlapping pair once with ``rank[i] < rank[j]`` (``i`` scores higher; ties are broken
    by input row, as a stable sort does), ``inter`` the area they share. Boxes of different classes never pair
    when merging per class. ``size`` is the number of rows in each row's connected component of the pair graph:
    no strategy lets one component affect another, so components of one or two rows (most of them, after
    tiling) are solved with array operations and only the larger ones go through a greedy loop.
    """

    xyxy: np.ndarray
    scores: np.ndarray
    area: np.ndarray
    order: np.ndarray  # input rows by descending score
    rank: np.ndarray  # rank[row] = position of row in order
    i: np.ndarray
    j: np.ndarray
    inter: np.ndarray
    size: np.ndarray

    @classmethod
    def build(cls, xyxy: np.ndarray, scores: np.ndarray, codes: np.ndarray | None, pairs: bool = True) -> Candidates:
        """Rank the rows by score and find the overlapping pairs (only among equal ``codes`` when given)."""
        n = len(scores)
        order = np.argsort(-scores, kind="stable")
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        none = np.zeros(0, dtype=np.int64)
        i, j, inter = overlapping_pairs(xyxy, codes) if pairs else (none, none, np.zeros(0))
        swap = rank[i] > rank[j]
        i, j = np.where(swap, j, i), np.where(swap, i, j)
        area = box_area(xyxy)
        root = _components(n, i, j)
        size = np.bincount(root, minlength=n)[root]
        return cls(xyxy=xyxy, scores=scores, area=area, order=order, rank=rank, i=i, j=j, inter=inter, size=size)

    def subset(self, rows: np.ndarray) -> Candidates:
        """The same problem restricted to ``rows`` (sorted; whole components), renumbered from 0."""
        local = np.full(len(self.scores), -1, dtype=np.int64)
        local[rows] = np.arange(len(rows))
        inside = local[self.i] >= 0
        order = np.argsort(self.rank[rows], kind="stable")
        rank = np.empty(len(rows), dtype=np.int64)
        rank[order] = np.arange(len(rows))
        return Candidates(
            xyxy=self.xyxy[rows],
            scores=self.scores[rows],
            area=self.area[rows],
            order=order,
            rank=rank,
            i=local[self.i[inside]],
            j=local[self.j[inside]],
            inter=self.inter[inside],
            size=self.size[rows],
        )

    def iou(self) -> np.ndarray:
        """IoU of each pair (``boxes.iou_of``: torchvision's arithmetic)."""
        return iou_of(self.inter, self.area[self.i], self.area[self.j])

    def adjacency(
        self, keep: np.ndarray | None = None, *, values: np.ndarray | None = None
    ) -> tuple[list[int], list[int], list[float]]:
        """CSR lists ``(indptr, neighbours, values)`` over input rows, each row's neighbours in rank order.

        ``keep`` selects pairs; ``values`` (one per pair, e.g. IoU) are listed alongside the neighbours (empty
        when not given).
        """
        i, j = (self.i, self.j) if keep is None else (self.i[keep], self.j[keep])
        src, dst = np.r_[i, j], np.r_[j, i]
        by = np.lexsort((self.rank[dst], src))
        indptr = np.zeros(len(self.scores) + 1, dtype=np.int64)
        np.cumsum(np.bincount(src, minlength=len(self.scores)), out=indptr[1:])
        vals: list[float] = []
        if values is not None:
            v = values if keep is None else values[keep]
            vals = np.r_[v, v][by].tolist()
        return indptr.tolist(), dst[by].tolist(), vals


def _components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected components of the graph with edges ``(i, j)``: each node's root (hook to the smaller root, jump)."""
    parent = np.arange(n)
    while True:
        pi, pj = parent[i], parent[j]
        apart = pi != pj
        if not apart.any():
            return parent
        np.minimum.at(parent, np.maximum(pi[apart], pj[apart]), np.minimum(pi[apart], pj[apart]))
        while True:  # point every node at its root
            up = parent[parent]
            if np.array_equal(up, parent):
                break
            parent = up


# A strategy returns, over the N input rows: group, the representative row each row went into (-1 when
# dropped; a representative is its own), and the output box and score of each representative (other rows'
# entries are ignored). merge_boxes turns the representatives into output rows, highest score first.
Result = tuple[np.ndarray, np.ndarray, np.ndarray]
MergeFn = Callable[[Candidates, "MergeOptions"], Result]


@dataclass(frozen=True)
class MergeStrategy:
    """One entry of ``MERGERS``. ``fuses``: output geometry is built from several inputs (not one input's)."""

    name: str
    summary: str
    fuses: bool
    run: MergeFn
    pairs: bool = True  # needs the overlapping pairs


MERGERS: Registry[MergeStrategy] = Registry("merge method")


def register_merger(name: str, summary: str, *, fuses: bool, pairs: bool = True) -> Callable[[MergeFn], MergeFn]:
    """Add a strategy to ``MERGERS`` under ``name`` (the string ``merge_boxes(method=...)`` takes)."""

    def add(fn: MergeFn) -> MergeFn:
        MERGERS.add(name, MergeStrategy(name=name, summary=summary, fuses=fuses, run=fn, pairs=pairs))
        return fn

    return add


# -- candidate pairs -----------------------------------------------------------------------------------------
def overlapping_pairs(
    xyxy: np.ndarray, codes: np.ndarray | None = None, *, chunk: int = 1 << 22
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of boxes whose intersection has positive area: ``(i, j, inter)`` with ``i < j``.

    Boxes go into the cells of a uniform grid (cell ≈ twice the median box side, never under 1/64 of the
    largest side, so no box covers more than 65² cells); pairs are formed only inside a cell and reported
    only by the cell holding their intersection's top-left corner, so each pair comes once without a sort.
    ``codes`` (N,) int: only boxes with equal codes pair (per-class merging). Work and memory grow with the
    number of boxes sharing a cell, not N²; ``chunk`` bounds the candidate pairs held at once.
    """
    empty = np.zeros(0, dtype=np.int64)
    w, h = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    live = np.flatnonzero((w > 0) & (h > 0))  # a box without area shares none
    if len(live) < 2:
        return empty, empty.copy(), np.zeros(0)
    b = xyxy[live]
    side = np.maximum(w[live], h[live])
    cell = max(2.0 * float(np.median(side)), float(side.max()) / 64.0)
    ox, oy = float(b[:, 0].min()), float(b[:, 1].min())
    cx0, cy0 = np.floor((b[:, 0] - ox) / cell).astype(np.int64), np.floor((b[:, 1] - oy) / cell).astype(np.int64)
    cx1, cy1 = np.floor((b[:, 2] - ox) / cell).astype(np.int64), np.floor((b[:, 3] - oy) / cell).astype(np.int64)
    ncols, nrows = int(cx1.max()) + 1, int(cy1.max()) + 1
    nx, ny = cx1 - cx0 + 1, cy1 - cy0 + 1
    per_box = nx * ny
    box = np.repeat(np.arange(len(live)), per_box)  # one entry per (box, cell it covers)
    k = np.arange(len(box)) - np.repeat(np.cumsum(per_box) - per_box, per_box)
    ex, ey = cx0[box] + k % nx[box], cy0[box] + k // nx[box]
    cell_id = ey * ncols + ex
    if codes is None:
        srt = np.argsort(cell_id, kind="stable")
        key = cell_id[srt]
    else:
        code = np.unique(np.asarray(codes)[live], return_inverse=True)[1].astype(np.int64)[box]
        if (int(code.max()) + 1) * ncols * nrows < 2**62:
            key_all = code * (ncols * nrows) + cell_id
            srt = np.argsort(key_all, kind="stable")
            key = key_all[srt]
        else:  # astronomically many cells: sort on both columns instead of one packed key
            srt = np.lexsort((cell_id, code))
            key = np.unique(np.c_[code[srt], cell_id[srt]], axis=0, return_inverse=True)[1].ravel()
    box, ex, ey = box[srt], ex[srt], ey[srt]
    first = np.r_[True, key[1:] != key[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(key)]
    after = ends[np.cumsum(first) - 1] - np.arange(len(key)) - 1  # entries after each one in its cell

    out_i, out_j, out_inter = [], [], []
    total = np.cumsum(after)
    lo = 0
    while lo < len(key):  # positions [lo, hi) whose pairs fit in one chunk
        hi = max(lo + 1, int(np.searchsorted(total, (total[lo - 1] if lo else 0) + chunk, side="right")))
        cnt = after[lo:hi]
        a = np.repeat(np.arange(lo, hi), cnt)
        if len(a) == 0:
            lo = hi
            continue
        c = np.repeat(np.cumsum(cnt) - cnt, cnt)
        bb = a + 1 + (np.arange(len(a)) - c)
        ia, ib = box[a], box[bb]
        mx, my = np.maximum(b[ia, 0], b[ib, 0]), np.maximum(b[ia, 1], b[ib, 1])
        iw = np.minimum(b[ia, 2], b[ib, 2]) - mx
        ih = np.minimum(b[ia, 3], b[ib, 3]) - my
        ok = (iw > 0) & (ih > 0)
        ok &= np.floor((mx - ox) / cell).astype(np.int64) == ex[a]  # report a pair in one cell only
        ok &= np.floor((my - oy) / cell).astype(np.int64) == ey[a]
        ia, ib = live[ia[ok]], live[ib[ok]]
        out_i.append(np.minimum(ia, ib))
        out_j.append(np.maximum(ia, ib))
        out_inter.append(iw[ok] * ih[ok])
        lo = hi
    if not out_i:
        return empty, empty.copy(), np.zeros(0)
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_inter)


# -- strategies ----------------------------------------------------------------------------------------------
def _by_component(
    c: Candidates,
    opt: MergeOptions,
    pairwise: Callable[[Candidates, MergeOptions, np.ndarray, Result], None],
    greedy: MergeFn,
) -> Result:
    """Solve two-row components with ``pairwise`` (arrays, in place), larger ones with ``greedy`` (a loop).

    ``pairwise`` gets the pairs whose component is just that pair; ``greedy`` is the whole strategy and gives
    the same answer on any input, only slower; it runs on the rows of the larger components.
    """
    n = len(c.scores)
    out: Result = (np.arange(n), c.xyxy.copy(), c.scores.astype(np.float64))
    pairwise(c, opt, c.size[c.i] == 2, out)
    big = np.flatnonzero(c.size >= 3)
    if len(big):
        group, box, score = greedy(c.subset(big), opt)
        out[0][big] = np.where(group >= 0, big[np.maximum(group, 0)], -1)
        out[1][big], out[2][big] = box, score
    return out


@register_merger("none", "keep every row", fuses=False, pairs=False)
def _keep_all(c: Candidates, opt: MergeOptions) -> Result:
    return np.arange(len(c.scores)), c.xyxy, c.scores


@register_merger("nms", "greedy non-maximum suppression by IoU (torchvision batched_nms)", fuses=False)
def _nms(c: Candidates, opt: MergeOptions) -> Result:
    """Greedy NMS (``boxes.suppress``) over the pairs above the threshold only; a suppressed row's group is the
    row suppressing it."""
    over = c.iou() > opt.threshold
    return suppress(c.rank, c.i[over], c.j[over]), c.xyxy, c.scores


def _soft_nms_pairwise(c: Candidates, opt: MergeOptions, two: np.ndarray, out: Result) -> None:
    group, _, score = out
    a, b = c.i[two], c.j[two]
    decay = np.exp(-(c.iou()[two] ** 2) / opt.sigma)
    score[b] = np.where(score[a] >= opt.score_floor, score[b] * decay, score[b])
    group[(c.size <= 2) & (score < opt.score_floor)] = -1


def _soft_nms_greedy(c: Candidates, opt: MergeOptions) -> Result:
    """Bodla et al.: select the highest current score, decay its unselected neighbours, repeat (lazy heap)."""
    n = len(c.scores)
    indptr, nbrs, ious = c.adjacency(values=c.iou())
    score = c.scores.astype(np.float64).tolist()
    rank = c.rank.tolist()
    alive = [s >= opt.score_floor for s in score]  # neither selected nor dropped yet
    heap = [(-score[r], rank[r], r) for r in range(n) if alive[r]]
    heapq.heapify(heap)
    group = np.full(n, -1, dtype=np.int64)
    while heap:
        neg, _, r = heapq.heappop(heap)
        if not alive[r] or -neg != score[r]:
            continue  # stale entry: the row was selected, dropped or decayed since
        alive[r] = False
        group[r] = r
        for e in range(indptr[r], indptr[r + 1]):
            q = nbrs[e]
            if alive[q]:
                score[q] *= math.exp(-ious[e] * ious[e] / opt.sigma)
                if score[q] < opt.score_floor:
                    alive[q] = False
                else:
                    heapq.heappush(heap, (-score[q], rank[q], q))
    return group, c.xyxy, np.asarray(score, dtype=np.float64)


@register_merger("soft_nms", "Gaussian soft-NMS: decay overlapping scores by exp(-IoU²/sigma)", fuses=False)
def _soft_nms(c: Candidates, opt: MergeOptions) -> Result:
    return _by_component(c, opt, _soft_nms_pairwise, _soft_nms_greedy)


def _ios_pairwise(c: Candidates, opt: MergeOptions, two: np.ndarray, out: Result) -> None:
    group, box, _ = out
    a, b = c.i[two], c.j[two]
    join = c.inter[two] >= opt.threshold * np.minimum(c.area[a], c.area[b])
    a, b = a[join], b[join]
    group[b] = a
    box[a] = np.c_[np.minimum(box[a, :2], box[b, :2]), np.maximum(box[a, 2:], box[b, 2:])]


def _ios_greedy(c: Candidates, opt: MergeOptions) -> Result:
    """From the best unmerged box r in score order: boxes with IoS(r, box) ≥ threshold join (SAHI's rule), then
    boxes linked to a member by overlap join when their IoS with the union box of r and those first joiners is
    ≥ threshold. That union box stops growing after the first step, so a crowd cannot snowball into one group.
    """
    n = len(c.scores)
    indptr, nbrs, _ = c.adjacency()
    boxes: list[list[float]] = c.xyxy.tolist()
    area: list[float] = c.area.tolist()
    owner = [-1] * n
    fused = c.xyxy.copy()
    thr = opt.threshold

    def ios(b: list[float], b_area: float, q: int) -> bool:
        qx0, qy0, qx1, qy1 = boxes[q]
        iw = min(b[2], qx1) - max(b[0], qx0)
        ih = min(b[3], qy1) - max(b[1], qy0)
        return iw > 0 and ih > 0 and iw * ih >= thr * min(b_area, area[q])

    for r in c.order.tolist():
        if owner[r] >= 0:
            continue
        owner[r] = r
        members = [r] + [q for q in nbrs[indptr[r] : indptr[r + 1]] if owner[q] < 0 and ios(boxes[r], area[r], q)]
        group = np.asarray(members)
        union = [*c.xyxy[group, :2].min(0).tolist(), *c.xyxy[group, 2:].max(0).tolist()]
        union_area = (union[2] - union[0]) * (union[3] - union[1])
        for q in members:
            owner[q] = r
        todo = members.copy()
        while todo:  # walk the overlap graph from the members; take what lies in the union box
            p = todo.pop()
            for q in nbrs[indptr[p] : indptr[p + 1]]:
                if owner[q] < 0 and ios(union, union_area, q):
                    owner[q] = r
                    members.append(q)
                    todo.append(q)
        if len(members) > 1:
            group = np.asarray(members)
            fused[r] = [*c.xyxy[group, :2].min(0), *c.xyxy[group, 2:].max(0)]
    return np.asarray(owner, dtype=np.int64), fused, c.scores


@register_merger("ios", "greedy merging by intersection over smaller area into the union box", fuses=True)
def _ios(c: Candidates, opt: MergeOptions) -> Result:
    return _by_component(c, opt, _ios_pairwise, _ios_greedy)


def _wbf_pairwise(c: Candidates, opt: MergeOptions, two: np.ndarray, out: Result) -> None:
    group, box, score = out
    a, b = c.i[two], c.j[two]
    join = c.iou()[two] > opt.threshold
    a, b = a[join], b[join]
    sa, sb = c.scores[a], c.scores[b]
    total = sa + sb
    group[b] = a
    fused = (sa[:, None] * c.xyxy[a] + sb[:, None] * c.xyxy[b]) / np.where(total > 0, total, 1.0)[:, None]
    box[a] = np.where((total > 0)[:, None], fused, c.xyxy[a])
    score[a] = total / 2


def _wbf_greedy(c: Candidates, opt: MergeOptions) -> Result:
    """ensemble_boxes' WBF with one model; clusters are looked for among those holding an overlapping box."""
    n = len(c.scores)
    indptr, nbrs, _ = c.adjacency()
    boxes = c.xyxy.tolist()
    score = c.scores.tolist()
    rank = c.rank.tolist()
    owner = [-1] * n  # cluster of each processed row, named by its first (highest-scoring) row
    sums: dict[int, list[float]] = {}  # cluster -> [Σs·x0, Σs·y0, Σs·x1, Σs·y1, Σs, count]
    fused: dict[int, list[float]] = {}
    thr = opt.threshold
    for r in c.order.tolist():
        x0, y0, x1, y1 = boxes[r]
        s = score[r]
        best, best_iou = -1, thr
        for k in sorted({owner[q] for q in nbrs[indptr[r] : indptr[r + 1]] if owner[q] >= 0}, key=rank.__getitem__):
            f0, f1, f2, f3 = fused[k]
            iw = min(f2, x1) - max(f0, x0)
            ih = min(f3, y1) - max(f1, y0)
            if iw <= 0 or ih <= 0:
                continue
            inter = iw * ih
            o = inter / ((f2 - f0) * (f3 - f1) + (x1 - x0) * (y1 - y0) - inter)
            if o > best_iou:  # the earliest cluster wins ties, as argmax over the reference's list does
                best, best_iou = k, o
        if best < 0:
            owner[r] = r
            sums[r] = [s * x0, s * y0, s * x1, s * y1, s, 1.0]
            fused[r] = [x0, y0, x1, y1]
            continue
        owner[r] = best
        acc = sums[best]
        for t, v in enumerate((s * x0, s * y0, s * x1, s * y1, s, 1.0)):
            acc[t] += v
        if acc[4] > 0:
            fused[best] = [acc[0] / acc[4], acc[1] / acc[4], acc[2] / acc[4], acc[3] / acc[4]]
    out_box = c.xyxy.copy()
    out_score = c.scores.astype(np.float64)
    for k, acc in sums.items():
        if acc[5] > 1:
            out_box[k] = fused[k]
            out_score[k] = acc[4] / acc[5]
    return np.asarray(owner, dtype=np.int64), out_box, out_score


@register_merger("wbf", "weighted boxes fusion: score-weighted mean box, mean score", fuses=True)
def _wbf(c: Candidates, opt: MergeOptions) -> Result:
    return _by_component(c, opt, _wbf_pairwise, _wbf_greedy)


# -- entry points --------------------------------------------------------------------------------------------
def _real(value: object) -> bool:
    return isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool)


def _validate(
    xyxy: Any, scores: Any, labels: Any, method: str, opt: MergeOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    MERGERS.resolve(method)
    if not (_real(opt.threshold) and 0.0 < opt.threshold <= 1.0):
        raise InvalidInput(f"threshold must be in (0, 1], got {opt.threshold!r}")
    if not (_real(opt.sigma) and 0.0 < opt.sigma < math.inf):
        raise InvalidInput(f"sigma must be a positive number, got {opt.sigma!r}")
    if not (_real(opt.score_floor) and opt.score_floor >= 0.0):
        raise InvalidInput(f"score_floor must be >= 0, got {opt.score_floor!r}")
    boxes = np.asarray(xyxy, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InvalidInput(f"xyxy must have shape (N, 4), got {boxes.shape}")
    n = len(boxes)
    conf = np.asarray(scores, dtype=np.float64)
    if conf.shape != (n,):
        raise InvalidInput(f"scores must have shape ({n},) to match xyxy, got {conf.shape}")
    names = np.asarray(labels)
    if names.shape != (n,):
        raise InvalidInput(f"labels must have shape ({n},) to match xyxy, got {names.shape}")
    if not np.isfinite(boxes).all():
        raise InvalidInput("xyxy must be finite (NaN or inf found)")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise InvalidInput("xyxy must be [x0, y0, x1, y1] with x1 >= x0 and y1 >= y0")
    if not np.isfinite(conf).all():
        raise InvalidInput("scores must be finite (NaN or inf found); human labels without a score are not merged")
    if method == "wbf" and (conf < 0).any():
        raise InvalidInput("wbf weights boxes by score: scores must be >= 0")
    return boxes, conf, names


def merge_boxes(
    xyxy: Any,
    scores: Any,
    labels: Any,
    *,
    method: str = "ios",
    threshold: float = 0.5,
    per_class: bool = True,
    sigma: float = 0.5,
    score_floor: float = 1e-3,
) -> Merged:
    """Merge ``(N, 4)`` level-0 boxes with ``(N,)`` scores and labels by a strategy of ``MERGERS``.

    ``threshold`` is the IoU (nms, wbf) or IoS (ios) at which boxes count as one object; ``per_class`` keeps
    labels apart (otherwise an output takes its representative's label). ``sigma`` and ``score_floor`` are
    soft-NMS's decay width and the score under which it drops a row. Output rows come highest score first.
    """
    opt = MergeOptions(threshold=threshold, sigma=sigma, score_floor=score_floor)
    boxes, conf, names = _validate(xyxy, scores, labels, method, opt)
    if len(boxes) == 0:
        none = np.zeros(0, dtype=np.int64)
        return Merged(xyxy=np.zeros((0, 4)), scores=np.zeros(0), labels=names[:0], group=none, keep=none.copy())
    strategy = MERGERS[method]
    try:
        c = Candidates.build(boxes, conf, names if per_class else None, pairs=strategy.pairs)
    except TypeError as exc:  # labels that cannot be compared with each other (e.g. str mixed with None)
        raise InvalidInput(f"labels must all be of one comparable type: {exc}") from exc
    group, box, score = strategy.run(c, opt)
    kept = np.flatnonzero(group == np.arange(len(group)))
    kept = kept[np.lexsort((c.rank[kept], -score[kept]))]  # highest output score first, ties by input rank
    out_xyxy, out_scores = box[kept], score[kept]
    row_of = np.full(len(boxes), -1, dtype=np.int64)
    row_of[kept] = np.arange(len(kept))
    out_group = np.where(group >= 0, row_of[np.maximum(group, 0)], -1)
    return Merged(
        xyxy=np.asarray(out_xyxy, dtype=np.float64),
        scores=np.asarray(out_scores, dtype=np.float64),
        labels=names[kept],
        group=out_group.astype(np.int64),
        keep=kept.astype(np.int64),
    )


def merge_annotations(
    ann: Annotations,
    method: str = "ios",
    threshold: float = 0.5,
    per_class: bool = True,
    *,
    sigma: float = 0.5,
    score_floor: float = 1e-3,
) -> Annotations:
    """Merge the scored boxes, polygons and masks of ``ann`` (model output of overlapping windows).

    Tags, points and rows without a score (human labels) pass through untouched. Each output keeps its
    representative's kind, source, status and attributes, and rows stay in input order. For strategies that
    fuse (ios, wbf) a group of several rows becomes: a box → the fused box; a polygon → the union of the
    members' shapes (boxes and masks as their outlines); a mask → the pixel union of the member masks, or
    the shape union as a polygon when other kinds are mixed in. A fused row is a new object (``id`` -1).
    """
    import shapely

    from gigavision.annotations import Annotations

    rows = np.flatnonzero(np.isin(ann.kind, SPATIAL_KINDS) & np.isfinite(ann.score))
    merged = merge_boxes(
        ann.xyxy[rows],
        ann.score[rows],
        ann.label[rows],
        method=method,
        threshold=threshold,
        per_class=per_class,
        sigma=sigma,
        score_floor=score_floor,
    )
    reps = rows[merged.keep]
    kind, xyxy = ann.kind[reps].copy(), ann.xyxy[reps].copy()
    geometry, mask, ids = ann.geometry[reps].copy(), ann.mask[reps].copy(), ann.id[reps].copy()
    if MERGERS[method].fuses:
        members = np.bincount(merged.group[merged.group >= 0], minlength=len(merged))
        by_group = np.argsort(merged.group, kind="stable")
        bounds = np.searchsorted(merged.group[by_group], np.arange(len(merged) + 1))
        for m in np.flatnonzero(members > 1).tolist():
            part = ann[rows[by_group[bounds[m] : bounds[m + 1]]]]
            ids[m] = -1
            if kind[m] == "box":
                xyxy[m] = merged.xyxy[m]
            elif kind[m] == "mask" and (part.kind == "mask").all():
                mask[m], xyxy[m] = _union_mask(part)
            else:
                shape = shapely.union_all([s for s in part.shapes() if s is not None])
                shape = _polygonal(shape if shape.is_valid else shapely.make_valid(shape))
                kind[m], geometry[m], mask[m], xyxy[m] = "polygon", shape, None, shape.bounds
    out = Annotations(
        kind=kind,
        label=ann.label[reps],
        xyxy=xyxy,
        geometry=geometry,
        mask=mask,
        score=merged.scores,
        source=ann.source[reps],
        status=ann.status[reps],
        attributes=ann.attributes[reps],
        id=ids,
    )
    rest = np.setdiff1d(np.arange(len(ann)), rows)
    both = Annotations.merge([out, ann[rest]])
    return both[np.argsort(np.r_[reps, rest], kind="stable")]


def _union_mask(part: Annotations) -> tuple[dict[str, Any], np.ndarray]:
    """Pixel union of mask rows as one RLE mask and its tight box (the masks' own pixel windows kept)."""
    from gigavision.annotations import Annotations

    ox = np.floor(part.xyxy[:, 0]).astype(np.int64)
    oy = np.floor(part.xyxy[:, 1]).astype(np.int64)
    decoded = [part.decode_mask(i) for i in range(len(part))]
    x0, y0 = int(ox.min()), int(oy.min())
    x1 = max(int(x) + m.shape[1] for x, m in zip(ox, decoded, strict=True))
    y1 = max(int(y) + m.shape[0] for y, m in zip(oy, decoded, strict=True))
    canvas = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for x, y, m in zip(ox.tolist(), oy.tolist(), decoded, strict=True):
        canvas[y - y0 : y - y0 + m.shape[0], x - x0 : x - x0 + m.shape[1]] |= m
    one = Annotations.from_masks([canvas], [(x0, y0)], "_")
    return one.mask[0], one.xyxy[0]


def _polygonal(shape: Any) -> Any:
    """The areal part of a shape as a Polygon or MultiPolygon (a union of touching pieces may add lines)."""
    import shapely

    if shape.geom_type in ("Polygon", "MultiPolygon"):
        return shape
    parts = [p for p in shapely.get_parts(shape) if p.geom_type in ("Polygon", "MultiPolygon") and p.area > 0]
    polys = [q for p in parts for q in shapely.get_parts(p)]
    return polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
