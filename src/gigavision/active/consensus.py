"""Fusing several annotators' labels of one item into a consensus (pure functions).

Tags: a tag is in the consensus when a strict majority of the raters gave it. Shapes: the raters' shapes are
grouped into clusters holding at most one shape per rater, in which every two shapes match (IoU ≥ threshold,
same label unless labels are ignored); a cluster is kept when a strict majority of the raters drew it, and
becomes one shape: boxes and points by their mean coordinates, polygons and masks by the member with the
highest mean IoU to the others (averaging outlines or pixel masks would invent a shape nobody drew).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from gigavision.active.agreement import MatchOptions, TagSet, iou_matrix, matchable_pairs, max_matching
from gigavision.annotations import Annotations

Member = tuple[int, int]  # (rater, row in that rater's annotations)


def majority(raters: int) -> int:
    """Smallest strict majority of ``raters``: 2 of 2, 2 of 3, 3 of 4."""
    return raters // 2 + 1


def tag_consensus(sets: Sequence[TagSet]) -> list[str]:
    """Tags given by a strict majority of the raters, sorted."""
    votes = Counter(tag for s in sets for tag in set(s))
    return sorted(tag for tag, n in votes.items() if n >= majority(len(sets)))


def cluster_shapes(sets: Sequence[Annotations], options: MatchOptions | None = None) -> list[list[Member]]:
    """Group the raters' shapes: ≤ 1 shape per rater per cluster, every two members matchable.

    Raters are taken in order; each one's shapes are matched one-to-one (Hungarian, most pairs then highest
    mean IoU) to the clusters they match completely, the rest start new clusters.
    """
    # pairs[(r, s)]: the matchable pairs between raters r < s, as (row of r, row of s, similarity)
    pairs = {
        (r, s): matchable_pairs(sets[r], sets[s], options) for r in range(len(sets)) for s in range(r + 1, len(sets))
    }
    clusters: list[list[Member]] = []
    cluster_of: dict[Member, int] = {}
    for s, shapes in enumerate(sets):
        # for each (shape j of rater s, cluster c): how many members it matches, and the summed similarity
        hits: dict[tuple[int, int], list[float]] = {}
        for r in range(s):
            ia, ib, sim = pairs[(r, s)]
            for i, j, v in zip(ia.tolist(), ib.tolist(), sim.tolist(), strict=True):
                entry = hits.setdefault((j, cluster_of[(r, i)]), [0.0, 0.0])
                entry[0] += 1
                entry[1] += v
        complete = [(j, c, total / n) for (j, c), (n, total) in hits.items() if n == len(clusters[c])]
        rows = np.array([j for j, _, _ in complete], dtype=np.intp)
        cols = np.array([c for _, c, _ in complete], dtype=np.intp)
        weights = np.array([w for _, _, w in complete], dtype=np.float64)
        joined = dict(max_matching(rows, cols, weights, len(shapes), len(clusters)).tolist())
        for j in range(len(shapes)):
            c = joined.get(j)
            if c is None:
                c = len(clusters)
                clusters.append([])
            clusters[c].append((s, j))
            cluster_of[(s, j)] = c
    return clusters


def _medoid(members: list[Member], sets: Sequence[Annotations], options: MatchOptions | None) -> Member:
    """The member with the highest mean similarity to the others (the first rater's on ties)."""
    if len(members) == 1:
        return members[0]
    radius = (options or MatchOptions()).point_radius
    best, best_score = members[0], -np.inf
    for r, i in members:
        total = 0.0
        for s, j in members:
            if (s, j) == (r, i):
                continue
            total += float(iou_matrix(sets[r][i], sets[s][j], radius)[0, 0])
        if total > best_score + 1e-12:
            best, best_score = (r, i), total
    return best


def shape_consensus(sets: Sequence[Annotations], options: MatchOptions | None = None) -> Annotations:
    """One shape per cluster that a strict majority of the raters drew (see the module docstring).

    Label: the most common among the members (the medoid's on ties); attributes: the medoid's. The result
    carries no source/status yet (see ``restamp``).
    """
    need = majority(len(sets))
    parts = []
    for members in cluster_shapes(sets, options):
        if len(members) < need:
            continue
        r, i = _medoid(members, sets, options)
        row = sets[r][i]
        labels = Counter(str(sets[s].label[j]) for s, j in members)
        top = max(labels.values())
        label = str(row.label[0]) if labels[str(row.label[0])] == top else labels.most_common(1)[0][0]
        kind = str(row.kind[0])
        attrs = dict(row.attributes[0])
        if kind == "box":
            box = np.mean([sets[s].xyxy[j] for s, j in members], axis=0)
            parts.append(Annotations.from_boxes([box], [label], attributes=[attrs]))
        elif kind == "point":
            xy = np.mean([sets[s].xyxy[j, :2] for s, j in members], axis=0)
            parts.append(Annotations.from_points([xy], [label], attributes=[attrs]))
        else:
            parts.append(
                Annotations(
                    kind=row.kind,
                    label=np.array([label], dtype=object),
                    xyxy=row.xyxy,
                    geometry=row.geometry,
                    mask=row.mask,
                    attributes=row.attributes,
                )
            )
    return Annotations.merge(parts)


def restamp(ann: Annotations, source: str, status: str) -> Annotations:
    """A copy of ``ann`` as new rows (no ids, no scores) with one ``source`` and ``status``."""
    n = len(ann)
    if n == 0:
        return Annotations.empty()
    return Annotations(
        kind=ann.kind,
        label=ann.label,
        xyxy=ann.xyxy,
        geometry=ann.geometry,
        mask=ann.mask,
        score=np.full(n, np.nan),
        source=np.array([source] * n, dtype=object),
        status=np.array([status] * n, dtype=object),
        attributes=ann.attributes,
        id=np.full(n, -1, dtype=np.int64),
    )
