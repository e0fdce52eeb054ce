"""The Annotations exchange type: construction, validation, indexing, merge, geometry, records."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import shapely
from skimage import data, measure

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput


@pytest.fixture(scope="module")
def coins() -> tuple[np.ndarray, list[dict[str, object]]]:
    """Real objects: the coins of scikit-image's `coins` scan, segmented by a threshold."""
    image = data.coins()
    labelled = measure.label(image > 110)
    h, w = image.shape
    regions = [  # whole coins: not cut by the scan's border
        r
        for r in measure.regionprops(labelled)
        if r.area > 500 and r.bbox[0] > 0 and r.bbox[1] > 0 and r.bbox[2] < h and r.bbox[3] < w
    ]
    assert len(regions) >= 10
    return labelled, [{"label": r.label, "bbox": r.bbox, "area": r.area, "filled": r.area_filled} for r in regions]


def test_boxes_polygons_points_tags_merge_and_index(coins: tuple[np.ndarray, list[dict[str, object]]]) -> None:
    labelled, regions = coins
    boxes = np.array([[r["bbox"][1], r["bbox"][0], r["bbox"][3], r["bbox"][2]] for r in regions], dtype=float)  # type: ignore[index]
    a = Annotations.from_boxes(boxes, "coin", source="user:ana", status=["accepted"] * len(boxes))
    contours = [max(measure.find_contours(labelled == r["label"], 0.5), key=len) for r in regions[:3]]
    polys = Annotations.from_polygons([c[:, ::-1] for c in contours], ["coin", "coin", "scratch"], source="model:m1@1")
    pts = Annotations.from_points([[10, 20], [30, 40]], "centre")
    tags = Annotations.from_tags(["money", "metal"], source="user:bo")
    allann = Annotations.merge([a, polys, pts, tags])
    assert len(allann) == len(boxes) + 3 + 2 + 2
    assert list(np.unique(allann.kind)) == ["box", "point", "polygon", "tag"]
    # boolean indexing, like supervision.Detections
    coins_only = allann[allann.label == "coin"]
    assert len(coins_only) == len(boxes) + 2 and set(coins_only.kind) == {"box", "polygon"}
    assert len(allann[allann.kind == "tag"]) == 2 and np.isnan(allann[allann.kind == "tag"].xyxy).all()
    assert allann[0].label[0] == "coin" and allann[0].status[0] == "accepted"
    # polygons: bbox from geometry, area close to the real pixel count of each coin
    for i in range(3):
        assert polys.area[i] == pytest.approx(regions[i]["filled"], rel=0.06)  # outline encloses holes
        assert polys.xyxy[i][0] >= boxes[i][0] - 1 and polys.xyxy[i][2] <= boxes[i][2] + 1
    assert a.area == pytest.approx((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))


def test_masks_round_trip_as_rle(coins: tuple[np.ndarray, list[dict[str, object]]]) -> None:
    labelled, regions = coins
    region = regions[0]
    y0, x0, y1, x1 = region["bbox"]  # type: ignore[misc]
    crop = labelled[y0:y1, x0:x1] == region["label"]
    ann = Annotations.from_masks([crop], [(1000 + x0, 2000 + y0)], "coin")
    assert ann.kind[0] == "mask" and ann.mask[0]["size"] == [y1 - y0, x1 - x0]
    assert list(ann.xyxy[0]) == [1000 + x0, 2000 + y0, 1000 + x1, 2000 + y1]
    assert np.array_equal(ann.decode_mask(0), crop)
    assert ann.area[0] == region["area"]
    outline = ann.shapes()[0]
    assert outline.area == pytest.approx(region["area"]) and outline.bounds == tuple(ann.xyxy[0])


def test_records_are_json_and_round_trip() -> None:
    ring = shapely.Polygon([(0, 0), (100, 0), (100, 80), (0, 80)], holes=[[(20, 20), (40, 20), (40, 40), (20, 40)]])
    a = Annotations.merge(
        [
            Annotations.from_polygons([ring], "tissue", attributes=[{"grade": "high"}], score=np.array([0.75])),
            Annotations.from_boxes([[5, 6, 7, 8]], "cell"),
            Annotations.from_tags(["tumour"]),
            Annotations.from_masks([np.eye(4, dtype=bool)], [(10, 10)], "nucleus"),
        ]
    )
    records = json.loads(json.dumps(a.to_records()))
    assert records[0]["geometry"]["type"] == "Polygon" and len(records[0]["geometry"]["coordinates"]) == 2
    assert records[0]["attributes"] == {"grade": "high"} and records[0]["score"] == 0.75
    assert records[1]["score"] is None and records[2]["bbox"] is None
    back = Annotations.from_records(records)
    assert list(back.kind) == list(a.kind) and list(back.label) == list(a.label)
    assert np.allclose(back.xyxy[:2], a.xyxy[:2]) and np.isnan(back.xyxy[2]).all()
    assert back.geometry[0].equals(ring) and back.area[0] == ring.area
    assert np.array_equal(back.decode_mask(3), np.eye(4, dtype=bool))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Annotations.from_boxes([[0, 0, math.nan, 5]], "x"), "finite"),
        (lambda: Annotations.from_boxes([[10, 0, 5, 5]], "x"), "x1 >= x0"),
        (lambda: Annotations.from_boxes([[0, 0, 5, 5]], "x", status=["done"]), "status"),
        (lambda: Annotations.from_boxes([[0, 0, 5, 5]], [3]), "text"),  # type: ignore[list-item]
        (lambda: Annotations.from_polygons([shapely.Point(1, 1)], "x"), "Polygon"),
        (lambda: Annotations.from_masks([np.zeros((3, 3), bool)], [(0, 0)], "x"), "set pixel"),
        (lambda: Annotations.from_records([{"kind": "box", "label": "x"}]), "record 0"),
        (
            lambda: Annotations(
                kind=np.array(["blob"], dtype=object), label=np.array(["x"], dtype=object), xyxy=np.zeros((1, 4))
            ),
            "kind",
        ),
    ],
)
def test_invalid_annotations_say_what_is_wrong(build: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        build()  # type: ignore[operator]


def test_empty_and_repr() -> None:
    e = Annotations.empty()
    assert len(e) == 0 and len(Annotations.merge([e, e])) == 0 and e.to_records() == []
    assert "polygon" in repr(Annotations.from_polygons([[(0, 0), (1, 0), (1, 1)]], "x"))
