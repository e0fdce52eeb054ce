"""The expert screens with a login (a workspace with users): an annotator logs in, answers a review task with A (the
POST carries the session's CSRF token) and the answer is recorded as theirs; on the QC screen (acting as the login,
no name to type) they hand in the box they drew (stored by the viewer's request as user:NAME)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

import gigavision as gv
from gigavision.active.quality import QualityControl
from gigavision.annotations import Annotations
from gigavision.store.reviews import NewTask
from gigavision.store.users import Accounts
from tests.browser.conftest import run_server

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"


def test_annotator_reviews_and_hands_in(chromium_browser: Browser, tmp_path: Path) -> None:
    from PIL import Image
    from skimage import data

    Image.fromarray(data.coins()).save(tmp_path / "coins.png")
    with gv.init_workspace(tmp_path / "ws") as ws:
        Accounts(ws.session).add("ana", "annotator", PASSWORD)
        (result,) = ws.ingest([tmp_path / "coins.png"])
        assert result.id is not None
        box = {"kind": "box", "label": "coin", "bbox": [40, 40, 90, 90], "source": "model:m", "status": "proposed"}
        image_id = result.id
        (aid,) = ws.annotations.add(result.id, Annotations.from_records([box], canvas=ws.canvas(result.id)), "m")
        ws.reviews.add([NewTask(image_id=result.id, reason="audit", annotation_id=aid, label="coin")], actor="m")
        (task,) = ws.reviews.page()[0]
        qc = QualityControl(ws)
        (item,) = qc.add_items(result.id, "box", actor="lead", required=2)
        qc.assign([item["id"]], actor="lead", annotators=["ana", "ben"])
        ben = {"kind": "box", "label": "coin", "bbox": [40, 40, 90, 90], "source": "user:ben"}
        qc.submit(item["id"], "ben", Annotations.from_records([ben], canvas=ws.canvas(result.id)))
    with run_server(tmp_path / "ws", tmp_path / "serve.log") as base_url:
        context = chromium_browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=False)
        context.set_default_timeout(15_000)
        page = context.new_page()
        page.goto(f"{base_url}/#/review")
        page.wait_for_url("**/login?next=*")
        page.fill("#login-name", "ana")
        page.fill("#login-password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/#/review")
        expect(page.get_by_test_id("review-task")).to_have_attribute("data-task-id", str(task["id"]))
        page.wait_for_function("(id) => window.__gvReview && window.__gvReview.shown === id", arg=task["id"])
        page.keyboard.press("a")
        expect(page.get_by_test_id("review-state")).to_contain_text("No more open tasks")
        expect(page.get_by_test_id("review-counts")).to_contain_text("1 answered")

        # ana draws a box as the viewer stores it (POST with source "web" and the CSRF header), then hands it in
        drawn = """async (imageId) => {
          const me = await (await fetch('/api/v1/me')).json();
          const box = {kind: 'box', label: 'coin', bbox: [42, 40, 92, 90], source: 'web'};
          const body = {annotations: [box], actor: me.name};
          const r = await fetch(`/api/v1/images/${imageId}/annotations`, {method: 'POST', body: JSON.stringify(body),
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf}});
          return r.status;
        }"""
        assert page.evaluate(drawn, image_id) == 201
        page.get_by_test_id("app-nav").get_by_text("QC").click()
        expect(page.get_by_test_id("qc-actor")).to_have_count(0)  # the login acts
        row = page.locator(f"[data-testid=qc-items] tr[data-item='{item['id']}']")
        expect(row.get_by_test_id("qc-open")).to_have_attribute("href", f"#/image/{image_id}")
        row.get_by_test_id("qc-submit").click()
        expect(page.get_by_test_id("qc-message")).to_contain_text("handed in with 1 label; the item is agreed")
        expect(row.get_by_test_id("qc-my-status")).to_have_text("submitted")
        context.close()
    with gv.open_workspace(tmp_path / "ws") as ws:
        answered = ws.reviews.get(task["id"])
        label = ws.annotations.get_record(answered["result_annotation_id"])
    assert (answered["decision"], answered["decided_by"]) == ("accept", "ana")
    assert label["source"] == "user:ana"
