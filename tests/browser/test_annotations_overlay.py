"""The annotation overlay in the viewer (Annotorious over OpenSeadragon), end to end.

A real `gigavision serve` (real CSP, never bypassed) over a workspace holding a real photograph (the retina
sample) and the 1-gigapixel slide, with annotations added through the store; Debian's chromium draws,
selects and drags with real mouse events. Any CSP violation fails a test (Annotorious draws with a PixiJS
that is patched at build time to need no eval). Synchronisation is by `wait_for_function` / `expect` only:
`window.__gv.overlay.settled()` is true once no viewport load is pending or running, no edit is in
flight, and the last load covers the current view.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Response, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.browser.conftest import run_server

# one worker: the module's seeded workspace (the slide, 2,400 boxes, a server) was built on both (~25 s)
pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("overlay")]

HTML_LABEL = '<img src=x onerror="window.__xss=1">'
LIMIT = 2000  # web/src/viewport-cache.ts VIEWPORT_LIMIT
GRID_PITCH, GRID_SIZE, GRID_COLS, GRID_ROWS = 100, 60, 60, 40  # 2,400 boxes in the slide's top-left corner


@dataclass
class Seeded:
    base_url: str
    workspace: Path
    retina: dict[str, Any]
    slide: dict[str, Any]
    ids: dict[str, int]
    grid: dict[int, tuple[float, float, float, float]]  # annotation id -> bbox


def _api(base_url: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{base_url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
        raw = response.read()
    return json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def seeded(
    tmp_path_factory: pytest.TempPathFactory, samples: dict[str, Path], gigapixel_tiff: Path
) -> Iterator[Seeded]:
    import shapely

    import gigavision as gv
    from gigavision.annotations import Annotations

    index = Path(gv.__file__).parent / "server" / "static" / "index.html"
    if not index.is_file():
        pytest.fail(f"the web front end is not built ({index} is missing): run `make web`")

    root = tmp_path_factory.mktemp("overlay")
    ws = gv.init_workspace(root / "workspace")
    try:
        results = ws.ingest([samples["retina.jpg"], gigapixel_tiff])
        assert [r.status for r in results] == ["added", "added"], results
        retina_id, slide_id = str(results[0].id), str(results[1].id)

        store = ws.annotations
        store.labels.set("cell", "box", "#00c000")
        store.labels.set("tumor", "polygon", "#ff3030", attributes={"grade": ["low", "high"]})
        store.labels.set("nucleus", "point", "#3080ff")
        store.labels.set("debris", "mask", "#c0c000")
        store.labels.set(HTML_LABEL, "box", "#ff00ff")
        store.labels.set("needs-review", "tag", "#ffa000")

        ids: dict[str, int] = {}

        def add(name: str, ann: Annotations, image: str = retina_id) -> None:
            ids[name] = store.add(image, ann, actor="fixture")[0]

        # The retina (1411 × 1411): one of each kind, all in view at the home zoom.
        add("cell_a", Annotations.from_boxes([[100, 100, 200, 180]], "cell"))
        add("cell_b", Annotations.from_boxes([[300, 120, 380, 260]], "cell", status=["accepted"]))
        add("cell_c", Annotations.from_boxes([[1000, 300, 1100, 380]], "cell", status=["rejected"]))
        add("cell_d", Annotations.from_boxes([[1000, 500, 1100, 600]], "cell"))
        ring = [(500, 100), (800, 100), (800, 400), (500, 400)]
        hole = [(600, 200), (700, 200), (700, 300), (600, 300)]
        add(
            "tumor",
            Annotations.from_polygons([shapely.Polygon(ring, [hole])], "tumor", attributes=[{"grade": "high"}]),
        )
        add(
            "nucleus",
            Annotations.from_records(
                [{"kind": "point", "label": "nucleus", "geometry": {"type": "Point", "coordinates": [600, 600]}}]
            ),
        )
        blob = np.zeros((40, 60), dtype=bool)
        blob[5:35, 10:50] = True
        add("debris", Annotations.from_masks([blob], [(200, 1000)], "debris"))
        add("html", Annotations.from_boxes([[900, 900, 1000, 1000]], HTML_LABEL))
        add("tag", Annotations.from_records([{"kind": "tag", "label": "needs-review"}]))

        # The slide (40,000 × 25,000): a grid of 2,400 boxes in the top-left corner, more than one query returns.
        boxes = [
            (c * GRID_PITCH, r * GRID_PITCH, c * GRID_PITCH + GRID_SIZE, r * GRID_PITCH + GRID_SIZE)
            for r in range(GRID_ROWS)
            for c in range(GRID_COLS)
        ]
        grid_ids = store.add(slide_id, Annotations.from_boxes(boxes, "cell"), actor="fixture")
        grid = {
            int(i): (float(b[0]), float(b[1]), float(b[2]), float(b[3])) for i, b in zip(grid_ids, boxes, strict=True)
        }
    finally:
        ws.close()

    log = tmp_path_factory.mktemp("overlay-log") / "serve.log"
    with run_server(root / "workspace", log) as base_url:
        images = {i["id"]: i for i in _api(base_url, "GET", "/api/v1/images?limit=10")["items"]}
        yield Seeded(base_url, root / "workspace", images[retina_id], images[slide_id], ids, grid)


@dataclass
class PageLog:
    console: list[tuple[str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed: list[tuple[int, str, str]] = field(default_factory=list)

    def problems(self, allow_status: tuple[int, ...] = ()) -> list[str]:
        csp = [text for _, text in self.console if "Content Security Policy" in text or "unsafe-eval" in text]
        errors = [text for kind, text in self.console if kind == "error"]
        if allow_status:
            errors = [t for t in errors if not any(f"status of {s}" in t for s in allow_status)]
        return (
            [f"CSP: {t}" for t in csp]
            + [f"console error: {t}" for t in errors]
            + [f"page error: {e}" for e in self.page_errors]
            + [f"HTTP {s} {m} {u}" for s, m, u in self.failed if s not in allow_status]
        )


# Recorded before any page script runs (injected by the browser, not subject to the page's CSP).
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


@pytest.fixture
def page(chromium_browser: Browser) -> Iterator[tuple[Page, PageLog]]:
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=False)
    context.set_default_timeout(30_000)
    context.add_init_script(RECORD_CSP_VIOLATIONS)
    tab = context.new_page()
    log = PageLog()

    def on_console(message: ConsoleMessage) -> None:
        log.console.append((message.type, message.text))

    def on_response(response: Response) -> None:
        if response.status >= 400:
            log.failed.append((response.status, response.request.method, response.url))

    tab.on("console", on_console)
    tab.on("pageerror", lambda exc: log.page_errors.append(str(exc)))
    tab.on("response", on_response)
    try:
        yield tab, log
    finally:
        context.close()


# -- page helpers (every predicate is a function expression: the CSP forbids eval) ----------------------
SETTLED = "() => { const o = window.__gv && window.__gv.overlay; return !!o && o.loads() > 0 && o.settled(); }"
RENDERED = "() => window.__gv.overlay.renderedIds()"
LOADED = "() => window.__gv.overlay.loadedIds()"
IMAGE_TO_PAGE = """([x, y]) => {
  const viewer = window.__gv.viewer;
  const item = viewer.world.getItemAt(0);
  const p = viewer.viewport.viewportToViewerElementCoordinates(item.imageToViewportCoordinates(x, y, true));
  const box = viewer.element.getBoundingClientRect();
  return [box.left + p.x, box.top + p.y];
}"""
LEVEL0_PER_SCREEN_PIXEL = """() => {
  const viewer = window.__gv.viewer;
  return 1 / viewer.world.getItemAt(0).viewportToImageZoom(viewer.viewport.getZoom(true));
}"""
FIT = """([x, y, w, h]) => {
  const viewer = window.__gv.viewer;
  viewer.viewport.fitBounds(viewer.world.getItemAt(0).imageToViewportRectangle(x, y, w, h), true);
}"""
SELECTED_ID = """() => {
  const section = document.querySelector('[data-testid="selection"]');
  return section && !section.hidden ? Number(section.dataset.annotationId) : null;
}"""


def open_image(page: Page, log: PageLog, base_url: str, image: dict[str, Any]) -> None:
    page.goto(f"{base_url}/#/image/{image['id']}")
    expect(page.get_by_test_id("annotation-panel")).to_be_visible()
    try:
        page.wait_for_function(SETTLED)
    except PlaywrightTimeoutError:
        # E.g. the overlay died under the CSP: say why instead of only "timeout".
        pytest.fail(f"the overlay never loaded; page problems: {log.problems()}")


def to_page(page: Page, x: float, y: float) -> tuple[float, float]:
    px, py = page.evaluate(IMAGE_TO_PAGE, [x, y])
    return float(px), float(py)


def fit(page: Page, x: float, y: float, w: float, h: float) -> None:
    """Shows level-0 rectangle (x, y, w, h) at once, then waits for its annotations."""
    page.evaluate(FIT, [x, y, w, h])
    page.wait_for_function(SETTLED)


def select_annotation(page: Page, annotation_id: int, x: float, y: float) -> None:
    """Clicks level-0 point (x, y) with the Select tool and waits until `annotation_id` is the selection."""
    page.get_by_test_id("tool-select").click()
    page.mouse.click(*to_page(page, x, y))
    page.wait_for_function(f"() => ({SELECTED_ID})() === {int(annotation_id)}")


NEW_ID = """(before) => {
  const overlay = window.__gv.overlay;
  const added = overlay.loadedIds().filter((id) => !before.includes(id));
  return overlay.settled() && added.length === 1 ? added[0] : null;
}"""


def created_id(page: Page, before: set[int]) -> int:
    """Waits for the one annotation the page created (stored, and in the overlay) since `before`."""
    return int(page.wait_for_function(NEW_ID, arg=sorted(before)).json_value())


def is_patch_of(annotation_id: int) -> Any:
    return lambda r: r.request.method == "PATCH" and r.url.endswith(f"/api/v1/annotations/{annotation_id}")


def intersecting(grid: dict[int, tuple[float, float, float, float]], rect: list[float]) -> set[int]:
    x0, y0, x1, y1 = rect
    return {i for i, b in grid.items() if b[0] <= x1 and b[2] >= x0 and b[1] <= y1 and b[3] >= y0}


# -- tests ----------------------------------------------------------------------------------------------
def test_overlay_shows_the_annotations_in_view(page: tuple[Page, PageLog], seeded: Seeded) -> None:
    tab, log = page
    open_image(tab, log, seeded.base_url, seeded.retina)
    spatial = {seeded.ids[n] for n in ("cell_a", "cell_b", "cell_c", "cell_d", "tumor", "nucleus", "debris", "html")}

    assert spatial <= set(tab.evaluate(RENDERED))
    expect(tab.get_by_test_id("overlay-count")).to_contain_text("in view")

    # The query: the visible level-0 rectangle, simplified to about one screen pixel.
    query = tab.evaluate("() => window.__gv.overlay.lastQuery()")
    rect = tab.evaluate("() => window.__gv.overlay.visibleRect()")
    assert query["limit"] == LIMIT and not query["truncated"]
    assert all(abs(a - b) <= 1 for a, b in zip(query["bbox"], rect, strict=True)), (query, rect)
    per_pixel = tab.evaluate(LEVEL0_PER_SCREEN_PIXEL)
    assert query["simplify"] == pytest.approx(per_pixel, rel=0.01), (query, per_pixel)

    # Every kind is drawn by the batched layer (overlay-layer.ts); the polygon keeps its hole; masks are drawn
    # as their box; the tag goes to the panel. Annotorious holds none until one is selected.
    shapes = tab.evaluate("() => window.__gv.overlay.drawn()")
    ids = seeded.ids
    assert shapes[str(ids["cell_a"])]["kind"] == "box" and shapes[str(ids["cell_a"])]["rings"] == 1
    assert shapes[str(ids["cell_b"])]["status"] == "accepted"
    tumor = {"kind": "polygon", "rings": 2, "status": "proposed", "label": "tumor", "editing": False}
    assert shapes[str(ids["tumor"])] == tumor
    assert shapes[str(ids["nucleus"])]["kind"] == "point"
    assert shapes[str(ids["debris"])]["kind"] == "mask" and shapes[str(ids["debris"])]["rings"] == 1
    assert str(ids["tag"]) not in shapes
    assert tab.evaluate("() => window.__gv.overlay.annotator.getAnnotations().length") == 0
    expect(tab.get_by_test_id("tag")).to_have_count(1)
    expect(tab.get_by_test_id("tag")).to_contain_text("needs-review")

    # The label picker lists the schema's classes.
    options = tab.locator('[data-testid="label-picker"] option').all_inner_texts()
    assert sorted(options) == sorted(["cell", "tumor", "nucleus", "debris", HTML_LABEL, "needs-review"])

    # Hide, show.
    toggle = tab.get_by_test_id("overlay-toggle")
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    assert tab.evaluate(RENDERED) == []
    assert tab.evaluate("() => document.querySelector('canvas.a9s-gl-canvas').classList.contains('hidden')")
    expect(tab.get_by_test_id("overlay-layer")).to_be_hidden()
    tab.keyboard.press("h")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    tab.wait_for_function(SETTLED)
    assert spatial <= set(tab.evaluate(RENDERED))

    assert tab.evaluate("() => window.__cspViolations") == []
    assert log.problems() == []


def test_gigapixel_viewport_loading_limit_and_unloading(page: tuple[Page, PageLog], seeded: Seeded) -> None:
    tab, log = page
    open_image(tab, log, seeded.base_url, seeded.slide)

    # Whole slide: 2,400 boxes overlap the view, one query returns a sample of LIMIT, and the page says so.
    query = tab.evaluate("() => window.__gv.overlay.lastQuery()")
    assert query["count"] == LIMIT and query["truncated"] and query["total"] == len(seeded.grid), query
    notice = tab.get_by_test_id("overlay-notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("Showing 2,000 of 2,400")
    expect(notice).to_contain_text("zoom in")
    assert len(tab.evaluate(LOADED)) == LIMIT
    # The legend and the count say how many are really in view (the server's count), not the sample's.
    expect(tab.get_by_test_id("legend").locator('[data-label="cell"]')).to_have_attribute("data-count", "2400")
    expect(tab.get_by_test_id("overlay-count")).to_contain_text("2,400 in view (2,000 drawn)")
    assert query["simplify"] > 30  # ~40 level-0 px per screen pixel

    # Zoomed into the corner: everything in view is loaded and drawn, nothing more than the query gave.
    fit(tab, 0, 0, 2400, 1500)
    expect(notice).to_be_hidden()
    rect = tab.evaluate("() => window.__gv.overlay.visibleRect()")
    expected = intersecting(seeded.grid, rect)
    assert 100 < len(expected) < LIMIT, len(expected)
    assert set(tab.evaluate(RENDERED)) == expected
    # Annotations already loaded from the wide view stay cached only near the view.
    loaded = set(tab.evaluate(LOADED))
    assert expected <= loaded
    w, h = rect[2] - rect[0], rect[3] - rect[1]
    near = intersecting(seeded.grid, [rect[0] - w, rect[1] - h, rect[2] + w, rect[3] + h])
    assert loaded <= near

    # Far away: nothing to show, and what was loaded is dropped.
    fit(tab, 30_000, 20_000, 2400, 1500)
    assert tab.evaluate(RENDERED) == []
    assert tab.evaluate(LOADED) == []
    expect(tab.get_by_test_id("overlay-count")).to_contain_text("0 in view · 0 loaded")
    expect(notice).to_be_hidden()

    # Back: loaded again.
    fit(tab, 0, 0, 2400, 1500)
    assert set(tab.evaluate(RENDERED)) == expected
    assert log.problems() == []


def test_draw_box_and_polygon_create_annotations(page: tuple[Page, PageLog], seeded: Seeded) -> None:
    tab, log = page
    open_image(tab, log, seeded.base_url, seeded.retina)
    before = set(tab.evaluate(LOADED))
    tolerance = 2 * tab.evaluate(LEVEL0_PER_SCREEN_PIXEL)  # two screen pixels, in level-0 pixels

    # A box, dragged with the mouse from (700, 900) to (850, 1050) in level-0 pixels.
    tab.get_by_test_id("label-picker").select_option("cell")
    tab.get_by_test_id("tool-box").click()
    start, end = to_page(tab, 700, 900), to_page(tab, 850, 1050)
    tab.mouse.move(*start)
    tab.mouse.down()
    tab.mouse.move((start[0] + end[0]) / 2, (start[1] + end[1]) / 2, steps=4)
    tab.mouse.move(*end, steps=4)
    tab.mouse.up()
    new = created_id(tab, before)
    record = _api(seeded.base_url, "GET", f"/api/v1/annotations/{new}")
    assert record["kind"] == "box" and record["label"] == "cell"
    assert record["source"] == "web" and record["status"] == "proposed" and record["version"] == 1
    for got, want in zip(record["bbox"], [700, 900, 850, 1050], strict=True):
        assert abs(got - want) <= tolerance, (record["bbox"], tolerance)
    # In the database, found by a viewport query through the spatial index.
    import gigavision as gv
    from gigavision.store.annotations import Viewport

    ws = gv.open_workspace(seeded.workspace)
    try:
        stored = ws.annotations.query(str(seeded.retina["id"]), Viewport(690, 890, 860, 1060))
    finally:
        ws.close()
    row = int(np.nonzero(stored.id == new)[0][0])
    assert stored.label[row] == "cell" and stored.kind[row] == "box" and stored.source[row] == "web"
    assert np.allclose(stored.xyxy[row], [700, 900, 850, 1050], atol=tolerance), (stored.xyxy[row], tolerance)
    assert new in tab.evaluate(RENDERED)

    # A polygon: a click per corner, then a click on the first corner closes it.
    before = set(tab.evaluate(LOADED))
    tab.get_by_test_id("label-picker").select_option("tumor")
    tab.get_by_test_id("tool-polygon").click()
    corners = [(300, 700), (500, 650), (520, 850), (320, 880)]
    for x, y in [*corners, corners[0]]:
        tab.mouse.click(*to_page(tab, x, y))
    new = created_id(tab, before)
    record = _api(seeded.base_url, "GET", f"/api/v1/annotations/{new}")
    assert record["kind"] == "polygon" and record["label"] == "tumor" and record["source"] == "web"
    ring = record["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == len(corners) + 1
    for (gx, gy), (wx, wy) in zip(ring[:-1], corners, strict=True):
        assert math.hypot(gx - wx, gy - wy) <= tolerance, (ring, tolerance)

    assert log.problems() == []


def test_stale_edit_shows_conflict_and_reloads(page: tuple[Page, PageLog], seeded: Seeded) -> None:
    tab, log = page
    target = seeded.ids["cell_b"]  # (300, 120, 380, 260)
    open_image(tab, log, seeded.base_url, seeded.retina)

    # Someone else changes the box after this page loaded it.
    current = _api(seeded.base_url, "GET", f"/api/v1/annotations/{target}")
    theirs = _api(
        seeded.base_url,
        "PATCH",
        f"/api/v1/annotations/{target}",
        {"version": current["version"], "changes": {"status": "rejected"}, "actor": "someone-else"},
    )

    # Here: select it, drag it 30 screen pixels to the right, let go of the selection (Esc) -> PATCH.
    select_annotation(tab, target, 340, 190)
    tab.wait_for_selector(".a9s-shape-handle")
    x, y = to_page(tab, 340, 190)
    with tab.expect_response(is_patch_of(target)) as patched:
        tab.mouse.move(x, y)
        tab.mouse.down()
        tab.mouse.move(x + 30, y, steps=5)
        tab.mouse.up()
        tab.keyboard.press("Escape")
    assert patched.value.status == 409

    message = tab.get_by_test_id("overlay-message")
    expect(message).to_be_visible()
    expect(message).to_contain_text("changed by someone else — reloaded")
    tab.wait_for_function(SETTLED)
    # The page now shows (and would edit) the stored version: theirs, not the dragged one.
    shown = tab.evaluate(
        f"() => {{ const r = window.__gv.overlay.recordOf({target});"
        " return { version: r.version, status: r.status, x: r.bbox[0] }; }"
    )
    assert shown == {"version": theirs["version"], "status": "rejected", "x": 300}, shown
    stored = _api(seeded.base_url, "GET", f"/api/v1/annotations/{target}")
    assert stored["bbox"] == [300, 120, 380, 260] and stored["version"] == theirs["version"]

    # The next edit, based on the reloaded version, goes through.
    select_annotation(tab, target, 340, 190)
    with tab.expect_response(is_patch_of(target)) as patched:
        tab.get_by_test_id("status-picker").select_option("accepted")
    assert patched.value.status == 200
    tab.wait_for_function(SETTLED)
    assert _api(seeded.base_url, "GET", f"/api/v1/annotations/{target}")["status"] == "accepted"

    assert log.problems(allow_status=(409,)) == []
    assert [s for s, _, _ in log.failed] == [409]


def test_delete_and_server_errors(page: tuple[Page, PageLog], seeded: Seeded) -> None:
    tab, log = page
    open_image(tab, log, seeded.base_url, seeded.retina)

    # Delete key: DELETE with the version; gone from the store and from the view.
    doomed = seeded.ids["cell_d"]  # (1000, 500, 1100, 600)
    select_annotation(tab, doomed, 1050, 550)
    with tab.expect_response(lambda r: r.request.method == "DELETE") as deleted:
        tab.keyboard.press("Delete")
    assert deleted.value.status == 204
    assert "version=1" in deleted.value.url
    tab.wait_for_function(f"() => !window.__gv.overlay.loadedIds().includes({doomed})")
    with pytest.raises(urllib.error.HTTPError) as gone:
        _api(seeded.base_url, "GET", f"/api/v1/annotations/{doomed}")
    assert gone.value.code == 404

    # A 4xx shows the server's own message: the tumour has attribute grade=high, which class "cell" lacks.
    tumor = seeded.ids["tumor"]
    select_annotation(tab, tumor, 520, 250)
    tab.get_by_test_id("label-picker").select_option("cell")
    with tab.expect_response(lambda r: r.request.method == "PATCH") as refused:
        tab.get_by_test_id("relabel").click()
    assert refused.value.status == 400
    server_message = refused.value.json()["error"]["message"]
    message = tab.get_by_test_id("overlay-message")
    expect(message).to_have_text(server_message)
    assert "grade" in server_message
    assert _api(seeded.base_url, "GET", f"/api/v1/annotations/{tumor}")["label"] == "tumor"

    assert log.problems(allow_status=(400,)) == []


def test_html_label_is_text_not_markup(page: tuple[Page, PageLog], seeded: Seeded) -> None:
    tab, log = page
    open_image(tab, log, seeded.base_url, seeded.retina)

    option = tab.locator('[data-testid="label-picker"] option', has_text="onerror")
    expect(option).to_have_text(HTML_LABEL)
    select_annotation(tab, seeded.ids["html"], 950, 950)
    expect(tab.get_by_test_id("selected-label")).to_have_text(HTML_LABEL)

    assert tab.locator('img[src="x"]').count() == 0
    assert tab.evaluate("() => window.__xss") is None
    assert tab.evaluate("() => window.__cspViolations") == []
    assert log.problems() == []


def test_a_colour_the_viewer_cannot_draw_is_replaced_by_the_servers_palette(
    page: tuple[Page, PageLog], seeded: Seeded
) -> None:
    """The viewer keeps no palette: a label without a usable schema colour gets GET /api/v1/labels/palette's."""
    tab, log = page
    served = _api(seeded.base_url, "GET", "/api/v1/labels/palette?name=debris")["debris"]
    rgb = "rgb({}, {}, {})".format(*(int(served[i : i + 2], 16) for i in (1, 3, 5)))
    _api(seeded.base_url, "PUT", "/api/v1/labels/debris", {"kind": "mask", "color": "olive"})
    try:
        open_image(tab, log, seeded.base_url, seeded.retina)
        swatch = tab.locator('[data-testid="annotation-panel"] label.row > .swatch')
        picker = tab.get_by_test_id("label-picker")
        picker.select_option("debris")
        expect(swatch).to_have_css("background-color", rgb)
        picker.select_option("cell")
        expect(swatch).to_have_css("background-color", "rgb(0, 192, 0)")  # the schema's #00c000
        select_annotation(tab, seeded.ids["debris"], 230, 1020)
        expect(tab.locator('[data-testid="selected-label"] .swatch')).to_have_css("background-color", rgb)
    finally:
        _api(seeded.base_url, "PUT", "/api/v1/labels/debris", {"kind": "mask", "color": "#c0c000"})
    assert log.problems() == []
