""" "Find similar" in the viewer, in Debian's chromium (issue 15): draw a box over a photograph planted in one
slide, get a grid of region thumbnails from the region index, the first being the same photograph on the other
slide; a click opens that slide at that region. The slides and the model are ``tests/test_search.py``'s.

Set ``GIGAVISION_SCREENSHOTS=DIR`` to also save a screenshot of the viewer with the results there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

import gigavision as gv
from gigavision.search.build import RegionSpec, build_index
from gigavision.train.recipe import load_recipe
from gigavision.train.trainer import train
from tests.browser.conftest import run_server
from tests.browser.test_annotate import to_page
from tests.realdata import digits_version
from tests.seeding import TRAIN_SEED
from tests.test_search import PLANTED, _slide

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def similar_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    root = tmp_path_factory.mktemp("similar")
    with gv.init_workspace(root / "ws") as ws:
        digits_version(ws, root / "src", limit=200)
        recipe = {"dataset": "digits", "task": "embed", "arch": "resnet10t", "image_size": 32, "epochs": 1}
        model = train(ws, load_recipe(overrides={**recipe, "embedding_dim": 32, "seed": TRAIN_SEED}))
        slides = {}
        for k, (name, at) in enumerate(PLANTED.items()):
            Image.fromarray(_slide(k, at)).save(root / name)
            slides[name] = str(ws.ingest([root / name])[0].id)
        build_index(ws, "slides", model.id, images=["image=?.png"], regions=RegionSpec(tile=64, level=1))
    with run_server(root / "ws", root / "serve.log") as base_url:
        yield base_url, slides


def test_draw_a_box_find_similar_regions_and_open_one(page: Page, similar_server: tuple[str, dict[str, str]]) -> None:
    base_url, slides = similar_server
    ax, ay = PLANTED["a.png"]
    bx, by = PLANTED["b.png"]
    page.goto(f"{base_url}/#/image/{slides['a.png']}?region={ax - 256},{ay - 256},{ax + 512},{ay + 512}")
    page.wait_for_function("() => window.__gv && window.__gv.viewer.world.getItemCount() === 1")
    expect(page.get_by_test_id("similar-panel")).to_be_visible()  # the workspace has an index
    expect(page.get_by_test_id("similar-index")).to_have_value("slides")
    page.get_by_test_id("similar-tool").click()
    expect(page.get_by_test_id("similar-tool")).to_have_attribute("aria-pressed", "true")
    page.mouse.move(*to_page(page, ax + 2, ay + 2))
    page.mouse.down()
    page.mouse.move(*to_page(page, ax + 126, ay + 126), steps=6)
    page.mouse.up()
    hits = page.get_by_test_id("similar-hit")
    # the server's first search loads the model (torch and the checkpoint): seconds on a loaded machine
    expect(hits.first).to_be_visible(timeout=60_000)
    assert hits.count() > 1
    first = hits.first
    # the planted photograph on slide b, at its window (the box covered one window of slide a)
    assert first.get_attribute("href") == f"/#/image/{slides['b.png']}?region={bx},{by},{bx + 128},{by + 128}"
    thumb = first.locator("img")
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
    expect(page.get_by_test_id("similar-status")).to_contain_text("most similar")
    if os.environ.get("GIGAVISION_SCREENSHOTS"):
        page.screenshot(path=str(Path(os.environ["GIGAVISION_SCREENSHOTS"]) / "find-similar.png"))
    first.click()
    page.wait_for_url(f"**/#/image/{slides['b.png']}?region=*")
    opened = f"() => window.__gv && window.__gv.image.id === '{slides['b.png']}'"
    page.wait_for_function(f"{opened} && window.__gv.viewer.world.getItemCount() === 1")
    # the viewer opened on that region: its centre is in the middle of the view
    centre = page.evaluate(
        """() => { const v = window.__gv.viewer; const c = v.viewport.getCenter(true);
                   const p = v.world.getItemAt(0).viewportToImageCoordinates(c); return [p.x, p.y]; }"""
    )
    assert abs(centre[0] - (bx + 64)) < 16 and abs(centre[1] - (by + 64)) < 16, centre
