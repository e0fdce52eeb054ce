"""Region-level active learning: windows of a big image ranked by the model's uncertainty, background windows
skipped, chosen windows never overlapping, review tasks with the window as region, and bad input refused.

Most tests hand ``select_regions`` made-up predictions (a ``Predict`` that returns them), so they run in
milliseconds; one runs the real tiled engine with the session's trained detector on a small planted scene."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from sqlalchemy import select

import gigavision as gv
from gigavision.active.regions import ImagePredictions, region_windows, score_windows, select_regions
from gigavision.errors import InvalidInput, NotFound
from gigavision.store.schema import ReviewTaskRow
from tests.conftest import DETECT_SIZE, Trained

SIDE = 512
TILE = 64  # an 8 × 8 grid of windows


@pytest.fixture
def image(sqlite_workspace: gv.Workspace, tmp_path: Path) -> str:
    """A 512² crop of skimage's astronaut ingested into the workspace."""
    from skimage import data

    path = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()[:SIDE, :SIDE]).save(path)
    (added,) = sqlite_workspace.ingest([path])
    assert added.id
    return added.id


def fake(image_id: str, boxes: list[tuple[float, float, float, float]], unsure: list[float], mask: np.ndarray | None):
    """A ``Predict`` that answers ``boxes`` with their uncertainties, at level 0 with 64-px windows."""
    ann = gv.Annotations.from_boxes(
        np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        [f"obj{i}" for i in range(len(boxes))],
        score=np.full(len(boxes), 0.5),
        attributes=[{"uncertainty": u} for u in unsure],
    )
    calls: list[bool] = []

    def predict(model_ref: str, image_ids: Sequence[str], *, level: int | None, run: bool):
        calls.append(run)
        items = [
            ImagePredictions(i, SIDE, SIDE, 0, 1.0, TILE, annotations=ann if run else None, mask=mask)
            for i in image_ids
        ]
        return "model-x", items

    predict.calls = calls  # type: ignore[attr-defined]
    return predict


def _box(col: int, row: int, pad: int = 10) -> tuple[float, float, float, float]:
    """A box inside window (col, row) of the 64-px grid."""
    return (col * TILE + pad, row * TILE + pad, (col + 1) * TILE - pad, (row + 1) * TILE - pad)


def test_windows_are_ranked_by_the_uncertainty_of_the_predictions_in_them(
    sqlite_workspace: gv.Workspace, image: str
) -> None:
    boxes = [_box(1, 1), _box(5, 2), _box(3, 6), _box(6, 6), _box(6, 6, pad=20)]
    unsure = [0.2, 0.9, 0.6, 0.1, 0.3]
    predict = fake(image, boxes, unsure, None)
    got = select_regions(sqlite_workspace, "model-x", [image], 3, predict=predict)
    assert [r.xyxy for r in got.regions] == [(320, 128, 384, 192), (192, 384, 256, 448), (384, 384, 448, 448)]
    assert [r.score for r in got.regions] == [0.9, 0.6, 0.3]
    assert got.regions[2].predictions == 2 and got.regions[2].label == "obj4"  # its most uncertain one
    assert [r.rank for r in got.regions] == [1, 2, 3]
    # "sum" weighs every prediction: the window with two (0.1 + 0.3) passes the one with 0.2
    by_sum = select_regions(sqlite_workspace, "model-x", [image], 4, predict=predict, aggregate="sum")
    assert [round(r.score, 6) for r in by_sum.regions] == [0.9, 0.6, 0.4, 0.2]
    assert got.windows == 64 and got.background == 0


def test_a_prediction_counts_in_one_window_and_chosen_windows_never_overlap(
    sqlite_workspace: gv.Workspace, image: str
) -> None:
    # one object astride the border of windows (1, 1) and (2, 1), centred in (2, 1): only that window scores
    astride = (110.0, 70.0, 160.0, 120.0)
    predict = fake(image, [astride], [0.8], None)
    got = select_regions(sqlite_workspace, "model-x", [image], 64, predict=predict)
    assert got.regions[0].xyxy == (128, 64, 192, 128)
    assert [r.score for r in got.regions[1:]] == [0.0] * 63
    boxes = np.array([r.xyxy for r in got.regions])
    ix0, iy0 = np.maximum(boxes[:, None, 0], boxes[None, :, 0]), np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    ix1, iy1 = np.minimum(boxes[:, None, 2], boxes[None, :, 2]), np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    overlap = (ix1 > ix0) & (iy1 > iy0)
    assert overlap.sum() == len(boxes)  # each window overlaps only itself
    assert boxes.min() >= 0 and boxes[:, 2:].max() <= SIDE
    # spacing 1: no two chosen windows side by side or corner to corner
    spread = select_regions(
        sqlite_workspace,
        "model-x",
        [image],
        8,
        predict=fake(image, [_box(c, 0) for c in range(8)], [0.5] * 8, None),
        spacing=1,
    )
    cols = sorted(r.xyxy[0] // TILE for r in spread.regions if r.xyxy[1] == 0)
    assert all(b - a >= 2 for a, b in itertools.pairwise(cols))


def test_background_windows_are_skipped(sqlite_workspace: gv.Workspace, image: str) -> None:
    mask = np.zeros((64, 64), dtype=bool)
    mask[:, 32:] = True  # the right half of the image is foreground
    # the most uncertain prediction lies on background: its window is never offered
    predict = fake(image, [_box(0, 0), _box(7, 7)], [0.99, 0.4], mask)
    got = select_regions(sqlite_workspace, "model-x", [image], 32, predict=predict)
    assert got.background == 32 and len(got.regions) == 32
    assert all(r.xyxy[0] >= SIDE // 2 for r in got.regions)
    assert got.regions[0].xyxy == (448, 448, 512, 512)
    # random: the model is not run, and the order changes with the seed only
    rand = select_regions(
        sqlite_workspace, "model-x", [image], 10, strategy="random", predict=fake(image, [], [], mask)
    )
    again = select_regions(
        sqlite_workspace, "model-x", [image], 10, strategy="random", predict=fake(image, [], [], mask)
    )
    assert [r.xyxy for r in rand.regions] == [r.xyxy for r in again.regions]
    assert all(r.xyxy[0] >= SIDE // 2 for r in rand.regions)
    other = select_regions(
        sqlite_workspace, "model-x", [image], 10, strategy="random", predict=fake(image, [], [], mask), seed=1
    )
    assert [r.xyxy for r in other.regions] != [r.xyxy for r in rand.regions]


def test_random_does_not_run_the_model(sqlite_workspace: gv.Workspace, image: str) -> None:
    predict = fake(image, [], [], None)
    select_regions(sqlite_workspace, "model-x", [image], 5, strategy="random", predict=predict)
    assert predict.calls == [False]  # type: ignore[attr-defined]
    predict = fake(image, [], [], None)
    select_regions(sqlite_workspace, "model-x", [image], 5, predict=predict)
    assert predict.calls == [False, True]  # type: ignore[attr-defined]


def test_chosen_windows_become_review_tasks(sqlite_workspace: gv.Workspace, image: str) -> None:
    predict = fake(image, [_box(5, 2), _box(3, 6)], [0.9, 0.6], None)
    got = select_regions(
        sqlite_workspace, "model-x", [image], 2, predict=predict, create_tasks=True, actor="ann", batch="b1"
    )
    assert got.tasks == 2 and got.batch == "b1"
    with sqlite_workspace.session() as s:
        rows = s.scalars(select(ReviewTaskRow).order_by(ReviewTaskRow.priority.desc())).all()
        tasks = [
            (t.reason, t.status, t.image_id, (t.x0, t.y0, t.x1, t.y1), t.model_id, t.label, t.priority, t.created_by)
            for t in rows
        ]
        details = rows[0].details
    assert tasks == [
        ("selected", "open", image, (320.0, 128.0, 384.0, 192.0), "model-x", "obj0", 0.9, "ann"),
        ("selected", "open", image, (192.0, 384.0, 256.0, 448.0), "model-x", "obj1", 0.6, "ann"),
    ]
    assert details is not None and details["strategy"] == "uncertainty" and details["window"] == [320, 128, 384, 192]
    # without create_tasks nothing is written
    select_regions(sqlite_workspace, "model-x", [image], 2, predict=predict)
    with sqlite_workspace.session() as s:
        assert len(s.scalars(select(ReviewTaskRow)).all()) == 2


def test_bad_input_is_refused_before_the_model_runs(sqlite_workspace: gv.Workspace, image: str) -> None:
    predict = fake(image, [], [], None)
    with pytest.raises(InvalidInput, match=r"budget 65 is larger than the 64 foreground windows"):
        select_regions(sqlite_workspace, "model-x", [image], 65, predict=predict)
    assert predict.calls == [False]  # type: ignore[attr-defined]
    mask = np.zeros((64, 64), dtype=bool)
    with pytest.raises(InvalidInput, match="no foreground windows"):
        select_regions(sqlite_workspace, "model-x", [image], 1, predict=fake(image, [], [], mask))
    for kwargs, message in [
        ({"budget": 0}, "budget must be"),
        ({"strategy": "entropy"}, "strategy must be one of uncertainty, random"),
        ({"aggregate": "median"}, "aggregate must be one of max, sum"),
        ({"window": 4}, "window must be at least 8"),
        ({"min_foreground": 2.0}, "min_foreground"),
        ({"spacing": -1}, "spacing"),
    ]:
        args = {"budget": 1, **kwargs}
        with pytest.raises(InvalidInput, match=message):
            select_regions(sqlite_workspace, "model-x", [image], predict=predict, **args)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="name at least one"):
        select_regions(sqlite_workspace, "model-x", [], 1, predict=predict)
    with pytest.raises(NotFound):
        select_regions(sqlite_workspace, "model-x", ["no-such-image"], 1, predict=predict)


def test_score_windows_uses_per_tile_uncertainty_and_ignores_tags() -> None:
    windows = region_windows(200, 100, 50)  # 4 × 2 windows
    assert windows.shape == (8, 4)
    tag = gv.Annotations.from_records([{"kind": "tag", "label": "cat", "score": 0.5, "attributes": {"uncertainty": 1}}])
    tiles = np.array([[0, 0, 50, 50], [150, 50, 200, 100]])
    s = score_windows(windows, tag, tiles, np.array([0.3, 0.7]))
    assert s.max.tolist() == [0.3, 0, 0, 0, 0, 0, 0, 0.7] and s.top.tolist() == [-1] * 8
    clipped = region_windows(130, 70, 50)
    assert clipped[:, 2].max() == 130 and clipped[:, 3].max() == 70 and len(clipped) == 6


# -- the real engine -----------------------------------------------------------------------------------------
def test_the_tiled_engine_ranks_the_windows_of_a_planted_scene(scenes_detector: Trained, tmp_path: Path) -> None:
    """The session's detector over a 512² planted scene whose left quarter is no-data: the background windows
    are never offered, the chosen ones hold predictions, and a level the image lacks is refused."""
    from typer.testing import CliRunner

    from gigavision.cli.regions import engine_predict, regions_cmd
    from tests.test_infer_zoom import _canvas

    rng = np.random.default_rng(3)
    cells = 4
    canvas, _ = _canvas(rng, cells, {1, 2, 6, 7, 10, 11, 14, 15})
    canvas[:, :DETECT_SIZE] = 0  # no data: ingest's mask marks it background
    path = tmp_path / "planted.png"
    Image.fromarray(canvas).save(path)
    ws = gv.init_workspace(tmp_path / "ws")
    try:
        info = scenes_detector.info
        shutil.copytree(info.path, ws.root / "models" / info.id)
        (added,) = ws.ingest([path])
        assert added.id
        got = select_regions(ws, info.id, [added.id], 4, predict=engine_predict(ws), create_tasks=True)
        assert got.model == info.id and got.window == DETECT_SIZE
        assert got.windows == 16 and got.background == 4
        assert all(r.xyxy[0] >= DETECT_SIZE for r in got.regions)
        assert got.regions[0].predictions >= 1 and got.regions[0].score > 0
        assert [r.score for r in got.regions] == sorted((r.score for r in got.regions), reverse=True)
        assert got.tasks == 4
        with pytest.raises(InvalidInput, match="level"):
            select_regions(ws, info.id, [added.id], 1, predict=engine_predict(ws), level=3)
        # the command: --dry-run creates no tasks; random never runs the model
        app = typer.Typer()
        app.command()(regions_cmd)
        args = ["--model", info.id, added.id, "-n", "3", "--strategy", "random", "-w", str(ws.root), "--json"]
        result = CliRunner().invoke(app, [*args, "--dry-run"])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["tasks"] == 0 and len(doc["regions"]) == 3 and doc["background"] == 4
        result = CliRunner().invoke(app, [*args[:3], "-n", "13", *args[5:]])
        assert isinstance(result.exception, InvalidInput) and "larger than the 12 foreground windows" in str(
            result.exception
        )
    finally:
        ws.close()
