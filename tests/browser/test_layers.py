"""Prediction layers in the viewer, end to end: list, toggle on (drawn over the image, aligned), opacity, off.

A real `gigavision serve` (real CSP, never bypassed) over a workspace holding scikit-image's coins photograph
with a real ``MaskStitcher`` label mask (coins = class 1, at downsample 2) and its probability raster, as tiled
inference writes them, and a second image without predictions. Debian's chromium; synchronisation by
`wait_for_function` / `expect` only, every predicate a function expression (the CSP forbids eval).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Response, expect
from scipy import ndimage

from tests.browser.conftest import run_server
from tests.test_layers_api import read_all, stitch_threshold

pytestmark = pytest.mark.browser

MODEL = "coins-segment-1"
CORAL = (230, 25, 75)


@dataclass
class Served:
    base_url: str
    image_id: str
    plain_id: str
    inside: tuple[int, int]  # level-0 point well inside a coin (class 1)
    outside: tuple[int, int]  # level-0 point well inside the background (class 0)


def _point(mask: np.ndarray, downsample: int) -> tuple[int, int]:
    """A level-0 point at least 6 mask pixels from the region's border, nearest the image centre."""
    ys, xs = np.nonzero(ndimage.binary_erosion(mask, iterations=6))
    assert len(xs), "no region wide enough"
    cy, cx = mask.shape[0] / 2, mask.shape[1] / 2
    i = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    return int(xs[i]) * downsample + downsample // 2, int(ys[i]) * downsample + downsample // 2


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from PIL import Image
    from skimage import data

    import gigavision as gv

    index = Path(gv.__file__).parent / "server" / "static" / "index.html"
    if not index.is_file():
        pytest.fail(f"the web front end is not built ({index} is missing): run `make web`")
    root = tmp_path_factory.mktemp("layers")
    Image.fromarray(data.coins()).save(root / "coins.png")
    Image.fromarray(data.astronaut()[::4, ::4]).save(root / "astronaut.png")
    ws = gv.init_workspace(root / "workspace")
    try:
        coins, plain = ws.ingest([root / "coins.png", root / "astronaut.png"])
        assert coins.id is not None and plain.id is not None
        folder = ws.root / "predictions" / MODEL / coins.id
        image = np.asarray(data.coins(), dtype=np.float32) / 255.0
        stitch_threshold(folder / "mask.tif", image, 64, 2.0, ["background", "coin"])
        labels = read_all(folder / "mask.tif")
    finally:
        ws.close()
    with run_server(root / "workspace", root / "serve.log") as base_url:
        yield Served(base_url, coins.id, plain.id, _point(labels == 1, 2), _point(labels == 0, 2))


@dataclass
class PageLog:
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    responses: list[tuple[int, str, str]] = field(default_factory=list)

    def problems(self) -> list[str]:
        return (
            [f"console error: {m}" for m in self.console_errors]
            + [f"page error: {m}" for m in self.page_errors]
            + [f"HTTP {s}: {u}" for s, u, _ in self.responses if s >= 400]
        )


@pytest.fixture
def page(chromium_browser: Browser) -> Iterator[tuple[Page, PageLog]]:
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=False)
    context.set_default_timeout(30_000)
    tab = context.new_page()
    log = PageLog()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            log.console_errors.append(message.text)

    def on_response(response: Response) -> None:
        log.responses.append((response.status, response.url, response.headers.get("content-type", "")))

    tab.on("console", on_console)
    tab.on("pageerror", lambda exc: log.page_errors.append(str(exc)))
    tab.on("response", on_response)
    try:
        yield tab, log
    finally:
        context.close()


VIEWER_OPEN = """() => {
  const gv = window.__gv;
  return !!gv && gv.viewer.world.getItemCount() === 1 && gv.viewer.world.getItemAt(0).getFullyLoaded()
    && !!gv.layers && gv.layers.ready();
}"""
WORLD_COUNT = "() => window.__gv.viewer.world.getItemCount()"
ALL_LOADED = """(n) => {
  const world = window.__gv.viewer.world;
  if (world.getItemCount() !== n) return false;
  for (let i = 0; i < n; i++) if (!world.getItemAt(i).getFullyLoaded()) return false;
  return true;
}"""
PLACEMENT = """() => {
  const world = window.__gv.viewer.world;
  const box = (i) => { const b = world.getItemAt(i).getBounds(true); return [b.x, b.y, b.width, b.height]; };
  const layer = world.getItemAt(1);
  return { image: box(0), layer: box(1), size: [layer.source.dimensions.x, layer.source.dimensions.y],
           opacity: layer.getOpacity() };
}"""
# The drawn colour ``d`` at level-0 point (x, y) of the image, read back from OpenSeadragon's canvas.
_COLOUR_AT = """
  const viewer = window.__gv.viewer;
  const p = viewer.viewport.pixelFromPoint(viewer.world.getItemAt(0).imageToViewportCoordinates(x, y, true), true);
  const ratio = window.devicePixelRatio || 1;
  const canvas = viewer.drawer.canvas.getContext("2d");
  const d = canvas.getImageData(Math.round(p.x * ratio), Math.round(p.y * ratio), 1, 1).data;
"""
PIXEL = "([x, y]) => {" + _COLOUR_AT + "return [d[0], d[1], d[2]]; }"
# truthy once the point is much redder than ``base`` (the class colour drawn over it)
TINTED = "([x, y, base]) => {" + _COLOUR_AT + "return d[0] - d[1] - (base[0] - base[1]) > 60 && [d[0], d[1], d[2]]; }"
UNTINTED = "([x, y, base]) => {" + _COLOUR_AT + "return [0, 1, 2].every((i) => Math.abs(d[i] - base[i]) <= 6); }"


def _layers(base_url: str, image_id: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{base_url}/api/v1/images/{image_id}/layers", timeout=10) as response:
        return list(json.loads(response.read()))


def test_a_mask_layer_toggles_on_aligned_and_off(page: tuple[Page, PageLog], served: Served) -> None:
    tab, log = page
    assert [(x["model"], x["name"]) for x in _layers(served.base_url, served.image_id)] == [
        (MODEL, "mask"),
        (MODEL, "probability"),
    ]
    tab.goto(f"{served.base_url}/#/image/{served.image_id}")
    tab.wait_for_function(VIEWER_OPEN)
    panel = tab.get_by_test_id("layers-panel")
    expect(panel).to_be_visible()
    expect(panel.locator("li")).to_have_count(2)
    expect(panel.locator('li[data-layer="coins-segment-1/mask"]')).to_contain_text("coins-segment-1 · mask")
    expect(panel.locator('li[data-layer="coins-segment-1/mask"]')).to_contain_text("coin")
    inside_before = tab.evaluate(PIXEL, list(served.inside))
    outside_before = tab.evaluate(PIXEL, list(served.outside))
    assert tab.evaluate(WORLD_COUNT) == 1

    # On: a second tiled image, placed exactly over the image, its tiles requested and drawn in the class colour.
    toggle = panel.locator('input[data-testid="layer-toggle"][data-layer="coins-segment-1/mask"]')
    toggle.check()
    tab.wait_for_function(ALL_LOADED, arg=2)
    placement = tab.evaluate(PLACEMENT)
    np.testing.assert_allclose(placement["layer"], placement["image"], rtol=0, atol=1e-9)
    assert placement["size"] == [384, 303] and placement["opacity"] == 1
    tiles = [(s, u, t) for s, u, t in log.responses if f"/dzi/layers/{served.image_id}/{MODEL}/mask_files/" in u]
    assert tiles and all(s == 200 and t == "image/png" for s, _, t in tiles), tiles
    tinted = tab.wait_for_function(TINTED, arg=[*served.inside, inside_before]).json_value()
    assert tinted[0] > tinted[1] and tinted[0] > tinted[2], (tinted, inside_before)  # coral over the coin
    assert tab.evaluate(UNTINTED, [*served.outside, outside_before]), "the background must stay untouched"

    # Opacity: the slider sets the item's opacity.
    panel.locator('input[data-testid="layer-opacity"][data-layer="coins-segment-1/mask"]').fill("40")
    tab.wait_for_function("() => Math.abs(window.__gv.viewer.world.getItemAt(1).getOpacity() - 0.4) < 1e-9")

    # A second layer on top, then both off: back to the image alone, drawn as before.
    panel.locator('input[data-testid="layer-toggle"][data-layer="coins-segment-1/probability"]').check()
    tab.wait_for_function(ALL_LOADED, arg=3)
    assert sorted(tab.evaluate("() => window.__gv.layers.shown()")) == [f"{MODEL}/mask", f"{MODEL}/probability"]
    panel.locator('input[data-testid="layer-toggle"][data-layer="coins-segment-1/probability"]').uncheck()
    toggle.uncheck()
    tab.wait_for_function("() => window.__gv.viewer.world.getItemCount() === 1")
    tab.wait_for_function(UNTINTED, arg=[*served.inside, inside_before])
    assert tab.evaluate("() => window.__gv.layers.shown()") == []

    assert log.problems() == []


def test_an_image_without_predictions_shows_no_layers_panel(page: tuple[Page, PageLog], served: Served) -> None:
    tab, log = page
    tab.goto(f"{served.base_url}/#/image/{served.plain_id}")
    tab.wait_for_function(VIEWER_OPEN)
    expect(tab.get_by_test_id("layers-panel")).to_be_hidden()
    expect(tab.get_by_test_id("annotation-panel")).to_be_visible()
    assert tab.evaluate("() => window.__gv.layers.layers.length") == 0
    assert log.problems() == []
