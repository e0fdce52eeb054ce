"""Cross-tile merge strategies: cut objects join, neighbours stay apart, NMS/WBF/soft-NMS match their references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.tiling import window_grid
from gigavision.tiling.merge import (
    MERGERS,
    Candidates,
    MergeOptions,
    _components,
    _ios_greedy,
    _soft_nms_greedy,
    _wbf_greedy,
    merge_annotations,
    merge_boxes,
    overlapping_pairs,
)

# 1024² image read in 512² windows overlapping by 64 px: x/y starts 0, 448, 512
WINDOWS = window_grid(1024, 1024, 512, overlap=64)


def cut(box: list[float], windows: np.ndarray = WINDOWS) -> np.ndarray:
    """The pieces of ``box`` that each window sees (level-0 boxes), as a window-by-window detector reports them."""
    b = np.asarray(box, dtype=np.float64)
    pieces = np.c_[np.maximum(windows[:, :2], b[:2]), np.minimum(windows[:, 2:], b[2:])]
    return pieces[(pieces[:, 2] > pieces[:, 0]) & (pieces[:, 3] > pieces[:, 1])]


def clustered(n_objects: int, seed: int, copies: int = 4, classes: int = 3, extent: float = 1000.0):
    """Objects with 1..copies jittered detections each (duplicates that overlap), random unique scores."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, extent, (n_objects, 2))
    wh = rng.uniform(10, 80, (n_objects, 2))
    objects = np.c_[xy, xy + wh]
    k = rng.integers(1, copies + 1, n_objects)
    boxes = np.repeat(objects, k, axis=0)
    size = boxes[:, 2:] - boxes[:, :2]
    boxes = boxes + rng.normal(0, 0.12, boxes.shape) * np.c_[size, size]
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    return boxes, rng.uniform(0.05, 1.0, len(boxes)), rng.integers(0, classes, len(boxes))


def to_level0(piece: Annotations, x0: float, y0: float) -> Annotations:
    """Undo ``Annotations.crop``'s shift to the window origin (masks move by whole pixels)."""
    shift = np.array([x0, y0])
    geometry = np.array([None if g is None else shapely.transform(g, lambda c: c + shift) for g in piece.geometry])
    return Annotations(
        kind=piece.kind,
        label=piece.label,
        xyxy=piece.xyxy + np.r_[shift, shift],
        geometry=geometry,
        mask=piece.mask,
        score=piece.score,
        source=piece.source,
        status=piece.status,
        attributes=piece.attributes,
    )


def tiled(ann: Annotations, seed: int = 0) -> Annotations:
    """What a detector run window by window reports for ``ann``: the part each window sees, its own score."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, (x0, y0, x1, y1) in enumerate(WINDOWS.tolist()):
        piece = ann.crop(x0, y0, x1, y1)
        if len(piece):
            piece.score = rng.uniform(0.3, 0.9, len(piece))
            piece.attributes = np.array([{"window": k} for _ in range(len(piece))], dtype=object)
            parts.append(to_level0(piece, x0, y0))
    return Annotations.merge(parts)


# -- cut objects -------------------------------------------------------------------------------------------
def test_object_cut_across_two_windows_joins_into_the_original_box() -> None:
    box = [400.0, 100.0, 600.0, 230.0]  # crosses the x borders at 448 and 512, one row of windows
    pieces = cut(box)
    assert len(pieces) == 3
    scores = np.array([0.5, 0.9, 0.7])
    m = merge_boxes(pieces, scores, ["car"] * 3, method="ios")
    assert len(m) == 1
    assert m.xyxy[0].tolist() == box
    assert m.scores.tolist() == [0.9] and m.keep.tolist() == [1] and m.group.tolist() == [0, 0, 0]


def test_object_cut_at_a_window_corner_joins_even_when_diagonal_pieces_do_not_overlap() -> None:
    box = [400.0, 400.0, 600.0, 600.0]  # 9 pieces from the 3×3 windows around (448..512, 448..512)
    pieces = cut(box)
    assert len(pieces) == 9
    top_left = int(np.flatnonzero((pieces[:, 0] == 400) & (pieces[:, 1] == 400) & (pieces[:, 2] == 512))[0])
    bottom_right = int(np.flatnonzero((pieces[:, 0] == 512) & (pieces[:, 1] == 512))[0])
    # the best-scoring piece shares no area with the opposite corner: SAHI's greedy NMM (IoS against the
    # representative only) leaves that corner as a second object; growing the union box does not
    assert pieces[top_left, 2] <= pieces[bottom_right, 0]
    scores = np.linspace(0.3, 0.6, len(pieces))
    scores[top_left] = 0.95
    m = merge_boxes(pieces, scores, np.zeros(len(pieces), dtype=np.int64), method="ios")
    assert len(m) == 1
    assert m.xyxy[0].tolist() == box and m.keep.tolist() == [top_left]
    assert m.labels.dtype == np.int64


def test_two_neighbouring_objects_cut_by_the_same_border_stay_two() -> None:
    a, b = [300.0, 100.0, 470.0, 200.0], [465.0, 110.0, 620.0, 210.0]  # touching cars, 5 px of overlap
    pieces = np.r_[cut(a), cut(b)]
    rng = np.random.default_rng(1)
    for _ in range(5):  # whatever the scores, each object is rebuilt from its own pieces
        m = merge_boxes(pieces, rng.uniform(0.2, 1.0, len(pieces)), ["car"] * len(pieces), method="ios")
        assert sorted(m.xyxy.tolist()) == [a, b]


def test_a_chain_of_overlapping_objects_does_not_snowball_into_one() -> None:
    x0 = np.arange(10) * 40.0  # 100-px boxes, each sharing 60 % of itself with the next: IoS 0.6
    boxes = np.c_[x0, np.zeros(10), x0 + 100, np.full(10, 100.0)]
    m = merge_boxes(boxes, np.linspace(0.9, 0.5, 10), ["cell"] * 10, method="ios")
    # the best box takes its neighbour (IoS 0.6) and the next one, 60 % inside their union box; no further
    assert m.group.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    assert m.xyxy[:, 2].tolist() == [180.0, 300.0, 420.0, 460.0]


def test_per_class_keeps_labels_apart() -> None:
    boxes = [[0, 0, 100, 100], [0, 0, 100, 100], [10, 10, 90, 90]]
    labels = np.array(["cat", "dog", "cat"], dtype=object)
    for method in ("nms", "ios", "wbf", "soft_nms"):
        m = merge_boxes(boxes, [0.9, 0.8, 0.7], labels, method=method)
        assert "dog" in m.labels.tolist(), method
        assert m.group[1] != m.group[0], method
    agnostic = merge_boxes(boxes, [0.9, 0.8, 0.7], labels, method="ios", per_class=False)
    assert len(agnostic) == 1 and agnostic.labels.tolist() == ["cat"] and agnostic.labels.dtype == object


def test_polygon_cut_across_four_windows_unions_back_to_the_original() -> None:
    theta = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    radius = 50 + 15 * np.sin(5 * theta)  # a star around the corner where four windows meet
    star = shapely.Polygon(np.c_[480 + radius * np.cos(theta), 480 + radius * np.sin(theta)])
    pieces = tiled(Annotations.from_polygons([star], "cell"))
    assert len(pieces) >= 8
    merged = merge_annotations(pieces, method="ios")
    assert len(merged) == 1 and merged.kind.tolist() == ["polygon"]
    shape = merged.geometry[0]
    assert shape.geom_type == "Polygon" and shape.is_valid
    assert abs(shape.area - star.area) < 1e-6
    assert shape.symmetric_difference(star).area < 1e-6
    assert merged.xyxy[0].tolist() == list(shape.bounds)
    rep = int(np.argmax(pieces.score))
    assert merged.attributes[0] == pieces.attributes[rep] and merged.score[0] == pieces.score[rep]
    assert merged.id[0] == -1


def test_mask_cut_across_windows_is_the_pixel_union() -> None:
    yy, xx = np.mgrid[:1024, :1024]
    disk = (xx - 490) ** 2 + (yy - 300) ** 2 < 70**2
    pieces = tiled(Annotations.from_masks([disk], [(0, 0)], "nucleus"))
    assert len(pieces) >= 2
    merged = merge_annotations(pieces, method="wbf", threshold=0.1)  # wbf fuses masks the same way
    assert len(merged) == 1 and merged.kind.tolist() == ["mask"]
    x0, y0, x1, y1 = (int(v) for v in merged.xyxy[0])
    assert np.array_equal(merged.decode_mask(0), disk[y0:y1, x0:x1])
    assert disk[y0:y1, x0:x1].sum() == disk.sum()


def test_merge_annotations_passes_other_rows_through_in_order() -> None:
    boxes = Annotations.from_boxes([[0, 0, 50, 50], [2, 2, 50, 50]], "car", score=[0.6, 0.8])
    human = Annotations.from_boxes([[1, 1, 50, 50]], "car", status=["accepted"])  # no score: a person's label
    rows = Annotations.merge(
        [Annotations.from_tags(["sunny"]), boxes[0], Annotations.from_points([[5, 5]], "eye"), human, boxes[1]]
    )
    for method in MERGERS:  # rows stay in input order; a merged row stands where its representative stood
        out = merge_annotations(rows, method=method)
        keeps_both = method in ("none", "soft_nms")
        assert out.kind.tolist() == (
            ["tag", "box", "point", "box", "box"] if keeps_both else ["tag", "point", "box", "box"]
        )
        human_at = 3 if keeps_both else 2
        assert out.status[human_at] == "accepted" and math.isnan(out.score[human_at]), method
        assert out.xyxy[human_at].tolist() == [1, 1, 50, 50], method
    nms = merge_annotations(rows, method="nms")
    assert nms.xyxy[3].tolist() == [2, 2, 50, 50] and nms.score[3] == 0.8
    soft = merge_annotations(rows, method="soft_nms")
    assert soft.score[4] == 0.8 and 0 < soft.score[1] < 0.6  # the weaker duplicate decayed, not removed


# -- the standard algorithms ------------------------------------------------------------------------------
@pytest.mark.parametrize(("n_objects", "seed"), [(80, 0), (900, 1)])  # < and > torchvision's 4000-number switch
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_equals_torchvision_batched_nms(n_objects: int, seed: int, threshold: float) -> None:
    torch = pytest.importorskip("torch")
    from torchvision.ops import batched_nms

    boxes, scores, labels = clustered(n_objects, seed)
    expected = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), threshold)
    m = merge_boxes(boxes, scores, labels, method="nms", threshold=threshold)
    assert len(m) < len(boxes)
    assert m.keep.tolist() == expected.tolist()
    assert np.array_equal(m.xyxy, boxes[m.keep]) and np.array_equal(m.scores, scores[m.keep])
    # every suppressed row points at a kept row of its class that overlaps it above the threshold
    gone = np.flatnonzero(m.keep[m.group] != np.arange(len(boxes)))
    by = m.keep[m.group[gone]]
    assert (labels[by] == labels[gone]).all() and (scores[by] > scores[gone]).all()


def wbf_reference(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, thr: float) -> list[tuple]:
    """ensemble_boxes.weighted_boxes_fusion with one model and conf_type="avg", written plainly (O(N²))."""
    out = []
    for lab in np.unique(labels):
        rows = np.flatnonzero(labels == lab)
        rows = rows[np.argsort(-scores[rows], kind="stable")]
        clusters: list[list[int]] = []
        fused: list[np.ndarray] = []
        for r in rows:
            best = -1
            if fused:
                f = np.array(fused)
                iw = np.clip(np.minimum(f[:, 2], boxes[r, 2]) - np.maximum(f[:, 0], boxes[r, 0]), 0, None)
                ih = np.clip(np.minimum(f[:, 3], boxes[r, 3]) - np.maximum(f[:, 1], boxes[r, 1]), 0, None)
                inter = iw * ih
                area_f = (f[:, 2] - f[:, 0]) * (f[:, 3] - f[:, 1])
                area_r = (boxes[r, 2] - boxes[r, 0]) * (boxes[r, 3] - boxes[r, 1])
                iou = inter / (area_f + area_r - inter)
                if iou.max() > thr:
                    best = int(np.argmax(iou))
            if best < 0:
                clusters.append([int(r)])
                fused.append(boxes[r].copy())
            else:
                clusters[best].append(int(r))
                w = scores[clusters[best]]
                fused[best] = (w[:, None] * boxes[clusters[best]]).sum(0) / w.sum()
        out += [(frozenset(c), f, scores[c].mean()) for c, f in zip(clusters, fused, strict=True)]
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wbf_matches_the_reference(seed: int) -> None:
    boxes, scores, labels = clustered(150, seed)
    m = merge_boxes(boxes, scores, labels, method="wbf", threshold=0.55)
    ref = {members: (box, score) for members, box, score in wbf_reference(boxes, scores, labels, 0.55)}
    ours = {frozenset(np.flatnonzero(m.group == k).tolist()): k for k in range(len(m))}
    assert set(ours) == set(ref)
    assert any(len(members) > 2 for members in ref)
    for members, k in ours.items():
        assert np.allclose(m.xyxy[k], ref[members][0], rtol=0, atol=1e-9)
        assert m.scores[k] == pytest.approx(ref[members][1], abs=1e-12)
    assert (np.diff(m.scores) <= 0).all()


def soft_nms_reference(boxes: np.ndarray, scores: np.ndarray, sigma: float, floor: float) -> dict[int, float]:
    """Bodla et al.'s Gaussian soft-NMS as in the paper's pseudo-code (one class), O(N²)."""
    s = scores.astype(np.float64).copy()
    rest = [r for r in np.argsort(-s, kind="stable").tolist() if s[r] >= floor]
    kept: dict[int, float] = {}
    while rest:
        top = max(rest, key=lambda r: s[r])  # first of equals in rank order, as the heap does
        kept[top] = float(s[top])
        rest.remove(top)
        for r in rest:
            iw = max(0.0, min(boxes[top, 2], boxes[r, 2]) - max(boxes[top, 0], boxes[r, 0]))
            ih = max(0.0, min(boxes[top, 3], boxes[r, 3]) - max(boxes[top, 1], boxes[r, 1]))
            a = (boxes[top, 2] - boxes[top, 0]) * (boxes[top, 3] - boxes[top, 1])
            b = (boxes[r, 2] - boxes[r, 0]) * (boxes[r, 3] - boxes[r, 1])
            iou = iw * ih / (a + b - iw * ih)
            s[r] *= math.exp(-iou * iou / sigma)
        rest = [r for r in rest if s[r] >= floor]
    return kept


@pytest.mark.parametrize(("sigma", "floor"), [(0.5, 1e-3), (0.1, 0.2)])
def test_soft_nms_matches_the_reference(sigma: float, floor: float) -> None:
    boxes, scores, _ = clustered(120, 3)
    m = merge_boxes(boxes, scores, np.zeros(len(boxes)), method="soft_nms", sigma=sigma, score_floor=floor)
    ref = soft_nms_reference(boxes, scores, sigma, floor)
    assert sorted(m.keep.tolist()) == sorted(ref)
    assert np.allclose(m.scores, [ref[k] for k in m.keep.tolist()], rtol=1e-12, atol=0)
    assert (m.group[m.keep] == np.arange(len(m))).all() and (m.group >= 0).sum() == len(m)
    if floor > 0.1:
        assert len(m) < len(boxes)


@pytest.mark.parametrize(
    ("method", "greedy"), [("ios", _ios_greedy), ("wbf", _wbf_greedy), ("soft_nms", _soft_nms_greedy)]
)
def test_array_fast_path_agrees_with_the_greedy_loop(method: str, greedy: object) -> None:
    """Two-row components are solved with arrays; the plain loop over everything must give the same answer."""
    boxes, scores, labels = clustered(400, 4, copies=3)
    c = Candidates.build(boxes, scores, labels)
    assert (c.size == 2).any() and (c.size >= 3).any()
    opt = MergeOptions(threshold=0.5, sigma=0.5, score_floor=0.05)
    fast = MERGERS[method].run(c, opt)
    slow = greedy(c, opt)  # type: ignore[operator]
    assert np.array_equal(fast[0], slow[0])
    reps = np.flatnonzero(fast[0] == np.arange(len(boxes)))
    assert np.allclose(fast[1][reps], slow[1][reps], rtol=1e-12, atol=1e-9)
    assert np.allclose(fast[2][reps], slow[2][reps], rtol=1e-12, atol=0)


def test_ios_output_box_is_the_union_of_its_members() -> None:
    boxes, scores, labels = clustered(300, 5)
    m = merge_boxes(boxes, scores, labels, method="ios", threshold=0.6)
    for k in range(len(m)):
        members = boxes[m.group == k]
        assert m.xyxy[k].tolist() == [*members[:, :2].min(0), *members[:, 2:].max(0)]
        assert m.scores[k] == scores[m.group == k].max() and (labels[m.group == k] == m.labels[k]).all()


# -- candidate pairs --------------------------------------------------------------------------------------
def test_overlapping_pairs_equals_brute_force() -> None:
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 2000, (700, 2))
    wh = np.exp(rng.uniform(np.log(1), np.log(400), (700, 2)))
    boxes = np.r_[np.c_[xy, xy + wh], [[0, 0, 2500, 2500], [10, 10, 10, 50], [100, 100, 150, 100]]]  # giant, 2 flat
    boxes[5] = boxes[6]  # identical boxes
    codes = rng.integers(0, 2, len(boxes))
    iw = np.minimum(boxes[:, None, 2], boxes[None, :, 2]) - np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    ih = np.minimum(boxes[:, None, 3], boxes[None, :, 3]) - np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    overlap = np.triu((iw > 0) & (ih > 0), k=1)
    for c, allowed in ((None, overlap), (codes, overlap & (codes[:, None] == codes[None, :]))):
        i, j, inter = overlapping_pairs(boxes, c, chunk=1000)  # a small chunk exercises the chunked path
        assert (i < j).all()
        assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == sorted(zip(*np.nonzero(allowed), strict=True))
        assert np.array_equal(inter, iw[i, j] * ih[i, j])


def test_components_of_a_long_chain() -> None:
    n = 5000
    perm = np.random.default_rng(0).permutation(n)
    root = _components(n + 3, perm[:-1], perm[1:])  # one chain in shuffled order, plus 3 lone nodes
    assert (root[:n] == root[0]).all() and root[n:].tolist() == [n, n + 1, n + 2]


# -- scale and bad input -----------------------------------------------------------------------------------
def test_100k_tiled_detections_merge() -> None:
    """~100k detections of a 50k² image read in 512² windows overlapping by 64 px (timings: bench_merge.py)."""
    rng = np.random.default_rng(0)
    n_obj, stride = 74_000, 448
    xy = rng.uniform(0, 49_800, (n_obj, 2))
    objects = np.c_[xy, xy + rng.uniform(10, 120, (n_obj, 2))]
    lo = np.clip(np.floor((objects[:, :2] - 512) / stride).astype(int) + 1, 0, None)
    hi = np.floor(objects[:, 2:] / stride).astype(int)
    parts = []
    for dx in range(3):  # an object spans at most 3 window starts per axis
        for dy in range(3):
            wx, wy = (lo[:, 0] + dx) * stride, (lo[:, 1] + dy) * stride
            ok = (lo[:, 0] + dx <= hi[:, 0]) & (lo[:, 1] + dy <= hi[:, 1])
            piece = np.c_[np.maximum(objects[:, :2], np.c_[wx, wy]), np.minimum(objects[:, 2:], np.c_[wx, wy] + 512)]
            parts.append(np.c_[piece, np.arange(n_obj)][ok])
    det = np.concatenate(parts)
    det = det[(det[:, 2] > det[:, 0] + 1) & (det[:, 3] > det[:, 1] + 1)]
    boxes, obj = det[:, :4], det[:, 4].astype(int)
    labels = rng.integers(0, 5, n_obj)[obj]
    scores = rng.uniform(0.3, 1.0, len(boxes))
    assert 90_000 < len(boxes) < 130_000
    ios = merge_boxes(boxes, scores, labels, method="ios")
    assert 0.97 * n_obj < len(ios) <= n_obj  # cut objects joined; only the odd touching same-class pair fuses
    nms = merge_boxes(boxes, scores, labels, method="nms")
    assert n_obj < len(nms) < len(boxes)  # whole duplicates go, pieces of different sizes mostly stay
    wbf = merge_boxes(boxes, scores, labels, method="wbf")
    assert n_obj < len(wbf) < len(boxes)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "greedy"}, "unknown merge method 'greedy'; known: ios, nms, none, soft_nms, wbf"),
        ({"threshold": 0.0}, "threshold must be in (0, 1], got 0.0"),
        ({"threshold": 1.5}, "threshold must be in (0, 1], got 1.5"),
        ({"threshold": float("nan")}, "threshold must be in (0, 1], got nan"),
        ({"sigma": 0.0}, "sigma must be a positive number"),
        ({"xyxy": [[0, 0, 1]]}, "xyxy must have shape (N, 4), got (1, 3)"),
        ({"scores": [0.5, 0.5]}, "scores must have shape (1,) to match xyxy, got (2,)"),
        ({"labels": []}, "labels must have shape (1,) to match xyxy, got (0,)"),
        ({"xyxy": [[0, 0, np.nan, 1]]}, "xyxy must be finite"),
        ({"xyxy": [[5, 0, 1, 1]]}, "x1 >= x0"),
        ({"scores": [np.nan]}, "scores must be finite"),
        ({"scores": [-1.0], "method": "wbf"}, "scores must be >= 0"),
    ],
)
def test_bad_input_is_invalid_input_with_a_clear_message(kwargs: dict, message: str) -> None:
    args = {"xyxy": [[0, 0, 10, 10]], "scores": [0.5], "labels": ["a"], **kwargs}
    with pytest.raises(InvalidInput) as err:
        merge_boxes(args.pop("xyxy"), args.pop("scores"), args.pop("labels"), **args)
    assert message in str(err.value)


def test_empty_input_and_registry() -> None:
    assert set(MERGERS) == {"nms", "soft_nms", "wbf", "ios", "none"}
    assert [name for name, s in MERGERS.items() if s.fuses] == ["ios", "wbf"]
    for method in MERGERS:
        m = merge_boxes(np.zeros((0, 4)), [], np.array([], dtype=object), method=method)
        assert len(m) == 0 and m.xyxy.shape == (0, 4) and m.labels.dtype == object
        assert len(merge_annotations(Annotations.empty(), method=method)) == 0
