"""The tiled-inference pipeline (reader → preprocess → model → decode/merge threads): results in order, a stage's
error reaching the caller as raised, and no thread left running after a run ends, fails or is cancelled."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gigavision.images.registry import open_image
from gigavision.infer.engine import InferOptions, infer_image
from gigavision.infer.reading import Resolution, ahead, read_bands, read_window
from gigavision.models.predict import Predictor
from gigavision.tiling.grid import window_grid
from tests.conftest import DETECT_SIZE, Trained
from tests.scenes import make_scenes


def _stage_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("gv-")]


def test_stages_keep_order_forward_errors_and_stop_when_the_consumer_stops() -> None:
    closed: list[str] = []

    def numbers(n: int) -> Iterator[int]:
        try:
            yield from range(n)
        finally:
            closed.append("numbers")

    def explode_at_3(x: int) -> int:
        if x == 3:
            raise ValueError("window 3 is broken")
        return x

    assert list(ahead(ahead(numbers(50), lambda x: x * 2), lambda x: x + 1)) == [2 * x + 1 for x in range(50)]
    got: list[int] = []
    with pytest.raises(ValueError, match=r"^window 3 is broken$"):
        for x in ahead(ahead(numbers(50), explode_at_3), lambda x: x):
            got.append(x)
    assert got == [0, 1, 2]  # everything before the error, in order, then the error itself
    stages = ahead(ahead(numbers(10_000), lambda x: x, depth=2), lambda x: x, depth=2)
    assert [next(stages) for _ in range(3)] == [0, 1, 2]
    stages.close()  # the consumer stops early: every stage thread is joined and the source closed
    assert closed == ["numbers"] * 3 and _stage_threads() == []


@pytest.fixture
def mosaic(tmp_path: Path) -> Path:
    scenes = make_scenes(8, DETECT_SIZE, seed=71)
    pixels = np.concatenate([np.concatenate([s.pixels for s in scenes[r * 4 : r * 4 + 4]], axis=1) for r in (0, 1)])
    Image.fromarray(pixels).save(tmp_path / "mosaic.png")
    return tmp_path / "mosaic.png"


class Cancelled(Exception):
    pass


def test_a_cancelled_or_failing_run_leaves_no_stage_thread(
    scenes_detector: Trained, mosaic: Path, tmp_path: Path
) -> None:
    predictor = Predictor(scenes_detector.info)
    options = InferOptions(tile=DETECT_SIZE, overlap=0, batch=1)  # 8 batches: the stages are busy ahead
    seen: list[float] = []

    def cancel_after_two(done: float, total: float, message: str, /) -> None:
        seen.append(done)
        if done == 2:
            raise Cancelled("stopped by the user")

    with open_image(mosaic) as source:
        whole = infer_image(predictor, source, name="m", options=options, out_dir=tmp_path / "whole")
        with pytest.raises(Cancelled, match="stopped by the user"):
            infer_image(predictor, source, name="m", options=options, out_dir=tmp_path / "c", progress=cancel_after_two)
        assert seen == [1, 2] and _stage_threads() == []

        calls = 0
        run = predictor.run

        def falls_over(batch: np.ndarray, side: Any = None) -> list[np.ndarray]:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise RuntimeError("the network fell over on batch 3")
            return run(batch, side)

        predictor.run = falls_over  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match=r"^the network fell over on batch 3$"):
            infer_image(predictor, source, name="m", options=options, out_dir=tmp_path / "f")
        assert _stage_threads() == []
        predictor.run = run  # type: ignore[method-assign]
        again = infer_image(predictor, source, name="m", options=options, out_dir=tmp_path / "again")
    assert whole.tiles_run == 8 and len(whole.annotations) > 0
    # a run after a cancelled and a failed one: the same detections in the same order (nothing left over)
    np.testing.assert_array_equal(again.annotations.xyxy, whole.annotations.xyxy)
    np.testing.assert_array_equal(again.annotations.label, whole.annotations.label)


def test_windows_cut_from_bands_are_the_pixels_window_reads_give(tmp_path: Path) -> None:
    """zoom-in's coarse pass reads a level a row band at a time and cuts windows with NumPy: every window (edge
    windows, a grid with holes, several bands) has exactly the pixels of a read of its own, zero past the
    image; a band that fails to decode is read window by window and only the unreadable window is lost."""
    import pyvips
    import skimage.data

    from gigavision.demo import write_pyramid

    astronaut = skimage.data.astronaut()[:500, :470]  # 470×500: the grid's last windows are shifted inside
    image = pyvips.Image.new_from_memory(astronaut.tobytes(), 470, 500, 3, "uchar")
    write_pyramid(image, tmp_path / "a.tif")
    with open_image(tmp_path / "a.tif") as source:
        res = Resolution(1, float(source.levels[1].downsample))
        windows = window_grid(source.width, source.height, 32, overlap=8, downsample=res.downsample)
        keep = windows[np.arange(len(windows)) % 3 != 1]  # holes, as background windows leave

        def own_read(box: np.ndarray) -> np.ndarray:
            out = np.zeros((32, 32, 3), dtype=np.uint8)
            pixels = read_window(source, res, box, 32)
            out[: pixels.shape[0], : pixels.shape[1]] = pixels
            return out

        cuts = list(read_bands(source, res, keep, 32, batch=7, band_pixels=235 * 80))  # bands of ~2 window rows
        assert [len(c.indices) for c in cuts[:2]] == [7, 7] and not any(c.failed for c in cuts)
        np.testing.assert_array_equal(np.concatenate([c.indices for c in cuts]), np.arange(len(keep)))
        for cut in cuts:
            for i, k in enumerate(cut.indices):
                np.testing.assert_array_equal(cut.pixels[i], own_read(keep[k]))

        broken = keep[5]
        read_region = source.read_region

        def corrupt(region: Any, *args: Any, **kwargs: Any) -> np.ndarray:
            if region.width > 32 * res.downsample or (region.x, region.y) == (broken[0], broken[1]):
                raise OSError("corrupt JPEG tile")
            return read_region(region, *args, **kwargs)

        source.read_region = corrupt  # type: ignore[method-assign]
        cuts = list(read_bands(source, res, keep, 32, batch=7, band_pixels=235 * 80))
    assert [f for c in cuts for f in c.failed] == [(5, "OSError: corrupt JPEG tile")]
    got = np.concatenate([c.indices for c in cuts])
    np.testing.assert_array_equal(got, np.delete(np.arange(len(keep)), 5))
