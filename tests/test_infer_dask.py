"""Scale-out inference on Dask (``infer.distributed``): the same predictions as one process, stored once.

A LocalCluster of two worker processes on 127.0.0.1 stands in for a cluster: the module's cluster is
reached through its ``tcp://`` address (the path a real scheduler takes), the CLI starts its own
``local:2`` one.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import gigavision as gv
from gigavision.cli.main import main
from gigavision.errors import InvalidImage, InvalidInput
from gigavision.images.registry import open_image
from gigavision.infer.distributed import (
    local_cluster,
    local_threads,
    local_workers,
    predict_distributed,
    region_size,
)
from gigavision.infer.engine import InferOptions, InferResult
from gigavision.infer.run import predict_tiled
from gigavision.models.predict import Predictor
from tests.conftest import DETECT_SIZE, SEGMENT_SIZE, Trained
from tests.test_infer import _mosaic

SEG_CLASSES = ("coin", "horse")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """Two worker processes; tests reach them through the scheduler's tcp:// address."""
    with local_cluster(2) as c:
        yield str(c.scheduler_address)


@pytest.fixture(autouse=True)
def _threads_like_the_workers() -> Iterator[None]:
    """Bit-identical float32 results need the same intra-op thread count: a convolution summed in another
    order differs in the last bits. The one-process reference runs with each local worker's threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(local_threads(2))
    yield
    torch.set_num_threads(before)


def _same(one: InferResult, many: InferResult) -> None:
    """Identical predictions: every column, boxes to 1e-9, the tile accounting and summaries."""
    a, b = one.as_dict(with_annotations=False), many.as_dict(with_annotations=False)
    for doc in (a, b):
        doc.pop("seconds")
        doc.pop("outputs")
    assert a == b
    x, y = one.annotations, many.annotations
    assert len(x) == len(y)
    assert list(x.kind) == list(y.kind) and list(x.label) == list(y.label)
    assert list(x.source) == list(y.source) and list(x.attributes) == list(y.attributes)
    np.testing.assert_allclose(y.xyxy, x.xyxy, rtol=0, atol=1e-9)
    np.testing.assert_allclose(y.score, x.score, rtol=0, atol=1e-12)
    for g, h in zip(x.geometry, y.geometry, strict=True):
        assert (g is None and h is None) or g.equals_exact(h, 1e-9)


def _pixels(path: Path) -> np.ndarray:
    source = open_image(path)
    try:
        return source.read_window(0, 0, 0, source.width, source.height)
    finally:
        source.close()


def test_addresses_are_checked_before_any_work() -> None:
    assert local_workers("local") == 2 and local_workers("local:3") == 3
    assert local_workers("tcp://scheduler:8786") is None and local_workers("10.0.0.5:8786") is None
    assert local_workers("tls://[::1]:8786") is None
    for bad in ("", "local:0", "local:x", "tcp://scheduler", "http://a b:1", "scheduler"):
        with pytest.raises(InvalidInput, match="--dask"):
            local_workers(bad)
    assert region_size(16, 4) == 16 and region_size(17, 4) == 20 and region_size(1, 16) == 16
    with pytest.raises(InvalidInput, match="region_windows must be ≥ 1"):
        region_size(0, 4)


def test_detect_regions_on_two_workers_match_one_process(
    scenes_detector: Trained, cluster: str, tmp_path: Path
) -> None:
    """A detect image cut into 4 regions over 2 workers: the same boxes as one process, stored once."""
    ws = gv.init_workspace(tmp_path / "ws")
    try:
        big, _, _ = _mosaic(tmp_path, 5, 4, DETECT_SIZE, seed=60)  # 640×512: 9×7 windows at stride 64
        small, _, _ = _mosaic(tmp_path, 2, 2, DETECT_SIZE, seed=61)  # 3×3 windows
        big_row, small_row = ws.ingest([big, small])
        assert big_row.id is not None and small_row.id is not None
        items = [big_row.id, str(small)]  # a workspace image, and an ingested file named by its path
        for runtime in ("torch", "onnx"):
            predictor = Predictor(scenes_detector.info, runtime=runtime)
            for options in (
                InferOptions(tile=DETECT_SIZE, overlap=DETECT_SIZE // 2, batch=4),
                InferOptions(tile=DETECT_SIZE, overlap=DETECT_SIZE // 2, batch=4, merge="soft_nms", min_score=0.1),
            ):
                one = predict_tiled(predictor, items, options, ws=ws, out_root=tmp_path / "one")
                seen: list[tuple[float, float, str]] = []
                many = predict_distributed(
                    predictor,
                    items,
                    options,
                    address=cluster,
                    ws=ws,
                    out_root=tmp_path / "many",
                    progress=lambda d, t, m, seen=seen: seen.append((d, t, m)),
                    region_windows=13,  # rounded up to 16 (a multiple of the batch): 63 windows → 4 regions
                )
                assert [r.input for r in many] == items
                assert seen[-1][:2] == (5, 5) and [d for d, _, _ in seen] == [1, 2, 3, 4, 5]
                regions = sorted(m.split(": ")[1] for _, _, m in seen)
                assert regions == ["region 1/1", "region 1/4", "region 2/4", "region 3/4", "region 4/4"]
                assert many[0].tiles_total == 63 and len(many[0].annotations) >= 10
                for a, b in zip(one, many, strict=True):
                    _same(a, b)

        # storing: by the client, once per image, after all of its regions are in
        stored = predict_distributed(predictor, items, options, address=cluster, ws=ws, store=True, region_windows=16)
        for row, result in zip((big_row, small_row), stored, strict=True):
            assert row.id is not None
            assert len(ws.annotations.query(row.id)) == len(result.annotations) == int(result.outputs["stored"])
    finally:
        ws.close()


def test_segmentation_rasters_on_two_workers_match_one_process(
    scenes_segmenter: Trained, cluster: str, tmp_path: Path
) -> None:
    """Segment images run one per task; the workers' masks are pixel-equal to one process's."""
    info = scenes_segmenter.info
    a, _, _ = _mosaic(tmp_path, 4, 3, SEGMENT_SIZE, seed=62, classes=SEG_CLASSES)
    b, _, _ = _mosaic(tmp_path, 3, 2, SEGMENT_SIZE, seed=63, classes=SEG_CLASSES)
    items = [str(a), str(b)]
    predictor = Predictor(info)
    options = InferOptions(tile=SEGMENT_SIZE, overlap=SEGMENT_SIZE // 2, batch=8)
    one = predict_tiled(predictor, items, options, ws=None, out_root=tmp_path / "one")
    many = predict_distributed(predictor, items, options, address=cluster, ws=None, out_root=tmp_path / "many")
    for x, y in zip(one, many, strict=True):
        _same(x, y)
        assert len(y.annotations) > 0 and set(y.outputs) == {"mask", "probability"}
        for name in ("mask", "probability"):
            mine, theirs = Path(x.outputs[name]), Path(y.outputs[name])
            assert theirs.parent == tmp_path / "many" / info.id / Path(y.input).stem
            assert np.array_equal(_pixels(mine), _pixels(theirs))


def test_cli_dask_local_matches_the_single_process_cli(
    scenes_segmenter: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws, info = scenes_segmenter.ws, scenes_segmenter.info
    a, _, _ = _mosaic(tmp_path, 3, 3, SEGMENT_SIZE, seed=64, classes=SEG_CLASSES)
    b, _, _ = _mosaic(tmp_path, 2, 2, SEGMENT_SIZE, seed=65, classes=SEG_CLASSES)
    base = ["-w", str(ws.root), "predict", info.id, str(a), str(b), "--tile", "64", "--overlap", "32", "--json"]
    docs = []
    for extra in ([], ["--dask", "local:2"]):
        out = tmp_path / ("dask" if extra else "one")
        assert main([*base, "--out-dir", str(out), *extra]) == 0
        doc = json.loads(capsys.readouterr().out)
        for item in doc["items"]:
            item.pop("seconds")
            item["outputs"] = {k: str(Path(v).relative_to(out)) for k, v in item["outputs"].items()}
        docs.append(doc)
    assert docs[0] == docs[1] and len(docs[1]["items"]) == 2
    for item in docs[0]["items"]:
        mask = item["outputs"]["mask"]
        assert np.array_equal(_pixels(tmp_path / "one" / mask), _pixels(tmp_path / "dask" / mask))


def test_bad_addresses_and_worker_errors_are_one_line_errors(
    scenes_segmenter: Trained, cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import dask
    import tifffile

    ws, info = scenes_segmenter.ws, scenes_segmenter.info
    path, _, _ = _mosaic(tmp_path, 2, 2, SEGMENT_SIZE, seed=66, classes=SEG_CLASSES)
    base = ["-w", str(ws.root), "predict", info.id, str(path), "--tile", "64", "--overlap", "0"]

    started = time.monotonic()
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main([*base, "--dask", "tcp://127.0.0.1:1"]) == 2
    assert time.monotonic() - started < 20
    err = capsys.readouterr().err
    assert "--dask tcp://127.0.0.1:1: no Dask scheduler answered" in err and "Traceback" not in err

    assert main([*base, "--dask", "scheduler"]) == 2
    assert "expected a scheduler address like tcp://scheduler:8786" in capsys.readouterr().err

    # a tile that fails to decode on a worker: the same error as in one process, raised on the client
    pixels = _pixels(path)
    tiled = tmp_path / "corrupt.tif"
    tifffile.imwrite(tiled, pixels, tile=(64, 64), compression="zlib", photometric="rgb")
    with tifffile.TiffFile(tiled) as tif:
        offset, count = tif.pages[0].dataoffsets[1], tif.pages[0].databytecounts[1]
    with tiled.open("r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * count)
    predictor = Predictor(info)
    options = InferOptions(tile=SEGMENT_SIZE, overlap=0)
    message = r"window \[64, 0, 128, 64\] could not be read"
    with pytest.raises(InvalidImage, match=message):
        predict_tiled(predictor, [str(tiled)], options, ws=None, out_root=tmp_path / "one")
    with pytest.raises(InvalidImage, match=message):
        predict_distributed(predictor, [str(tiled)], options, address=cluster, ws=None, out_root=tmp_path / "x")
    assert not list((tmp_path / "x").rglob("*.tif"))  # the worker left no half-written raster


def test_a_worker_killed_mid_run_is_replaced_and_nothing_is_stored_twice(
    scenes_detector: Trained, tmp_path: Path
) -> None:
    ws = gv.init_workspace(tmp_path / "ws")
    try:
        big, _, _ = _mosaic(tmp_path, 5, 4, DETECT_SIZE, seed=67)
        (row,) = ws.ingest([big])
        assert row.id is not None
        predictor = Predictor(scenes_detector.info)
        options = InferOptions(tile=DETECT_SIZE, overlap=DETECT_SIZE // 2, batch=4)
        (one,) = predict_tiled(predictor, [row.id], options, ws=ws, out_root=tmp_path / "one")
        killed: list[tuple[int, bool]] = []
        with local_cluster(2) as c:

            def kill_a_busy_worker(done: float, total: float, message: str) -> None:
                if killed:
                    return
                busy = [addr for addr, w in list(c.scheduler.workers.items()) if w.processing]
                for nanny in list(c.workers.values()):
                    if nanny.worker_address in busy or not busy:
                        os.kill(nanny.process.process.pid, signal.SIGKILL)  # a worker process this test started
                        killed.append((nanny.process.process.pid, bool(busy)))
                        return

            (many,) = predict_distributed(
                predictor,
                [row.id],
                options,
                address=c.scheduler_address,
                ws=ws,
                store=True,
                progress=kill_a_busy_worker,
                region_windows=4,  # 16 regions: a worker is busy with one when the first comes back
            )
        assert [busy for _, busy in killed] == [True]  # it was running a region, which Dask ran again
        _same(one, many)
        assert len(ws.annotations.query(row.id)) == len(many.annotations) == int(many.outputs["stored"])
    finally:
        ws.close()
