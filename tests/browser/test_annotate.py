"""The annotation tools of the viewer (issue 14), in Debian's chromium against a real `gigavision serve`: the
point tool and a label picker that follows the tool's kind, the brush and eraser on masks (RLE), focus back on
the image after a choice, undo of a move in ONE write (and redo, and a refused undo across someone else's
edit), the server's refusal of a box under a point class shown to the user, and the attributes editor.
Synchronisation by `wait_for_function` / `expect` only."""

from __future__ import annotations

import json
import math
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Request, expect

from tests.browser.conftest import run_server

pytestmark = pytest.mark.browser

BOX = (300, 120, 380, 260)  # the seeded "cell" box


@dataclass
class Site:
    base_url: str
    image: dict[str, Any]
    box: int
    tumor: int


def _api(base_url: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{base_url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
        raw = response.read()
    return json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, samples: dict[str, Path]) -> Iterator[Site]:
    import gigavision as gv
    from gigavision.annotations import Annotations

    if not (Path(gv.__file__).parent / "server" / "static" / "index.html").is_file():
        pytest.fail("the web front end is not built: run `make web`")
    root = tmp_path_factory.mktemp("annotate")
    ws = gv.init_workspace(root / "workspace")
    try:
        (r,) = ws.ingest([samples["retina.jpg"]])  # 1411 x 1411
        image_id = str(r.id)
        ws.labels.set("cell", "box")
        ws.labels.set("nucleus", "point")
        ws.labels.set("tumor", "polygon", attributes={"grade": ["low", "high"]})
        ws.labels.set("needs-review", "tag")
        ws.labels.set("debris", "mask")
        (box,) = ws.annotations.add(image_id, Annotations.from_boxes([BOX], "cell"), actor="fixture")
        square = [(500, 100), (800, 100), (800, 400), (500, 400)]
        (tumor,) = ws.annotations.add(image_id, Annotations.from_polygons([square], "tumor"), actor="fixture")
    finally:
        ws.close()
    with run_server(root / "workspace", tmp_path_factory.mktemp("annotate-log") / "serve.log") as base_url:
        image = _api(base_url, "GET", f"/api/v1/images/{image_id}")
        yield Site(base_url, image, box, tumor)


@pytest.fixture
def tab(chromium_browser: Browser) -> Iterator[Page]:
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


SETTLED = "() => { const o = window.__gv && window.__gv.overlay; return !!o && o.loads() > 0 && o.settled(); }"
TOOLS = "() => document.querySelector('[data-testid=\"annotate-tools\"]').dataset.ready === 'true'"
IMAGE_TO_PAGE = """([x, y]) => {
  const viewer = window.__gv.viewer;
  const item = viewer.world.getItemAt(0);
  const p = viewer.viewport.viewportToViewerElementCoordinates(item.imageToViewportCoordinates(x, y, true));
  const box = viewer.element.getBoundingClientRect();
  return [box.left + p.x, box.top + p.y];
}"""
SELECTED_ID = """() => {
  const section = document.querySelector('[data-testid="selection"]');
  return section && !section.hidden ? Number(section.dataset.annotationId) : null;
}"""


def open_image(tab: Page, site: Site) -> None:
    tab.goto(f"{site.base_url}/#/image/{site.image['id']}")
    tab.wait_for_function(SETTLED)
    tab.wait_for_function(TOOLS)


def to_page(tab: Page, x: float, y: float) -> tuple[float, float]:
    px, py = tab.evaluate(IMAGE_TO_PAGE, [x, y])
    return float(px), float(py)


def select(tab: Page, annotation_id: int, x: float, y: float) -> None:
    tab.get_by_test_id("tool-select").click()
    tab.mouse.click(*to_page(tab, x, y))
    tab.wait_for_function(f"() => ({SELECTED_ID})() === {int(annotation_id)}")


def patches_of(annotation_id: int) -> Any:
    return lambda r: r.request.method == "PATCH" and r.url.endswith(f"/api/v1/annotations/{annotation_id}")


def _point_tool_and_a_picker_that_follows_the_tool(tab: Page, site: Site) -> None:
    picker = tab.get_by_test_id("label-picker")
    picker.select_option("tumor")
    # Focus went back to the image: the overlay's keys work at once.
    assert tab.evaluate("() => document.activeElement.tagName") != "SELECT"
    tab.keyboard.press("b")
    expect(tab.get_by_test_id("tool-box")).to_have_attribute("aria-pressed", "true")
    expect(picker).to_have_value("cell")  # a box class for the box tool, not the polygon class
    tab.keyboard.press("o")
    expect(tab.get_by_test_id("tool-point")).to_have_attribute("aria-pressed", "true")
    expect(picker).to_have_value("nucleus")

    before = set(tab.evaluate("() => window.__gv.overlay.loadedIds()"))
    tab.mouse.click(*to_page(tab, 600, 700))
    new = tab.wait_for_function(
        "(before) => { const o = window.__gv.overlay; const added = o.loadedIds().filter((i) => !before.includes(i));"
        " return o.settled() && added.length === 1 ? added[0] : null; }",
        arg=sorted(before),
    ).json_value()
    record = _api(site.base_url, "GET", f"/api/v1/annotations/{int(new)}")
    assert record["kind"] == "point" and record["label"] == "nucleus" and record["source"] == "web"
    x, y = record["geometry"]["coordinates"]
    tolerance = 3 * 1411 / 800  # three screen pixels at the home zoom, in level-0 pixels
    assert math.hypot(x - 600, y - 700) < tolerance, (x, y)
    assert int(new) in tab.evaluate("() => window.__gv.overlay.renderedIds()")

    # Beside the image (the viewer is wider than it) nothing is stored, and the panel says why.
    tab.mouse.click(*to_page(tab, -40, 700))
    expect(tab.get_by_test_id("annotate-message")).to_contain_text("outside the image")
    tab.wait_for_function(SETTLED)
    assert len(tab.evaluate("() => window.__gv.overlay.loadedIds()")) == len(before) + 1


def _undo_of_a_move_is_one_write_and_refused_across_another_edit(tab: Page, site: Site) -> None:
    writes: list[str] = []

    def on_request(request: Request) -> None:
        if request.method in ("PATCH", "POST", "DELETE"):
            writes.append(f"{request.method} {request.url.split('/api/v1/')[-1]}")

    tab.on("request", on_request)
    select(tab, site.box, 340, 190)
    tab.wait_for_selector(".a9s-shape-handle")
    x, y = to_page(tab, 340, 190)
    with tab.expect_response(patches_of(site.box)) as moved:
        tab.mouse.move(x, y)
        tab.mouse.down()
        tab.mouse.move(x + 40, y, steps=8)  # eight intermediate positions
        tab.mouse.up()
        tab.keyboard.press("Escape")
    assert moved.value.status == 200
    after_move = _api(site.base_url, "GET", f"/api/v1/annotations/{site.box}")
    assert after_move["bbox"][0] > BOX[0] + 20

    writes.clear()
    with tab.expect_response(patches_of(site.box)) as undone:
        tab.keyboard.press("Control+z")
    assert undone.value.status == 200
    tab.wait_for_function(SETTLED)
    assert writes == [f"PATCH annotations/{site.box}"]  # one write, not a replay of the drag
    restored = _api(site.base_url, "GET", f"/api/v1/annotations/{site.box}")
    assert restored["bbox"] == list(BOX) and restored["version"] == after_move["version"] + 1

    with tab.expect_response(patches_of(site.box)) as redone:
        tab.keyboard.press("Control+Shift+z")
    assert redone.value.status == 200
    tab.wait_for_function(SETTLED)
    assert _api(site.base_url, "GET", f"/api/v1/annotations/{site.box}")["bbox"] == after_move["bbox"]

    # Someone else edits it; undoing now would overwrite their edit: refused, their version shown.
    current = _api(site.base_url, "GET", f"/api/v1/annotations/{site.box}")
    theirs = _api(
        site.base_url,
        "PATCH",
        f"/api/v1/annotations/{site.box}",
        {"version": current["version"], "changes": {"status": "accepted"}, "actor": "someone-else"},
    )
    with tab.expect_response(patches_of(site.box)) as refused:
        tab.keyboard.press("Control+z")
    assert refused.value.status == 409
    message = tab.get_by_test_id("overlay-message")
    expect(message).to_contain_text("Cannot undo")
    expect(message).to_contain_text(f"version {theirs['version']}")
    tab.wait_for_function(SETTLED)
    assert _api(site.base_url, "GET", f"/api/v1/annotations/{site.box}") == theirs
    # Put the box back for the other tests.
    _api(
        site.base_url,
        "PATCH",
        f"/api/v1/annotations/{site.box}",
        {"version": theirs["version"], "changes": {"bbox": list(BOX), "status": "proposed"}},
    )


def _a_box_under_a_point_class_is_refused_with_the_servers_reason(tab: Page, site: Site) -> None:
    tab.keyboard.press("b")
    tab.get_by_test_id("label-picker").select_option("nucleus")  # chosen by hand after the tool
    start, end = to_page(tab, 900, 900), to_page(tab, 1000, 1000)
    with tab.expect_response(lambda r: r.request.method == "POST") as posted:
        tab.mouse.move(*start)
        tab.mouse.down()
        tab.mouse.move(*end, steps=4)
        tab.mouse.up()
    assert posted.value.status == 400
    message = tab.get_by_test_id("overlay-message")
    expect(message).to_contain_text("label 'nucleus' is a point class: a box cannot be stored under it")
    records = _api(site.base_url, "GET", f"/api/v1/images/{site.image['id']}/annotations")["items"]
    assert not any(r["kind"] == "box" and r["label"] == "nucleus" for r in records)

    # Tagging the image takes a tag class whatever the drawing tools have picked, and gives their class back.
    tab.get_by_test_id("label-picker").select_option("cell")
    with tab.expect_response(lambda r: r.request.method == "POST") as tagged:
        tab.get_by_test_id("add-tag").click()
    assert tagged.value.status == 201
    expect(tab.get_by_test_id("tag")).to_contain_text("needs-review")
    expect(tab.get_by_test_id("label-picker")).to_have_value("cell")


def _attributes_editor_edits_the_selected_shape(tab: Page, site: Site) -> None:
    select(tab, site.tumor, 520, 120)
    field = tab.locator('[data-testid="attribute"][data-attribute="grade"]')
    expect(field).to_be_visible()
    with tab.expect_response(patches_of(site.tumor)) as patched:
        field.select_option("high")
    assert patched.value.status == 200
    assert _api(site.base_url, "GET", f"/api/v1/annotations/{site.tumor}")["attributes"] == {"grade": "high"}
    assert tab.evaluate("() => document.activeElement.tagName") != "SELECT"

    # Copy and paste the selected polygon: a moved copy with the same label and attributes, in one POST.
    tab.keyboard.press("Control+c")
    expect(tab.get_by_test_id("annotate-message")).to_contain_text("Copied polygon tumor")
    with tab.expect_response(lambda r: r.request.method == "POST") as pasted:
        tab.keyboard.press("Control+v")
    assert pasted.value.status == 201
    (copy_id,) = pasted.value.json()["ids"]
    copy = _api(site.base_url, "GET", f"/api/v1/annotations/{copy_id}")
    assert copy["kind"] == "polygon" and copy["label"] == "tumor" and copy["attributes"] == {"grade": "high"}
    dx = copy["bbox"][0] - 500
    assert dx > 10 and copy["bbox"][1] - 100 == pytest.approx(dx)  # 16 screen px right and down, in level-0 px


def _mask_pixels(record: dict[str, Any]) -> int:
    import pycocotools.mask as rle

    mask = record["mask"]
    x0, y0, x1, y1 = record["bbox"]
    assert mask["size"] == [round(y1 - y0), round(x1 - x0)]  # the RLE of the bbox window, as the server stores it
    return int(rle.decode({"size": mask["size"], "counts": mask["counts"].encode()}).sum())


def drag(tab: Page, start: tuple[float, float], end: tuple[float, float]) -> None:
    tab.mouse.move(*to_page(tab, *start))
    tab.mouse.down()
    tab.mouse.move(*to_page(tab, *end), steps=6)
    tab.mouse.up()


def _brush_paints_a_mask_the_eraser_takes_pixels_away_and_undo_restores(tab: Page, site: Site) -> None:
    tab.keyboard.press("m")
    expect(tab.get_by_test_id("tool-brush")).to_have_attribute("aria-pressed", "true")
    expect(tab.get_by_test_id("label-picker")).to_have_value("debris")  # the mask class
    with tab.expect_response(lambda r: r.request.method == "POST") as posted:
        drag(tab, (200, 1000), (300, 1000))
    assert posted.value.status == 201
    (new,) = posted.value.json()["ids"]
    tab.wait_for_function(SETTLED)
    record = _api(site.base_url, "GET", f"/api/v1/annotations/{new}")
    assert record["kind"] == "mask" and record["label"] == "debris"
    x0, y0, x1, y1 = record["bbox"]
    assert 170 < x0 < 200 and 300 < x1 < 330 and 970 < y0 < 1000 and 1000 < y1 < 1030, record["bbox"]
    painted = _mask_pixels(record)
    assert painted > 100 * 30

    # A second stroke extends the same mask; past the image's edge it is clipped.
    with tab.expect_response(patches_of(new)) as extended:
        drag(tab, (300, 1000), (1500, 1000))
    assert extended.value.status == 200
    tab.wait_for_function(SETTLED)
    record = _api(site.base_url, "GET", f"/api/v1/annotations/{new}")
    assert record["bbox"][2] == 1411 and _mask_pixels(record) > painted

    tab.keyboard.press("e")
    expect(tab.get_by_test_id("tool-eraser")).to_have_attribute("aria-pressed", "true")
    before = _mask_pixels(record)
    with tab.expect_response(patches_of(new)) as erased:
        drag(tab, (600, 980), (700, 1020))
    assert erased.value.status == 200
    tab.wait_for_function(SETTLED)
    assert _mask_pixels(_api(site.base_url, "GET", f"/api/v1/annotations/{new}")) < before

    with tab.expect_response(patches_of(new)) as undone:
        tab.keyboard.press("Control+z")
    assert undone.value.status == 200
    tab.wait_for_function(SETTLED)
    assert _mask_pixels(_api(site.base_url, "GET", f"/api/v1/annotations/{new}")) == before


# Two pages, each going through several tools (a page load costs more than a tool).
def test_drawing_tools_follow_the_class_kinds(tab: Page, site: Site) -> None:
    open_image(tab, site)
    _point_tool_and_a_picker_that_follows_the_tool(tab, site)
    _a_box_under_a_point_class_is_refused_with_the_servers_reason(tab, site)
    _attributes_editor_edits_the_selected_shape(tab, site)


def test_undo_redo_and_the_mask_brush(tab: Page, site: Site) -> None:
    open_image(tab, site)
    _undo_of_a_move_is_one_write_and_refused_across_another_edit(tab, site)
    _brush_paints_a_mask_the_eraser_takes_pixels_away_and_undo_restores(tab, site)
