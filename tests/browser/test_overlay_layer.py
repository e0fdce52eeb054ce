"""The batched annotation layer (web/src/overlay-layer.ts) in Debian's chromium: shapes drawn on one canvas,
a click selects the one under it (handed to Annotorious for editing, and back once deselected), the legend
counts each class in view, and the filters (per label, model vs human) hide what they say.

Its own small workspace (skimage's astronaut, 30 human boxes and 5 model points), so that its label classes
stay out of the other browser tests' schema. Synchronisation is by `wait_for_function` / `expect` only.
Set ``GIGAVISION_SCREENSHOTS=DIR`` to also save the viewer with a shape selected there (docs/img/).
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import run_server

pytestmark = pytest.mark.browser

SETTLED = "() => { const o = window.__gv && window.__gv.overlay; return !!o && o.loads() > 0 && o.settled(); }"
DRAWN = "() => window.__gv.overlay.drawn()"
IMAGE_TO_PAGE = """([x, y]) => {
  const viewer = window.__gv.viewer;
  const item = viewer.world.getItemAt(0);
  const p = viewer.viewport.viewportToViewerElementCoordinates(item.imageToViewportCoordinates(x, y, true));
  const box = viewer.element.getBoundingClientRect();
  return [box.left + p.x, box.top + p.y];
}"""
# Alpha of the layer's canvas at level-0 point (x, y): whether something is drawn there.
ALPHA_AT = """([x, y]) => {
  const viewer = window.__gv.viewer;
  const item = viewer.world.getItemAt(0);
  const p = viewer.viewport.viewportToViewerElementCoordinates(item.imageToViewportCoordinates(x, y, true));
  const canvas = document.querySelector('[data-testid="overlay-layer"]');
  const host = viewer.element.getBoundingClientRect();
  const box = canvas.getBoundingClientRect(); // the layer is moved by a CSS transform while panning
  const u = Math.round((host.left + p.x - box.left) * canvas.width / box.width);
  const v = Math.round((host.top + p.y - box.top) * canvas.height / box.height);
  return canvas.getContext("2d").getImageData(u, v, 1, 1).data[3];
}"""
SELECTED_ID = """() => {
  const section = document.querySelector('[data-testid="selection"]');
  return section && !section.hidden ? Number(section.dataset.annotationId) : null;
}"""
CELLS = [(40 + 70 * (i % 6), 40 + 70 * (i // 6)) for i in range(30)]  # 30 boxes of 40 px, top left of 512²
MITOSES = [(100 + 60 * i, 470) for i in range(5)]


@dataclass
class Seeded:
    base_url: str
    image: str
    cells: list[int]
    mitoses: list[int]


def _api(base_url: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{base_url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
        raw = response.read()
    return json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    from PIL import Image
    from skimage import data

    import gigavision as gv

    root = tmp_path_factory.mktemp("overlay-layer")
    picture = root / "astronaut.png"
    Image.fromarray(data.astronaut()).save(picture)
    ws = gv.init_workspace(root / "workspace")
    try:
        (result,) = ws.ingest([picture])
        image = str(result.id)
    finally:
        ws.close()
    with run_server(root / "workspace", root / "serve.log") as base_url:
        _api(base_url, "PUT", "/api/v1/labels/cell", {"kind": "box", "color": "#00c000"})
        _api(base_url, "PUT", "/api/v1/labels/mitosis", {"kind": "point", "color": "#3080ff"})
        records = [
            {"kind": "box", "label": "cell", "bbox": [x, y, x + 40, y + 40], "source": "user:ana"} for x, y in CELLS
        ] + [
            {"kind": "point", "label": "mitosis", "geometry": {"type": "Point", "coordinates": [x, y]}, "score": 0.9}
            | {"source": "model:m1"}
            for x, y in MITOSES
        ]
        ids = _api(base_url, "POST", f"/api/v1/images/{image}/annotations", {"annotations": records})["ids"]
        yield Seeded(base_url, image, ids[: len(CELLS)], ids[len(CELLS) :])


@pytest.fixture
def page(chromium_browser: Browser) -> Iterator[Page]:
    context = chromium_browser.new_context(viewport={"width": 1100, "height": 800})
    context.set_default_timeout(30_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
        assert errors == []
    finally:
        context.close()


def test_layer_draws_selects_and_filters(page: Page, seeded: Seeded) -> None:
    page.goto(f"{seeded.base_url}/#/image/{seeded.image}")
    page.wait_for_function(SETTLED)
    every = set(seeded.cells) | set(seeded.mitoses)

    # Every shape is drawn by the batched layer; Annotorious holds none of them.
    drawn = page.evaluate(DRAWN)
    assert {int(i) for i in drawn} == every
    assert not any(d["editing"] for d in drawn.values())
    assert set(page.evaluate("() => window.__gv.overlay.renderedIds()")) == every
    x, y = CELLS[7]
    page.wait_for_function(f"() => ({ALPHA_AT})([{x + 20}, {y + 1}]) > 0")  # a box's outline is on the canvas
    assert page.evaluate(ALPHA_AT, [470, 300]) == 0  # nothing there

    # The legend: each class with its count in view.
    legend = page.get_by_test_id("legend")
    expect(legend.locator('[data-label="cell"]')).to_have_attribute("data-count", "30")
    expect(legend.locator('[data-label="mitosis"]')).to_have_attribute("data-count", "5")

    # Over a box the pointer says it can be picked; a click selects it: Annotorious takes it (with handles),
    # the layer leaves it out.
    target = seeded.cells[7]
    page.mouse.move(*page.evaluate(IMAGE_TO_PAGE, [x + 20, y + 20]))
    expect(page.locator(".openseadragon-canvas").first).to_have_class(re.compile("gv-over-shape"))
    page.mouse.click(*page.evaluate(IMAGE_TO_PAGE, [x + 20, y + 20]))
    page.wait_for_function(f"() => ({SELECTED_ID})() === {target}")
    assert page.evaluate(DRAWN)[str(target)]["editing"]
    folder = os.environ.get("GIGAVISION_SCREENSHOTS")
    if folder:
        page.wait_for_function("() => window.__gv.viewer.world.getItemAt(0).getFullyLoaded()")
        page.screenshot(path=str(Path(folder) / "viewer-overlay.jpg"), type="jpeg", quality=80)
    page.keyboard.press("Escape")
    page.wait_for_function(f"() => ({SELECTED_ID})() === null && !window.__gv.overlay.drawn()[{target}].editing")
    # A click on a point selects the point (its disc, a few screen pixels wide).
    page.mouse.click(*page.evaluate(IMAGE_TO_PAGE, list(MITOSES[2])))
    page.wait_for_function(f"() => ({SELECTED_ID})() === {seeded.mitoses[2]}")
    page.keyboard.press("Escape")
    page.wait_for_function(f"() => ({SELECTED_ID})() === null")

    # Hide the mitosis class: its points are no longer drawn nor clickable; the count stays in the legend.
    mx, my = MITOSES[0]
    assert page.evaluate(ALPHA_AT, [mx, my]) > 0
    legend.locator('[data-label="mitosis"] input').uncheck()
    page.wait_for_function(f"() => ({ALPHA_AT})([{mx}, {my}]) === 0")
    assert {int(i) for i in page.evaluate(DRAWN)} == set(seeded.cells)
    page.mouse.click(*page.evaluate(IMAGE_TO_PAGE, [mx, my]))
    assert page.evaluate(SELECTED_ID) is None
    expect(legend.locator('[data-label="mitosis"]')).to_have_attribute("data-count", "5")
    # The view is asked for again without the hidden class (in a crowded view the sample goes to what is
    # shown); the hidden points stay loaded, so showing them again is immediate.
    page.wait_for_function(
        "() => { const q = window.__gv.overlay.lastQuery(); return window.__gv.overlay.settled() && !!q.only"
        " && q.only.hiddenLabels.join() === 'mitosis'; }"
    )
    assert set(seeded.mitoses) <= set(page.evaluate("() => window.__gv.overlay.loadedIds()"))
    legend.locator('[data-label="mitosis"] input').check()

    # Model proposals vs human labels: hiding human labels leaves the model's points.
    page.locator('[data-testid="filter-origin"][data-value="human"]').uncheck()
    page.wait_for_function(f"() => Object.keys(window.__gv.overlay.drawn()).length === {len(seeded.mitoses)}")
    # ... and the view is asked for again with the model's proposals only (source=model:*)
    page.wait_for_function(
        "() => { const q = window.__gv.overlay.lastQuery(); return window.__gv.overlay.settled() && !!q.only"
        " && q.only.origins.join() === 'model' && q.count === 5; }"
    )
    assert {int(i) for i in page.evaluate(DRAWN)} == set(seeded.mitoses)
    expect(legend.locator('[data-label="cell"]')).to_have_attribute("data-count", "0")
