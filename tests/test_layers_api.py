"""Prediction rasters as viewer layers: the listing, Deep Zoom descriptors and RGBA tiles, bad ids, corrupt files.

The rasters are real ``MaskStitcher`` outputs (no model trained): scikit-image's coins photograph is ingested,
thresholded window by window at downsample 2 into ``predictions/<model>/<image id>/mask.tif`` (+ its probability
raster), and painted coarsely into a ``heatmap.tif`` of a second model, as tiled inference writes them.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data

import gigavision as gv
from gigavision.images.registry import open_image
from gigavision.infer.stitch import MaskStitcher
from gigavision.server.main import create_app
from gigavision.tiling.grid import window_grid

SEGMENTER, CLASSIFIER = "coins-segment-1", "coins-classify-1"
CORAL = (230, 25, 75)  # infer.palette.PALETTE[1], the colour of class 1
DZI_NS = "{http://schemas.microsoft.com/deepzoom/2008}"


@dataclass
class Served:
    client: TestClient
    ws: gv.Workspace
    image_id: str
    width: int
    height: int
    labels: np.ndarray  # the stored mask, (H/2, W/2) uint8
    prob: np.ndarray  # the stored probability raster, same grid


def stitch_threshold(path: Path, image: np.ndarray, window: int, downsample: float, classes: list[str]) -> None:
    """A 'model' that says class 1 where the (downsampled) photograph is bright, written window by window."""
    h, w = image.shape
    small = image[:: int(downsample), :: int(downsample)]
    with MaskStitcher(path, w, h, classes, window=window, overlap=0, downsample=downsample) as stitcher:
        for x0, y0, x1, y1 in window_grid(w, h, window, overlap=0, downsample=downsample):
            lx, ly = round(x0 / downsample), round(y0 / downsample)
            block = np.zeros((window, window), dtype=np.float32)
            part = small[ly : ly + window, lx : lx + window]
            block[: part.shape[0], : part.shape[1]] = part
            fg = 1.0 / (1.0 + np.exp(-(block - 0.5) * 12.0))
            probs = np.stack([1.0 - fg, fg] + [np.zeros_like(fg)] * (len(classes) - 2))
            stitcher.add([x0, y0, x1, y1], probs.astype(np.float32))
        stitcher.close()


def read_all(path: Path) -> np.ndarray:
    with open_image(path) as src:
        return src.read_window(0, 0, 0, src.width, src.height)[..., 0]


def rgba(body: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(body)) as im:
        assert im.mode == "RGBA", im.mode
        return np.asarray(im)


def error_code(response: Any) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return str(body["error"]["code"])


@pytest.fixture
def served(tmp_path: Path, sqlite_workspace: gv.Workspace) -> Iterator[Served]:
    photo = tmp_path / "coins.png"
    Image.fromarray(data.coins()).save(photo)
    (result,) = sqlite_workspace.ingest([photo])
    assert result.id is not None
    row = sqlite_workspace.get_image(result.id)
    image = np.asarray(data.coins(), dtype=np.float32) / 255.0
    folder = sqlite_workspace.root / "predictions" / SEGMENTER / result.id
    stitch_threshold(folder / "mask.tif", image, 64, 2.0, ["background", "coin"])
    heat = sqlite_workspace.root / "predictions" / CLASSIFIER / result.id / "heatmap.tif"
    stitch_threshold(heat, image, 16, 16.0, ["background", "coin", "other"])
    labels, prob = read_all(folder / "mask.tif"), read_all(folder / "mask.prob.tif")
    with TestClient(create_app(sqlite_workspace)) as client:
        yield Served(client, sqlite_workspace, result.id, row.width, row.height, labels, prob)


def test_the_listing_names_every_raster_with_its_classes_and_placement(served: Served) -> None:
    answer = served.client.get(f"/api/v1/images/{served.image_id}/layers")
    assert answer.status_code == 200, answer.text
    layers = answer.json()
    assert [(x["model"], x["name"], x["kind"]) for x in layers] == [
        (CLASSIFIER, "heatmap", "labels"),
        (CLASSIFIER, "heatmap_probability", "scalar"),
        (SEGMENTER, "mask", "labels"),
        (SEGMENTER, "probability", "scalar"),
    ]
    mask = layers[2]
    assert mask["classes"] == ["background", "coin"] and mask["colors"] == [[0, 0, 0], list(CORAL)]
    assert mask["downsample"] == 2.0 and (mask["width"], mask["height"]) == (served.width, served.height)
    assert (mask["raster_width"], mask["raster_height"]) == served.labels.shape[::-1] == (192, 152)
    assert mask["dzi"] == f"/dzi/layers/{served.image_id}/{SEGMENTER}/mask.dzi"
    assert layers[0]["classes"] == ["background", "coin", "other"] and layers[0]["downsample"] == 16.0
    assert all((x["width"], x["height"]) == (384, 303) for x in layers)

    # an image without predictions has no layers
    other = served.ws.ingest([_astronaut(served.ws.root.parent)])[0].id
    assert served.client.get(f"/api/v1/images/{other}/layers").json() == []


def _astronaut(folder: Path) -> Path:
    path = folder / "astronaut.png"
    Image.fromarray(data.astronaut()[::4, ::4]).save(path)
    return path


def test_the_dzi_is_declared_at_the_image_level0_size(served: Served) -> None:
    layer = served.client.get(f"/dzi/layers/{served.image_id}/{SEGMENTER}/mask.dzi")
    assert layer.status_code == 200 and layer.headers["content-type"].startswith("application/xml")
    image = served.client.get(f"/dzi/{served.image_id}.dzi")
    root, base = ET.fromstring(layer.text), ET.fromstring(image.text)
    size, base_size = root.find(f"{DZI_NS}Size"), base.find(f"{DZI_NS}Size")
    assert size is not None and base_size is not None
    assert size.attrib == base_size.attrib == {"Width": str(served.width), "Height": str(served.height)}
    assert root.attrib["Format"] == "png" and root.attrib["TileSize"] == base.attrib["TileSize"] == "256"


def test_a_full_resolution_tile_has_the_class_colour_on_class_1_and_is_transparent_elsewhere(served: Served) -> None:
    top = math.ceil(math.log2(max(served.width, served.height)))  # level 9: level-0 pixels
    base = f"/dzi/layers/{served.image_id}/{SEGMENTER}/mask_files/{top}"
    tile = served.client.get(f"{base}/0_0.png")
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/png"
    assert tile.headers["x-content-type-options"] == "nosniff"
    px = rgba(tile.content)
    assert px.shape == (256, 256, 4)
    # level-0 pixel (x, y) is mask pixel (x // 2, y // 2): nearest-neighbour, no blending of class indices
    expected = np.repeat(np.repeat(served.labels[:128, :128], 2, axis=0), 2, axis=1)
    coin, background = expected == 1, expected == 0
    assert 0.1 < coin.mean() < 0.9, "the tile should show both classes"
    assert (px[coin] == (*CORAL, 160)).all()
    assert (px[background][:, 3] == 0).all()

    # the right edge tile: 384 - 256 = 128 pixels wide
    edge = rgba(served.client.get(f"{base}/1_1.png").content)
    assert edge.shape == (303 - 256, 128, 4)
    expected = np.repeat(np.repeat(served.labels[128:, 128:], 2, axis=0), 2, axis=1)[: 303 - 256]
    assert ((edge[..., 3] > 0) == (expected == 1)).all()


def test_coarse_levels_read_the_mask_at_its_own_scale(served: Served) -> None:
    # level 8 = downsample 2: one tile, the mask itself (the last row stretched by half a pixel at the edge)
    level8 = rgba(served.client.get(f"/dzi/layers/{served.image_id}/{SEGMENTER}/mask_files/8/0_0.png").content)
    assert level8.shape == (152, 192, 4)
    assert ((level8[..., 3] > 0) == (served.labels == 1)).mean() > 0.99
    for level in range(8):  # down to one pixel; never a stored-size mismatch or an error
        tile = rgba(served.client.get(f"/dzi/layers/{served.image_id}/{SEGMENTER}/mask_files/{level}/0_0.png").content)
        assert tile.shape[:2] == (math.ceil(303 / 2 ** (9 - level)), math.ceil(384 / 2 ** (9 - level)))
    heat = served.client.get(f"/dzi/layers/{served.image_id}/{CLASSIFIER}/heatmap_files/9/0_0.png")
    assert heat.status_code == 200 and rgba(heat.content).shape == (256, 256, 4)


def test_a_probability_tile_is_a_colormap_with_alpha_rising_with_the_value(served: Served) -> None:
    from scipy import ndimage

    top = f"/dzi/layers/{served.image_id}/{SEGMENTER}/probability_files/8/0_0.png"  # the raster's own scale
    px = rgba(served.client.get(top).content).astype(int)
    value = served.prob.astype(int)
    assert px.shape[:2] == value.shape
    # every pixel is on the colormap: red 255, blue 0, green falling as alpha rises (yellow -> red)
    assert (px[..., 0] == 255).all() and (px[..., 2] == 0).all()
    assert np.abs(px[..., 1] - (255 - px[..., 3] * 255 / 210)).max() <= 2
    # alpha follows the value; the image's odd height stretches this level's rows by up to half a pixel
    # (as in the image's own tiles), so rows drift from the raster's by row / 304 pixels
    diff = np.abs(px[..., 3] - 210 * value / 255)
    assert diff[:10].mean() < 1 and np.percentile(diff[:10], 99) <= 3, (diff[:10].mean(), diff[:10].max())
    assert np.corrcoef(px[..., 3].ravel(), value.ravel())[0, 1] > 0.97
    assert (px[..., 3][ndimage.maximum_filter(value, 5) == 0] == 0).all()  # no probability: transparent
    high, low = value > 230, (value > 0) & (value < 25)
    assert high.any() and low.any()
    assert np.median(px[high][:, 1]) < 30 < np.median(px[low][:, 1])  # red where sure, yellow where not


def test_tiles_revalidate_and_follow_a_rewritten_raster(served: Served) -> None:
    url = f"/dzi/layers/{served.image_id}/{SEGMENTER}/mask_files/9/0_0.png"
    first = served.client.get(url)
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"
    again = served.client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag

    # a later run writes an empty mask over it (atomically, as the stitcher does): new ETag, new pixels
    folder = served.ws.root / "predictions" / SEGMENTER / served.image_id
    image = np.zeros((served.height, served.width), dtype=np.float32)
    stitch_threshold(folder / "mask.tif", image, 64, 2.0, ["background", "coin"])
    fresh = served.client.get(url, headers={"If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.headers["etag"] != etag
    assert (rgba(fresh.content)[..., 3] == 0).all()


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/images/not-an-id/layers",
        "/api/v1/images/{zero}/layers",
        "/dzi/layers/not-an-id/{model}/mask.dzi",
        "/dzi/layers/{zero}/{model}/mask.dzi",
        "/dzi/layers/{image}/no-such-model/mask.dzi",
        "/dzi/layers/{image}/%2E%2E/mask.dzi",
        "/dzi/layers/{image}/..%2F..%2F{model}/mask.dzi",
        "/dzi/layers/{image}/%2Fetc/mask.dzi",
        "/dzi/layers/{image}/{model}/passwd.dzi",
        "/dzi/layers/{image}/{model}/%2E%2E%2Fmask.dzi",
        "/dzi/layers/{image}/{model}/heatmap.dzi",
        "/dzi/layers/{image}/{model}/mask_files/9/0_0.jpeg",
        "/dzi/layers/{image}/{model}/mask_files/10/0_0.png",
        "/dzi/layers/{image}/{model}/mask_files/9/2_0.png",
        "/dzi/layers/{image}/{model}/secret_files/9/0_0.png",
        "/dzi/layers/{image}/%2E%2E/mask_files/9/0_0.png",
    ],
)
def test_bad_ids_names_and_tiles_are_404_with_the_error_shape(served: Served, path: str) -> None:
    url = path.format(zero="0" * 64, image=served.image_id, model=SEGMENTER)
    answer = served.client.get(url)
    assert answer.status_code == 404, (url, answer.status_code, answer.text)
    assert error_code(answer) == "not_found"


def test_a_non_integer_tile_address_is_400(served: Served) -> None:
    answer = served.client.get(f"/dzi/layers/{served.image_id}/{SEGMENTER}/mask_files/9/0_x.png")
    assert answer.status_code == 400 and error_code(answer) == "invalid_input"


def test_rasters_outside_the_predictions_folder_are_never_served(served: Served, tmp_path: Path) -> None:
    """A model folder that is a link to elsewhere is not followed out of predictions/."""
    outside = tmp_path / "elsewhere"
    shutil.copytree(served.ws.root / "predictions" / SEGMENTER, outside)
    os.symlink(outside, served.ws.root / "predictions" / "linked-model")
    names = {x["model"] for x in served.client.get(f"/api/v1/images/{served.image_id}/layers").json()}
    assert names == {SEGMENTER, CLASSIFIER}
    answer = served.client.get(f"/dzi/layers/{served.image_id}/linked-model/mask.dzi")
    assert answer.status_code == 404 and error_code(answer) == "not_found"


def test_a_corrupt_raster_is_left_out_and_answers_422_without_hurting_the_server(served: Served) -> None:
    broken = served.ws.root / "predictions" / "broken-model" / served.image_id
    broken.mkdir(parents=True)
    (broken / "mask.tif").write_bytes(b"II*\x00" + os.urandom(600))  # a TIFF header, then noise
    good = (served.ws.root / "predictions" / SEGMENTER / served.image_id / "mask.tif").read_bytes()
    (broken / "heatmap.tif").write_bytes(good[: len(good) // 3])  # truncated: description fine, tiles gone
    (served.ws.root / "predictions" / ".not-a-model").mkdir()

    listing = served.client.get(f"/api/v1/images/{served.image_id}/layers")
    assert listing.status_code == 200
    listed = {(x["model"], x["name"]) for x in listing.json()}
    assert ("broken-model", "mask") not in listed and (SEGMENTER, "mask") in listed
    answer = served.client.get(f"/dzi/layers/{served.image_id}/broken-model/mask.dzi")
    assert answer.status_code == 422 and error_code(answer) == "invalid_image"
    tile = served.client.get(f"/dzi/layers/{served.image_id}/broken-model/mask_files/9/0_0.png")
    assert tile.status_code == 422 and error_code(tile) == "invalid_image"
    for level in (0, 9):  # the truncated one: whatever it can read, an error shape otherwise, never a crash
        part = served.client.get(f"/dzi/layers/{served.image_id}/broken-model/heatmap_files/{level}/0_0.png")
        assert part.status_code in (200, 404, 422), part.text
        if part.status_code != 200:
            error_code(part)
    # the server still serves the good layers
    assert served.client.get(f"/dzi/layers/{served.image_id}/{SEGMENTER}/mask_files/9/0_0.png").status_code == 200


def test_an_evicted_raster_is_closed_only_once_no_request_reads_it(served: Served) -> None:
    from gigavision.infer.layers import LayerRasters, find_layer

    rasters = LayerRasters(capacity=1)
    mask, prob = (find_layer(served.ws, rasters, served.image_id, SEGMENTER, n) for n in ("mask", "probability"))
    assert rasters.describe(served.image_id, SEGMENTER, "mask", mask.path) is mask  # described once per version
    with rasters.use(served.ws, mask) as first:
        with rasters.use(served.ws, prob) as second:  # evicts the mask's source while it is being read
            assert first.source._tif is not None  # type: ignore[attr-defined]
            first.source.read_window(0, 0, 0, 8, 8)
        assert second.source._tif is not None  # type: ignore[attr-defined]  # still in the cache
    assert first.source._tif is None  # type: ignore[attr-defined]  # closed when its reader was done
