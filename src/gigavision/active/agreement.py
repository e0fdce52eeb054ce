"""Agreement between annotators, as pure functions on answers and ``Annotations``.

Tags (categorical labels): Cohen's κ for two raters, Fleiss' κ for any number, per-label binary κ for
multi-label answers, and the observed agreement of one item (mean pairwise Jaccard of the raters' tag sets).

Shapes (boxes, polygons, masks, points): one-to-one matching of two annotators' shapes by the Hungarian
algorithm at IoU ≥ a threshold (points: within a radius), same label unless labels are ignored, and
F1 = 2·matches / (n_a + n_b) (1.0 when both drew nothing).

κ describes many items: it discounts the agreement expected by chance from each rater's label frequencies,
which a single item cannot estimate (for one item on which everyone agrees it is 0/0). So one item is judged
by its observed agreement (pairwise Jaccard for tags, pairwise F1 for shapes) and κ is reported over sets of
items: per annotator pair, per annotator against the consensus, Fleiss' κ over all raters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gigavision.annotations import Annotations, mask_to_polygon
from gigavision.boxes import paired_iou
from gigavision.errors import InvalidInput

SHAPE_KINDS = ("box", "polygon", "mask", "point")
TagSet = Collection[str]
_EPS = 1e-12


# -- tags ----------------------------------------------------------------------------------------------------
def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's κ of two raters who each gave one category per item (same items, same order).

    1.0 when they agree on every item, including when both always gave the same single category (where the
    formula is 0/0). Computed by scikit-learn's ``cohen_kappa_score``.
    """
    a_list, b_list = [str(v) for v in a], [str(v) for v in b]
    if len(a_list) != len(b_list):
        raise InvalidInput(f"cohen_kappa needs one answer per item from each rater, got {len(a_list)}, {len(b_list)}")
    if not a_list:
        raise InvalidInput("cohen_kappa needs at least one item")
    if a_list == b_list:
        return 1.0
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(a_list, b_list))


def fleiss_kappa(counts: Any) -> float:
    """Fleiss' κ from an ``(items, categories)`` table: ``counts[i, j]`` raters put item i in category j.

    Fleiss (1971). Items may have different numbers of raters (each ≥ 2): item i's agreement uses its own
    total, which is the original formula when all items have the same number. 1.0 when every rating falls in
    one category (0/0).
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 2 or c.size == 0:
        raise InvalidInput(f"fleiss_kappa needs a 2-D (items, categories) table of counts, got shape {c.shape}")
    if not np.isfinite(c).all() or (c < 0).any() or (c != np.round(c)).any():
        raise InvalidInput("fleiss_kappa counts must be non-negative whole numbers")
    n = c.sum(axis=1)
    if (n < 2).any():
        i = int(np.nonzero(n < 2)[0][0])
        raise InvalidInput(f"fleiss_kappa: item {i} has {int(n[i])} rating(s); every item needs at least 2")
    p_item = (c * (c - 1)).sum(axis=1) / (n * (n - 1))
    p_bar = float(p_item.mean())
    p_category = c.sum(axis=0) / n.sum()
    p_chance = float((p_category**2).sum())
    if p_chance >= 1.0 - _EPS:
        return 1.0
    return (p_bar - p_chance) / (1.0 - p_chance)


def jaccard(a: TagSet, b: TagSet) -> float:
    """``|a ∩ b| / |a ∪ b|`` of two tag sets; 1.0 when both are empty (both said "none of these")."""
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def set_kappa(a: Sequence[TagSet], b: Sequence[TagSet]) -> float:
    """Cohen's κ between two raters' tag sets on the same items.

    Multi-class κ when each rater gave exactly one tag per item; otherwise the mean, over the labels either
    rater used, of the binary (tag present / absent) κ. 1.0 when the sets are identical on every item.
    """
    if len(a) != len(b):
        raise InvalidInput(f"set_kappa needs one tag set per item from each rater, got {len(a)} and {len(b)}")
    if not a:
        raise InvalidInput("set_kappa needs at least one item")
    sa, sb = [frozenset(x) for x in a], [frozenset(x) for x in b]
    if sa == sb:
        return 1.0
    if all(len(x) == 1 for x in (*sa, *sb)):
        return cohen_kappa([next(iter(x)) for x in sa], [next(iter(x)) for x in sb])
    labels = sorted(frozenset().union(*sa, *sb))
    return float(np.mean([cohen_kappa(_present(sa, lab), _present(sb, lab)) for lab in labels]))


def fleiss_kappa_sets(items: Sequence[Sequence[TagSet]]) -> float:
    """Fleiss' κ of tag sets: ``items[i]`` holds the tag sets item i got from its raters (≥ 2 per item).

    Multi-class κ when every rater gave exactly one tag per item; otherwise the mean over labels of the
    binary (present / absent) κ. 1.0 when nobody tagged anything.
    """
    if not items:
        raise InvalidInput("fleiss_kappa_sets needs at least one item")
    sets = [[frozenset(r) for r in item] for item in items]
    labels = sorted(frozenset().union(*(r for item in sets for r in item)))
    if not labels:
        return 1.0
    if all(len(r) == 1 for item in sets for r in item):
        column = {lab: j for j, lab in enumerate(labels)}
        counts = np.zeros((len(sets), len(labels)))
        for i, item in enumerate(sets):
            for r in item:
                counts[i, column[next(iter(r))]] += 1
        return fleiss_kappa(counts)
    kappas = []
    for lab in labels:
        present = np.array([sum(lab in r for r in item) for item in sets], dtype=np.float64)
        sizes = np.array([len(item) for item in sets], dtype=np.float64)
        kappas.append(fleiss_kappa(np.stack([present, sizes - present], axis=1)))
    return float(np.mean(kappas))


def _present(sets: Sequence[frozenset[str]], label: str) -> list[str]:
    return ["1" if label in s else "0" for s in sets]


# -- shapes ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MatchOptions:
    """When two annotators' shapes count as the same object.

    ``iou_threshold``: least IoU of two boxes / polygons / masks; ``point_radius``: largest distance between
    two points, in level-0 pixels; ``match_labels``: the labels must be equal too (False: geometry only).
    """

    iou_threshold: float = 0.5
    match_labels: bool = True
    point_radius: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_threshold <= 1.0:
            raise InvalidInput(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if not (math.isfinite(self.point_radius) and self.point_radius > 0):
            raise InvalidInput(f"point_radius must be a positive number of pixels, got {self.point_radius}")


@dataclass(frozen=True, slots=True)
class Matching:
    """One-to-one pairs between annotations ``a`` and ``b`` (``b`` is the reference for precision/recall)."""

    pairs: np.ndarray  # (k, 2) int: row in a, row in b
    similarity: np.ndarray  # (k,) IoU of each pair; points: 1 - distance / point_radius
    n_a: int
    n_b: int

    @property
    def f1(self) -> float:
        """``2·matches / (n_a + n_b)``; 1.0 when both are empty."""
        total = self.n_a + self.n_b
        return 1.0 if total == 0 else 2.0 * len(self.pairs) / total

    @property
    def precision(self) -> float:
        return 1.0 if self.n_a == 0 else len(self.pairs) / self.n_a

    @property
    def recall(self) -> float:
        return 1.0 if self.n_b == 0 else len(self.pairs) / self.n_b

    @property
    def matched_a(self) -> np.ndarray:
        """``(n_a,)`` bool: which rows of ``a`` found a partner."""
        out = np.zeros(self.n_a, dtype=bool)
        out[self.pairs[:, 0]] = True
        return out

    @property
    def matched_b(self) -> np.ndarray:
        out = np.zeros(self.n_b, dtype=bool)
        out[self.pairs[:, 1]] = True
        return out


def _check_shapes(ann: Annotations, name: str) -> None:
    if len(ann) and (ann.kind == "tag").any():
        raise InvalidInput(f"{name}: tags have no geometry; compare tag sets with jaccard/set_kappa instead")


def _candidates(a: Annotations, b: Annotations, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs whose boxes overlap (points: within ``radius``), through an STR-tree: no n_a × n_b table."""
    import shapely

    if not len(a) or not len(b):
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    pad = np.where(a.kind == "point", radius, 0.0)[:, None] * np.array([-1.0, -1.0, 1.0, 1.0])
    query = shapely.box(*(a.xyxy + pad).T)
    tree = shapely.STRtree(shapely.box(*b.xyxy.T))
    ia, ib = tree.query(query)  # envelope overlap only: exact tests follow
    order = np.lexsort((ib, ia))
    return ia[order].astype(np.intp), ib[order].astype(np.intp)


def _outline(ann: Annotations, i: int) -> Any:
    import shapely

    kind = ann.kind[i]
    if kind == "box":
        return shapely.box(*ann.xyxy[i])
    if kind == "mask":
        return mask_to_polygon(ann.mask[i], ann.xyxy[i])
    geom = ann.geometry[i]
    return geom if shapely.is_valid(geom) else shapely.make_valid(geom)


def _mask_iou(a: Annotations, i: int, b: Annotations, j: int, cache: dict[tuple[int, int], np.ndarray]) -> float:
    """Exact pixel IoU of two RLE masks, compared over the overlap of their windows only."""
    ma = cache.setdefault((0, i), a.decode_mask(i))
    mb = cache.setdefault((1, j), b.decode_mask(j))
    ax, ay = math.floor(a.xyxy[i, 0]), math.floor(a.xyxy[i, 1])
    bx, by = math.floor(b.xyxy[j, 0]), math.floor(b.xyxy[j, 1])
    x0, y0 = max(ax, bx), max(ay, by)
    x1, y1 = min(ax + ma.shape[1], bx + mb.shape[1]), min(ay + ma.shape[0], by + mb.shape[0])
    inter = 0
    if x1 > x0 and y1 > y0:
        inter = int((ma[y0 - ay : y1 - ay, x0 - ax : x1 - ax] & mb[y0 - by : y1 - by, x0 - bx : x1 - bx]).sum())
    union = int(ma.sum()) + int(mb.sum()) - inter
    return inter / union if union else 0.0


def _similarity(a: Annotations, b: Annotations, ia: np.ndarray, ib: np.ndarray, radius: float) -> np.ndarray:
    """IoU of each pair (points: ``1 - distance / radius``, may be negative); points never pair with areas."""
    import shapely

    sim = np.zeros(len(ia))
    if not len(ia):
        return sim
    ka, kb = a.kind[ia], b.kind[ib]
    points = (ka == "point") & (kb == "point")
    boxes = (ka == "box") & (kb == "box")
    masks = (ka == "mask") & (kb == "mask")
    areas = (ka != "point") & (kb != "point") & ~boxes & ~masks
    if points.any():
        d = np.hypot(a.xyxy[ia[points], 0] - b.xyxy[ib[points], 0], a.xyxy[ia[points], 1] - b.xyxy[ib[points], 1])
        sim[points] = 1.0 - d / radius
    if boxes.any():
        sim[boxes] = paired_iou(a.xyxy[ia[boxes]], b.xyxy[ib[boxes]])
    if masks.any():
        cache: dict[tuple[int, int], np.ndarray] = {}
        sim[masks] = [_mask_iou(a, int(i), b, int(j), cache) for i, j in zip(ia[masks], ib[masks], strict=True)]
    if areas.any():
        ga = np.array([_outline(a, int(i)) for i in ia[areas]], dtype=object)
        gb = np.array([_outline(b, int(j)) for j in ib[areas]], dtype=object)
        inter = shapely.area(shapely.intersection(ga, gb))
        union = shapely.area(ga) + shapely.area(gb) - inter
        sim[areas] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    sim[(ka == "point") != (kb == "point")] = -np.inf
    return sim


def iou_matrix(a: Annotations, b: Annotations, point_radius: float = 10.0) -> np.ndarray:
    """Dense ``(n_a, n_b)`` IoU table (points: ``max(0, 1 - distance / point_radius)``), labels ignored.

    For inspection and small sets; matching uses the sparse pairs instead.
    """
    _check_shapes(a, "a")
    _check_shapes(b, "b")
    out = np.zeros((len(a), len(b)))
    ia, ib = _candidates(a, b, point_radius)
    out[ia, ib] = np.clip(_similarity(a, b, ia, ib, point_radius), 0.0, 1.0)
    return out


def matchable_pairs(
    a: Annotations, b: Annotations, options: MatchOptions | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs ``(i, j)`` that may be matched (IoU ≥ threshold or points within the radius, labels equal
    unless ignored) and their similarity, as three aligned arrays."""
    opts = options or MatchOptions()
    _check_shapes(a, "a")
    _check_shapes(b, "b")
    ia, ib = _candidates(a, b, opts.point_radius)
    if opts.match_labels and len(ia):
        same = a.label[ia] == b.label[ib]
        ia, ib = ia[same], ib[same]
    sim = _similarity(a, b, ia, ib, opts.point_radius)
    points = a.kind[ia] == "point"
    ok = np.where(points, sim >= -_EPS, sim >= opts.iou_threshold - _EPS)
    return ia[ok], ib[ok], sim[ok]


def max_matching(ia: np.ndarray, ib: np.ndarray, weight: np.ndarray, n_a: int, n_b: int) -> np.ndarray:
    """One-to-one matching on a sparse bipartite graph: most pairs first, then the highest total weight.

    Solved per connected component with the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``),
    so thousands of shapes in a region cost many tiny problems, not one n_a × n_b table. Weights in [-1, 1].
    Returns ``(k, 2)`` index pairs.
    """
    if not len(ia):
        return np.zeros((0, 2), dtype=np.intp)
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(ia)), (ia, n_a + ib)), shape=(n_a + n_b, n_a + n_b))
    _, component = connected_components(graph, directed=False)
    edge_component = component[ia]
    order = np.argsort(edge_component, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(edge_component[order]) != 0])
    pairs: list[tuple[int, int]] = []
    for edges in np.split(order, starts[1:]):
        if len(edges) == 1:
            pairs.append((int(ia[edges[0]]), int(ib[edges[0]])))
            continue
        rows, row_of = np.unique(ia[edges], return_inverse=True)
        cols, col_of = np.unique(ib[edges], return_inverse=True)
        table = np.zeros((len(rows), len(cols)))
        # a constant above the largest possible count of pairs makes every extra pair worth more than any
        # gain in weight: maximum cardinality first, then maximum total weight
        table[row_of, col_of] = min(len(rows), len(cols)) + 2.0 + weight[edges]
        r, c = linear_sum_assignment(table, maximize=True)
        keep = table[r, c] > 0
        pairs.extend(zip(rows[r[keep]].tolist(), cols[c[keep]].tolist(), strict=True))
    return np.array(sorted(pairs), dtype=np.intp).reshape(-1, 2)


def match_annotations(a: Annotations, b: Annotations, options: MatchOptions | None = None) -> Matching:
    """Pair each shape of ``a`` with at most one of ``b`` (Hungarian, max pairs then max IoU)."""
    ia, ib, sim = matchable_pairs(a, b, options)
    pairs = max_matching(ia, ib, sim, len(a), len(b))
    lookup = dict(zip(zip(ia.tolist(), ib.tolist(), strict=True), sim.tolist(), strict=True))
    similarity = np.array([lookup[(int(i), int(j))] for i, j in pairs], dtype=np.float64)
    return Matching(pairs=pairs, similarity=similarity, n_a=len(a), n_b=len(b))


def f1_score(a: Annotations, b: Annotations, options: MatchOptions | None = None) -> float:
    """IoU-matched F1 of two annotators' shapes: ``2·matches / (n_a + n_b)``, 1.0 when both are empty."""
    return match_annotations(a, b, options).f1


# -- one item, many raters -----------------------------------------------------------------------------------
def pairwise(n: int, score: Callable[[int, int], float]) -> np.ndarray:
    """Symmetric ``(n, n)`` table of ``score(i, j)`` for i < j, 1.0 on the diagonal."""
    out = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = score(i, j)
    return out


def tag_agreement(sets: Sequence[TagSet]) -> np.ndarray:
    """Pairwise Jaccard of the raters' tag sets for one item (for single tags: 1 if equal, else 0)."""
    return pairwise(len(sets), lambda i, j: jaccard(sets[i], sets[j]))


def shape_agreement(sets: Sequence[Annotations], options: MatchOptions | None = None) -> np.ndarray:
    """Pairwise IoU-matched F1 of the raters' shapes for one item."""
    return pairwise(len(sets), lambda i, j: f1_score(sets[i], sets[j], options))


def _matched(a: Annotations, b: Annotations, options: MatchOptions | None) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``a`` and which of ``b`` have a partner in the other: tags by label, shapes one-to-one."""
    if (len(a) and (a.kind == "tag").all()) or (len(b) and (b.kind == "tag").all()):
        return np.isin(a.label, b.label), np.isin(b.label, a.label)
    m = match_annotations(a, b, options)
    return m.matched_a, m.matched_b


def matched_with(sets: Sequence[Annotations], options: MatchOptions | None = None) -> list[list[list[int]]]:
    """For each rater's annotations in order, the other raters (indices into ``sets``) with a matching one: the
    pairs that F1 counts for shapes, the same label for tags. What no other rater matched is a disagreement
    (the adjudication screen highlights it)."""
    out: list[list[list[int]]] = [[[] for _ in range(len(a))] for a in sets]
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            in_a, in_b = _matched(sets[i], sets[j], options)
            for x in np.flatnonzero(in_a).tolist():
                out[i][x].append(j)
            for y in np.flatnonzero(in_b).tolist():
                out[j][y].append(i)
    return out


def mean_pairwise(table: np.ndarray) -> float:
    """Mean of the off-diagonal entries (each pair once); 1.0 for fewer than two raters."""
    n = len(table)
    if n < 2:
        return 1.0
    return float(table[np.triu_indices(n, k=1)].mean())
