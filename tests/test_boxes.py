"""The one box IoU and NMS (gigavision.boxes) against torchvision's, and the sparse form against the dense one."""

from __future__ import annotations

import numpy as np
import pytest

from gigavision.boxes import box_iou, nms, paired_iou, suppress
from gigavision.tiling.merge import overlapping_pairs


def _boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(0, 40, (n, 2))
    wh[::17] = 0  # some boxes without area
    return np.c_[xy, xy + wh]


def test_box_iou_matches_torchvision_and_paired_is_its_diagonal() -> None:
    torch = pytest.importorskip("torch")
    from torchvision.ops import box_iou as tv_box_iou

    rng = np.random.default_rng(0)
    a, b = _boxes(rng, 40), _boxes(rng, 30)
    ours = box_iou(a, b)
    theirs = np.nan_to_num(tv_box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy())
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    np.testing.assert_allclose(paired_iou(a[:30], b), np.diag(ours[:30]))
    assert box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]]).tolist() == [[pytest.approx(50 / 150)]]
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 30)


@pytest.mark.parametrize("seed", range(4))
def test_nms_matches_torchvision_batched_nms_and_sparse_suppress(seed: int) -> None:
    torch = pytest.importorskip("torch")
    from torchvision.ops import batched_nms

    rng = np.random.default_rng(seed)
    boxes = _boxes(rng, 300)
    scores = rng.uniform(0, 1, 300).round(2)  # ties: the lower index wins, as in torchvision
    codes = rng.integers(0, 3, 300)
    keep = nms(boxes, scores, 0.5, codes=codes)
    expected = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(codes), 0.5)
    assert keep.tolist() == expected.numpy().tolist()
    assert nms(boxes, scores, 0.5, limit=10, codes=codes).tolist() == keep[:10].tolist()

    # the sparse form (the cross-tile merge's): same rows kept, each suppressed row owned by a kept one
    i, j, inter = overlapping_pairs(boxes, codes)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    over = inter / (area[i] + area[j] - inter) > 0.5
    rank = np.empty(300, dtype=np.int64)
    rank[np.argsort(-scores, kind="stable")] = np.arange(300)
    owner = suppress(rank, i[over], j[over])
    kept = np.flatnonzero(owner == np.arange(300))
    assert sorted(kept.tolist()) == sorted(keep.tolist())
    assert set(owner.tolist()) <= set(kept.tolist())
