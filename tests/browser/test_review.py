"""The expert screens in Debian's chromium under the server's real CSP: the review inbox answered with the keyboard
(A accept, R reject, a 409 showing the other expert's answer, N skip, 1-9 + Enter relabel, P back), the next task
shown from the prefetch (no request for it after the answer), the QC work queue handing an item in, the
adjudication screen (versions side by side in viewers that pan together, the one view, choosing with the keys),
and the image list's search.

Set ``GIGAVISION_SCREENSHOTS=DIR`` to also save a screenshot of each screen there (docs/img/ is made that way).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

import gigavision as gv
from gigavision.active.quality import QualityControl
from gigavision.annotations import Annotations
from gigavision.store.reviews import NewTask
from tests.browser.conftest import run_server

pytestmark = pytest.mark.browser

# Boxes on scikit-image's astronaut (512 x 512): [label, bbox, score], highest priority first.
PROPOSALS: list[tuple[str, list[float], float]] = [
    ("face", [170, 40, 290, 190], 0.55),
    ("flag", [440, 20, 512, 110], 0.48),
    ("face", [10, 300, 90, 380], 0.52),
    ("patch", [300, 300, 380, 380], 0.61),
]


TILES_LOADED = """() => {
  const hook = window.__gvReview || window.__gvAdjudicate;
  const item = hook && hook.viewer.world.getItemAt(0);
  return !item || item.getFullyLoaded();
}"""

# The adjudication screen's side-by-side panes: every one open; every one's tiles and overlay drawn.
PANES_OPEN = """() => {
  const hook = window.__gvAdjudicate;
  return !!hook && hook.panes.length > 0 && hook.panes.every((v) => v.world.getItemCount() > 0);
}"""
PANES_LOADED = """() => window.__gvAdjudicate.panes.every((v) => v.world.getItemAt(0).getFullyLoaded())
  && window.__gvAdjudicate.layers.every((l) => l.renders > 0)"""
# Each pane's view, level-0 [x0, y0, x1, y1].
PANE_BOUNDS = """() => window.__gvAdjudicate.panes.map((v) => {
  const r = v.viewport.viewportToImageRectangle(v.viewport.getBounds(true));
  return [r.x, r.y, r.x + r.width, r.y + r.height];
})"""

# Where the one view and the first pane go (their target): centre (level-0 x, y) and screen px per image px.
VIEW_OF = """() => [window.__gvAdjudicate.viewer, window.__gvAdjudicate.panes[0]].map((v) => {
  const r = v.viewport.viewportToImageRectangle(v.viewport.getBounds());
  return [r.x + r.width / 2, r.y + r.height / 2, v.viewport.viewportToImageZoom(v.viewport.getZoom())];
})"""


@dataclass
class Setup:
    base_url: str
    workspace: Path
    image_id: str
    tasks: list[int]
    qc_item: int


def _box(label: str, bbox: list[float], source: str, score: float | None = None) -> dict[str, Any]:
    return {"kind": "box", "label": label, "bbox": bbox, "source": source, "status": "proposed", "score": score}


@pytest.fixture(scope="module")
def review_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    from PIL import Image
    from skimage import data

    root = tmp_path_factory.mktemp("review")
    Image.fromarray(data.astronaut()).save(root / "astronaut.png")
    with gv.init_workspace(root / "ws") as ws:
        (result,) = ws.ingest([root / "astronaut.png"])
        assert result.id is not None
        image_id = result.id
        canvas = ws.canvas(image_id)
        records = [_box(label, bbox, "model:m1", score) for label, bbox, score in PROPOSALS]
        ids = ws.annotations.add(image_id, Annotations.from_records(records, canvas=canvas), "predict")
        ws.reviews.add(
            [
                NewTask(
                    image_id=image_id,
                    reason="uncertain",
                    region=tuple(bbox),  # type: ignore[arg-type]
                    annotation_id=aid,
                    model_id="m1",
                    label=label,
                    score=score,
                    uncertainty=1 - score,
                    priority=10 - i,
                )
                for i, (aid, (label, bbox, score)) in enumerate(zip(ids, PROPOSALS, strict=True))
            ],
            actor="predict",
        )
        # a region picked by active learning, to label (no proposal)
        ws.reviews.add([NewTask(image_id=image_id, reason="selected", region=(0, 0, 160, 160), priority=0)], actor="al")
        tasks = [t["id"] for t in ws.reviews.page(offset=0, limit=10)[0]]
        # A QC item both annotators label differently: ben's version is handed in here, ana's in the browser.
        qc = QualityControl(ws)
        (item,) = qc.add_items(image_id, "box", actor="lead", regions=[[0, 0, 512, 512]], required=2)
        qc.assign([item["id"]], actor="lead", annotators=["ana", "ben"])
        # Both drew the flag (a match); ben the face, ana a rocket: the two disagreements.
        ben = [_box("face", [170, 40, 290, 190], "user:ben"), _box("flag", [440, 20, 512, 110], "user:ben")]
        qc.submit(item["id"], "ben", Annotations.from_records(ben, canvas=canvas))
        ana = [_box("rocket", [20, 20, 60, 60], "user:ana"), _box("flag", [442, 22, 510, 112], "user:ana")]
        ws.annotations.add(image_id, Annotations.from_records(ana, canvas=canvas), "ana")
    with run_server(root / "ws", root / "serve.log") as base_url:
        yield Setup(base_url, root / "ws", image_id, tasks, item["id"])


@pytest.fixture
def page(chromium_browser: Browser, review_server: Setup) -> Iterator[Page]:
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=False)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "409" not in m.text else None)
    yield page
    context.close()
    assert errors == []


def _shot(page: Page, name: str, loaded: str = TILES_LOADED) -> None:
    folder = os.environ.get("GIGAVISION_SCREENSHOTS")
    if folder:
        page.wait_for_function(loaded)
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def _task_shown(page: Page, task_id: int) -> None:
    expect(page.get_by_test_id("review-task")).to_have_attribute("data-task-id", str(task_id))
    page.wait_for_function("(id) => window.__gvReview && window.__gvReview.shown === id", arg=task_id)


def test_review_inbox_keyboard(page: Page, review_server: Setup) -> None:
    t1, t2, t3, t4, t5 = review_server.tasks
    nexts: list[str] = []
    page.on("request", lambda r: nexts.append(r.url) if "/api/v1/reviews/next" in r.url else None)
    # filters in the hash: only the flag proposal, then the score band below 0.5 (the flag's 0.48 only)
    page.goto(f"{review_server.base_url}/#/review?label=flag")
    _task_shown(page, t2)
    expect(page.get_by_test_id("review-counts")).to_contain_text("1 open")
    page.get_by_test_id("filter-label").select_option("")
    page.get_by_test_id("filter-band").select_option("0-0.5")
    page.wait_for_url("**/#/review?band=0-0.5")
    _task_shown(page, t2)
    page.goto(f"{review_server.base_url}/#/review")
    _task_shown(page, t1)
    expect(page.get_by_test_id("review-counts")).to_contain_text("5 open")
    expect(page.get_by_test_id("review-task")).to_contain_text("face")
    prefetched = "(after) => performance.getEntriesByType('resource').some((e) => e.name.includes(after))"
    page.wait_for_function(prefetched, arg=f"after={t1}")
    _shot(page, "review-inbox")

    # A accepts; the next task comes from the prefetch: no request for "the one after t1" once A is pressed
    asked_before = len(nexts)
    page.keyboard.press("a")
    _task_shown(page, t2)
    assert not any(f"after={t1}" in url for url in nexts[asked_before:]), nexts
    switch_ms = page.evaluate("window.__gvReview.switches[0]")
    print(f"next task shown {switch_ms:.0f} ms after A")

    # R rejects
    page.keyboard.press("r")
    _task_shown(page, t3)

    # someone else answers t3 first: A shows their answer and stays
    with gv.open_workspace(review_server.workspace) as ws:
        ws.reviews.answer(t3, "reject", 1, "expert2")
    page.keyboard.press("a")
    conflict = page.get_by_test_id("review-conflict")
    expect(conflict).to_be_visible()
    expect(conflict).to_contain_text("reject by expert2")
    expect(page.get_by_test_id("review-task")).to_have_attribute("data-task-id", str(t3))

    # N skips to t4; 3 picks the third label (face, flag, patch), Enter saves the correction
    page.keyboard.press("n")
    _task_shown(page, t4)
    expect(page.get_by_test_id("review-labels")).to_contain_text("patch")
    page.keyboard.press("e")  # the proposal goes to the shape editor (Annotorious), its SVG hides
    expect(page.get_by_test_id("review-proposal")).to_be_hidden()
    expect(page.get_by_test_id("review-save")).to_be_visible()
    page.keyboard.press("1")
    expect(page.locator("[data-testid=review-labels] li.picked")).to_have_attribute("data-label", "face")
    page.keyboard.press("Enter")
    _task_shown(page, t5)

    # a selected region without a proposal: 2 picks "flag", L stores it as the region's label
    expect(page.get_by_test_id("review-reject")).to_be_disabled()
    page.keyboard.press("2")
    page.keyboard.press("l")
    expect(page.get_by_test_id("review-state")).to_contain_text("No more open tasks")

    # P goes back to t5, now answered
    page.keyboard.press("p")
    expect(page.get_by_test_id("review-state")).to_contain_text("labelled by")

    with gv.open_workspace(review_server.workspace) as ws:
        answered = {t: ws.reviews.get(t) for t in (t1, t2, t3, t4, t5)}
        decisions = {t: (a["decision"], a["decided_by"]) for t, a in answered.items()}
        corrected = ws.annotations.get_record(answered[t4]["result_annotation_id"])
        accepted = ws.annotations.get_record(answered[t1]["result_annotation_id"])
        region = ws.annotations.get_record(answered[t5]["result_annotation_id"])
    assert decisions[t1][0] == "accept" and decisions[t2][0] == "reject"
    assert decisions[t3] == ("reject", "expert2")
    assert decisions[t4][0] == "correct"
    assert corrected["label"] == "face" and corrected["status"] == "accepted"
    assert accepted["label"] == "face" and accepted["source"].startswith("user:")
    assert decisions[t5][0] == "labelled"
    assert (region["kind"], region["label"], region["bbox"]) == ("box", "flag", [0, 0, 160, 160])


def test_qc_hand_in_and_adjudicate(page: Page, review_server: Setup) -> None:
    item = review_server.qc_item
    page.goto(f"{review_server.base_url}/#/qc")
    actor = page.get_by_test_id("qc-actor")
    actor.fill("ana")
    actor.press("Enter")
    actor.blur()
    row = page.locator(f"[data-testid=qc-items] tr[data-item='{item}']")
    expect(row).to_contain_text("astronaut.png")
    _shot(page, "qc-queue")
    row.get_by_test_id("qc-submit").click()
    expect(page.get_by_test_id("qc-message")).to_contain_text(f"Item #{item} handed in with 2 labels")
    expect(page.get_by_test_id("qc-message")).to_contain_text("adjudication")  # agreement 0.5 (flag only)

    # someone who labelled nothing adjudicates: side by side, one pane per version, the flags matched
    actor.fill("cy")
    actor.press("Enter")
    page.locator(f"[data-testid=qc-queue] tr[data-item='{item}'] [data-testid=qc-adjudicate]").click()
    expect(page.get_by_test_id("adjudicate-state")).to_contain_text("adjudication")
    panes = page.get_by_test_id("adjudicate-pane")
    expect(panes).to_have_count(2)
    expect(panes.nth(0)).to_contain_text("ana")
    expect(panes.nth(1)).to_contain_text("ben")
    for pane in (panes.nth(0), panes.nth(1)):
        expect(pane.get_by_test_id("adjudicate-pane-count")).to_have_text("2 shapes · 1 without a match")
    page.wait_for_function(PANES_OPEN)
    batches = "() => window.__gvAdjudicate.layers.map((l) => l.batched.batches.map((b) => [b.label, b.count]))"
    assert page.evaluate(batches) == [[["agrees", 1], ["differs", 1]]] * 2  # the differing box highlighted
    page.keyboard.press("2")  # picks ben's version: its pane is marked
    expect(panes.nth(1)).to_have_class("pane picked")
    _shot(page, "adjudicate-side-by-side", PANES_LOADED)

    # a drag in ana's pane moves ben's with it
    start = page.evaluate(PANE_BOUNDS)
    area = panes.nth(0).locator(".openseadragon-canvas").bounding_box()
    assert area is not None
    x, y = area["x"] + area["width"] / 2, area["y"] + area["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 120, y - 60, steps=4)
    page.mouse.up()
    page.wait_for_function(f"() => ({PANE_BOUNDS})()[0][0] > {start[0][0] + 1}")  # ana's pane: moved right
    page.wait_for_function(f"() => {{ const [a, b] = ({PANE_BOUNDS})(); return a.every((v, i) => v === b[i]); }}")
    ana, ben = page.evaluate(PANE_BOUNDS)
    assert ana == ben and ana != pytest.approx(start[0], abs=1)

    # the one view: both versions over one viewer, the picked one (2: ben's) alone, also after a redraw
    page.keyboard.press("v")
    expect(page.get_by_test_id("adjudicate-viewer")).to_be_visible()
    expect(page.get_by_test_id("adjudicate-panes")).to_be_hidden()
    one, pane = page.evaluate(VIEW_OF)
    assert one == pytest.approx(pane, rel=1e-6)  # the same place at the same scale as the panes showed
    expect(page.locator("[data-testid^=version-]")).to_have_count(2)
    expect(page.get_by_test_id("adjudicate-versions")).to_contain_text("rocket ×1")
    page.evaluate("() => window.__gvAdjudicate.viewer.forceRedraw()")
    expect(page.get_by_test_id("version-1")).to_be_hidden()
    expect(page.get_by_test_id("version-2")).to_be_visible()
    _shot(page, "adjudicate")

    # back side by side, ben's pane still picked; Enter chooses it
    page.keyboard.press("v")
    expect(panes.nth(1)).to_be_visible()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("adjudicate-message")).to_contain_text("ben's version chosen")
    expect(panes.nth(0).get_by_test_id("adjudicate-pane-choose")).to_be_disabled()
    decided = page.request.get(f"{review_server.base_url}/api/v1/qc/items/{item}").json()
    assert decided["status"] == "adjudicated" and decided["decision"]["chosen"] == "ben"
    assert sorted(r["label"] for r in decided["consensus"]) == ["face", "flag"]


def test_image_list_search_and_nav(page: Page, review_server: Setup) -> None:
    page.goto(f"{review_server.base_url}/#/")
    expect(page.get_by_test_id("image-card")).to_have_count(1)
    search = page.get_by_test_id("list-search")
    search.fill("nothing-like-this")
    search.press("Enter")
    expect(page.get_by_test_id("empty")).to_contain_text("No images match")
    page.goto(f"{review_server.base_url}/#/?q=ASTRO&label=face")
    expect(page.get_by_test_id("image-card")).to_have_count(1)
    _shot(page, "image-list")
    nav = page.get_by_test_id("app-nav")
    nav.get_by_text("Models").click()
    expect(page.locator("h1")).to_have_text("Models")
    expect(nav.locator("[aria-current=page]")).to_have_text("Models")
    nav.get_by_text("Review").click()
    expect(page.get_by_test_id("review-viewer")).to_be_visible()

    # the viewer opened on a region (the QC "Open" and the inbox's "Open in the viewer" links)
    page.goto(f"{review_server.base_url}/#/image/{review_server.image_id}?region=300,300,380,380")
    bounds = """() => {
      const v = window.__gv && window.__gv.viewer;
      if (!v || v.world.getItemCount() === 0) return null;
      const r = v.viewport.viewportToImageRectangle(v.viewport.getBounds(true));
      return [r.x, r.y, r.x + r.width, r.y + r.height];
    }"""
    page.wait_for_function(f"() => ({bounds})() !== null")
    x0, y0, x1, y1 = page.evaluate(bounds)
    assert x0 <= 300 and y0 <= 300 and x1 >= 380 and y1 >= 380, (x0, y0, x1, y1)
    assert x1 - x0 < 400, (x0, x1)  # zoomed in on it, not the whole 512-px image
