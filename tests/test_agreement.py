"""Agreement metrics and consensus fusion against published and hand-computed values."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import shapely
from scipy.optimize import linear_sum_assignment

from gigavision.active.agreement import (
    MatchOptions,
    cohen_kappa,
    f1_score,
    fleiss_kappa,
    fleiss_kappa_sets,
    iou_matrix,
    jaccard,
    match_annotations,
    matchable_pairs,
    matched_with,
    max_matching,
    mean_pairwise,
    set_kappa,
    shape_agreement,
    tag_agreement,
)
from gigavision.active.consensus import cluster_shapes, majority, shape_consensus, tag_consensus
from gigavision.annotations import Annotations
from gigavision.boxes import paired_iou
from gigavision.errors import InvalidInput

# Fleiss (1971) as worked through on Wikipedia's "Fleiss' kappa" page: 10 subjects, 14 raters, 5 categories.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def boxes(xyxy: list[list[float]], labels: str | list[str] = "cell") -> Annotations:
    return Annotations.from_boxes(xyxy, labels)


# -- tags ------------------------------------------------------------------------------------------------------
def test_cohen_kappa_matches_the_textbook_example() -> None:
    # Wikipedia "Cohen's kappa": 50 proposals, both yes 20, both no 15, A yes/B no 5, A no/B yes 10 -> 0.4
    a = ["yes"] * 20 + ["no"] * 15 + ["yes"] * 5 + ["no"] * 10
    b = ["yes"] * 20 + ["no"] * 15 + ["no"] * 5 + ["yes"] * 10
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["x"] * 5, ["x"] * 5) == 1.0  # 0/0 by the formula: complete agreement
    assert cohen_kappa(["x", "y"], ["y", "x"]) == pytest.approx(-1.0)
    with pytest.raises(InvalidInput, match="one answer per item"):
        cohen_kappa(["x"], ["x", "y"])
    with pytest.raises(InvalidInput, match="at least one item"):
        cohen_kappa([], [])


def test_fleiss_kappa_matches_the_published_example() -> None:
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.2099, abs=5e-4)
    # the same answers as tag sets (14 single tags per subject) give the same κ
    items = [[{f"c{j}"} for j, n in enumerate(row) for _ in range(n)] for row in FLEISS_TABLE]
    assert fleiss_kappa_sets(items) == pytest.approx(fleiss_kappa(FLEISS_TABLE))


def test_fleiss_kappa_edge_cases() -> None:
    # different numbers of raters per item, by hand: P = (1 + 1/3) / 2, Pe = 0.6² + 0.4² -> (2/3 - 0.52) / 0.48
    assert fleiss_kappa([[2, 0], [1, 2]]) == pytest.approx((2 / 3 - 0.52) / 0.48)
    assert fleiss_kappa([[3, 0], [3, 0]]) == 1.0  # everyone always says the same: complete agreement
    assert fleiss_kappa([[1, 1], [1, 1]]) == pytest.approx(-1.0)
    with pytest.raises(InvalidInput, match="at least 2"):
        fleiss_kappa([[1, 0], [2, 0]])
    with pytest.raises(InvalidInput, match="2-D"):
        fleiss_kappa([1, 2, 3])
    with pytest.raises(InvalidInput, match="whole numbers"):
        fleiss_kappa([[1.5, 0.5]])


def test_multi_label_kappa_is_the_mean_of_per_label_binary_kappas() -> None:
    a = [{"x"}, {"x", "y"}, set(), {"y"}]
    b = [{"x"}, {"x"}, {"y"}, {"y"}]
    # label x: identical present/absent columns -> 1; label y: [0,1,0,1] vs [0,0,1,1] -> p_o 0.5, p_e 0.5 -> 0
    assert set_kappa(a, b) == pytest.approx(0.5)
    assert set_kappa([{"x"}, {"y"}], [{"x"}, {"y"}]) == 1.0
    assert set_kappa([{"x"}, {"y"}, {"x"}], [{"x"}, {"x"}, {"y"}]) == pytest.approx(cohen_kappa("xyx", "xxy"))
    multi = [[{"x"}, {"x", "y"}, {"x"}], [set(), {"y"}, {"y"}]]
    # x: 3 of 3, 0 of 3 -> κ 1; y: 1 of 3, 2 of 3 -> P 1/3, Pe 1/2 -> κ -1/3; mean 1/3
    assert fleiss_kappa_sets(multi) == pytest.approx(1 / 3)
    assert fleiss_kappa([[3, 0], [0, 3]]) == 1.0 and fleiss_kappa([[1, 2], [2, 1]]) == pytest.approx(-1 / 3)
    assert fleiss_kappa_sets([[set(), set()]]) == 1.0


def test_jaccard_and_item_tag_agreement() -> None:
    assert jaccard(set(), set()) == 1.0
    assert jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)
    table = tag_agreement([{"a"}, {"a"}, {"b"}])
    assert table.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert mean_pairwise(table) == pytest.approx(1 / 3)  # Fleiss' P_i for 2 of 3 agreeing
    assert mean_pairwise(np.eye(1)) == 1.0


# -- shapes ----------------------------------------------------------------------------------------------------
def test_box_iou_and_f1_edge_cases() -> None:
    assert paired_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]]).tolist() == pytest.approx([50 / 150])
    assert paired_iou([[0, 0, 0, 0]], [[0, 0, 0, 0]]).tolist() == [0.0]  # empty boxes: no division by zero
    empty = Annotations.empty()
    one = boxes([[0, 0, 10, 10]])
    assert f1_score(empty, empty) == 1.0  # both saw nothing
    assert f1_score(one, empty) == 0.0 and f1_score(empty, one) == 0.0
    # IoU exactly at the threshold matches (100 / 200 = 0.5)
    assert f1_score(one, boxes([[0, 0, 10, 20]])) == 1.0
    assert f1_score(one, boxes([[0, 0, 10, 21]])) == 0.0
    # label mismatch: no match unless labels are ignored
    other = boxes([[0, 0, 10, 10]], "dust")
    assert f1_score(one, other) == 0.0
    assert f1_score(one, other, MatchOptions(match_labels=False)) == 1.0
    # a duplicated box matches once: 1 match of 2 + 1 shapes
    dup = boxes([[0, 0, 10, 10], [0, 0, 10, 10]])
    m = match_annotations(dup, one)
    assert m.f1 == pytest.approx(2 / 3) and m.matched_a.sum() == 1 and m.precision == 0.5 and m.recall == 1.0
    with pytest.raises(InvalidInput, match="tags have no geometry"):
        f1_score(Annotations.from_tags(["x"]), one)
    with pytest.raises(InvalidInput, match="iou_threshold"):
        MatchOptions(iou_threshold=0)
    with pytest.raises(InvalidInput, match="point_radius"):
        MatchOptions(point_radius=float("nan"))


def test_matching_maximises_pairs_where_greedy_would_not() -> None:
    # greedy by IoU takes A1-B1 (0.82) and strands A2 (A2-B2 0.25); the Hungarian matching pairs both
    a = boxes([[11, 0, 21, 10], [8, 0, 18, 10]])  # A1, A2
    b = boxes([[10, 0, 20, 10], [14, 0, 24, 10]])  # B1, B2
    assert iou_matrix(a, b) == pytest.approx(np.array([[9 / 11, 7 / 13], [8 / 12, 4 / 16]]))
    m = match_annotations(a, b)
    assert m.pairs.tolist() == [[0, 1], [1, 0]] and m.f1 == 1.0
    assert m.similarity.tolist() == pytest.approx([7 / 13, 8 / 12])


def test_sparse_matching_equals_a_dense_hungarian() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        n_a, n_b = rng.integers(0, 25, 2)
        xy_a, xy_b = rng.uniform(0, 200, (n_a, 2)), rng.uniform(0, 200, (n_b, 2))
        a = boxes(np.hstack([xy_a, xy_a + rng.uniform(10, 40, (n_a, 2))]).tolist())
        b = boxes(np.hstack([xy_b, xy_b + rng.uniform(10, 40, (n_b, 2))]).tolist())
        ia, ib, sim = matchable_pairs(a, b, MatchOptions(iou_threshold=0.2))
        got = max_matching(ia, ib, sim, n_a, n_b)
        dense = np.zeros((n_a, n_b))
        dense[ia, ib] = 1000 + sim
        r, c = linear_sum_assignment(dense, maximize=True) if n_a and n_b else ([], [])
        best = dense[r, c]
        assert len(got) == int((best > 0).sum())
        assert sim_total(got, ia, ib, sim) == pytest.approx(float(best[best > 0].sum() - 1000 * len(got)))
        assert len(set(got[:, 0].tolist())) == len(got) == len(set(got[:, 1].tolist()))


def sim_total(pairs: np.ndarray, ia: np.ndarray, ib: np.ndarray, sim: np.ndarray) -> float:
    lookup = {(int(i), int(j)): float(s) for i, j, s in zip(ia, ib, sim, strict=True)}
    return sum(lookup[(int(i), int(j))] for i, j in pairs)


def test_polygon_mask_and_point_similarity() -> None:
    square = shapely.box(0, 0, 10, 10)
    shifted = shapely.box(5, 0, 15, 10)
    a = Annotations.from_polygons([square], "cell")
    b = Annotations.from_polygons([shifted], "cell")
    assert iou_matrix(a, b)[0, 0] == pytest.approx(1 / 3)
    assert f1_score(a, b) == 0.0 and f1_score(a, b, MatchOptions(iou_threshold=0.3)) == 1.0
    bowtie = Annotations.from_polygons([[(0, 0), (10, 10), (10, 0), (0, 10)]], "cell")  # self-intersecting
    assert 0 < iou_matrix(bowtie, a)[0, 0] < 1

    # masks in different windows: compare with pycocotools' IoU on a common canvas
    rng = np.random.default_rng(1)
    m1, m2 = rng.random((30, 40)) > 0.3, rng.random((25, 35)) > 0.3
    m1[0, 0] = m1[-1, -1] = m2[0, 0] = m2[-1, -1] = True  # keep the windows as drawn
    ma = Annotations.from_masks([m1], [(100, 50)], "cell")
    mb = Annotations.from_masks([m2], [(110, 60)], "cell")
    canvas_a, canvas_b = np.zeros((200, 200), np.uint8), np.zeros((200, 200), np.uint8)
    canvas_a[50:80, 100:140], canvas_b[60:85, 110:145] = m1, m2
    rles = [mask_utils.encode(np.asfortranarray(c)) for c in (canvas_a, canvas_b)]
    expected = float(mask_utils.iou([rles[0]], [rles[1]], [0])[0][0])
    assert iou_matrix(ma, mb)[0, 0] == pytest.approx(expected)
    # a mask and a polygon of the same pixels are the same object
    full = Annotations.from_masks([np.ones((10, 10), bool)], [(0, 0)], "cell")
    assert iou_matrix(full, a)[0, 0] == pytest.approx(1.0)

    p = Annotations.from_points([[0, 0], [100, 100]], "nucleus")
    q = Annotations.from_points([[3, 4], [100, 112]], "nucleus")
    m = match_annotations(p, q, MatchOptions(point_radius=10))
    assert m.pairs.tolist() == [[0, 0]] and m.similarity.tolist() == pytest.approx([0.5])  # 5 px of 10
    assert f1_score(p, q, MatchOptions(point_radius=12)) == 1.0
    assert f1_score(p[[0]], boxes([[0, 0, 1, 1]], "nucleus"), MatchOptions(match_labels=False)) == 0.0


def test_shape_agreement_table() -> None:
    a = boxes([[0, 0, 10, 10], [20, 20, 30, 30]])
    b = boxes([[0, 0, 10, 10]])
    c = Annotations.empty()
    table = shape_agreement([a, b, c])
    assert table == pytest.approx(np.array([[1, 2 / 3, 0], [2 / 3, 1, 0], [0, 0, 1]]))


def test_matched_with_names_the_other_raters_per_shape_and_per_tag() -> None:
    a = boxes([[0, 0, 10, 10], [20, 20, 30, 30]])
    b = boxes([[0, 0, 10, 10], [1, 1, 10, 10]])  # only one of b's boxes can pair with a's first (one-to-one)
    c = boxes([[21, 20, 30, 30]])
    assert matched_with([a, b, c]) == [[[1], [2]], [[0], []], [[0]]]
    assert matched_with([a, Annotations.empty()]) == [[[], []], []]
    tags = [Annotations.from_tags(t) for t in (["cat", "dog"], ["dog"], [])]
    assert matched_with(tags) == [[[], [1]], [[0]], []]


# -- consensus -------------------------------------------------------------------------------------------------
def test_tag_consensus_is_a_strict_majority() -> None:
    assert majority(2) == 2 and majority(3) == 2 and majority(4) == 3
    assert tag_consensus([{"a", "b"}, {"a"}, {"a", "c"}]) == ["a"]
    assert tag_consensus([{"a"}, {"a", "b"}]) == ["a"]
    assert tag_consensus([{"a"}, {"b"}]) == []


def test_box_consensus_averages_matched_boxes_and_drops_minority_ones() -> None:
    ana = boxes([[10, 10, 50, 50], [100, 100, 140, 150]])
    bo = boxes([[12, 10, 52, 50], [100, 102, 140, 150], [200, 200, 220, 220]])
    fused = shape_consensus([ana, bo])
    assert fused.xyxy.tolist() == [[11, 10, 51, 50], [100, 101, 140, 150]]  # bo's lone box: 1 of 2 is no majority
    cy = boxes([[201, 200, 221, 220], [101, 100, 141, 150]])
    fused3 = shape_consensus([ana, bo, cy])
    assert sorted(fused3.xyxy.tolist()) == [
        [11, 10, 51, 50],  # ana + bo
        [(100 + 100 + 101) / 3, (100 + 102 + 100) / 3, (140 + 140 + 141) / 3, 150],  # all three
        [200.5, 200, 220.5, 220],  # bo + cy: 2 of 3
    ]
    assert len(cluster_shapes([ana, bo, cy])) == 3


def test_polygon_consensus_takes_the_medoid_and_the_majority_label() -> None:
    small, mid, big = shapely.box(0, 0, 10, 10), shapely.box(0, 0, 11, 11), shapely.box(0, 0, 12, 12)
    sets = [
        Annotations.from_polygons([small], "tumour"),
        Annotations.from_polygons([mid], "stroma"),
        Annotations.from_polygons([big], "stroma"),
    ]
    fused = shape_consensus(sets, MatchOptions(match_labels=False))
    assert len(fused) == 1 and fused.geometry[0].equals(mid) and fused.label[0] == "stroma"
    # with labels matched, tumour stands alone and stroma (2 of 3) wins
    fused = shape_consensus(sets)
    assert fused.label.tolist() == ["stroma"] and fused.geometry[0].equals(mid)
    # complete linkage: a chain a~b~c where a and c do not match yields no three-member cluster
    chain = [boxes([[0, 0, 10, 10]]), boxes([[3, 0, 13, 10]]), boxes([[6, 0, 16, 10]])]
    assert sorted(len(c) for c in cluster_shapes(chain)) == [1, 2]


def test_mask_and_point_consensus() -> None:
    def square(size: int) -> np.ndarray:
        return np.ones((size, size), dtype=bool)

    sets = [Annotations.from_masks([square(s)], [(10, 10)], "cell") for s in (20, 21, 23)]
    fused = shape_consensus(sets)
    assert len(fused) == 1 and fused.kind[0] == "mask" and fused.mask[0] == sets[1].mask[0]  # the middle one
    assert fused.xyxy.tolist() == [[10, 10, 31, 31]]
    points = [Annotations.from_points([[0, 0], [50, 50]], "nucleus"), Annotations.from_points([[2, 0]], "nucleus")]
    fused = shape_consensus(points, MatchOptions(point_radius=5))
    assert fused.kind.tolist() == ["point"] and fused.xyxy.tolist() == [[1, 0, 1, 0]]
    assert fused.geometry[0].equals(shapely.Point(1, 0))
