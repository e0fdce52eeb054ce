"""The review inbox with a login (a workspace with users): a reviewer logs in, answers with A (the POST carries the
session's CSRF token), and the answer is recorded as theirs; the QC screen acts as the login (no name to type)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

import gigavision as gv
from gigavision.annotations import Annotations
from gigavision.store.reviews import NewTask
from gigavision.store.users import Accounts
from tests.browser.conftest import run_server

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"


def test_reviewer_answers_as_themselves(chromium_browser: Browser, tmp_path: Path) -> None:
    from PIL import Image
    from skimage import data

    Image.fromarray(data.coins()).save(tmp_path / "coins.png")
    with gv.init_workspace(tmp_path / "ws") as ws:
        Accounts(ws.session).add("rita", "reviewer", PASSWORD)
        (result,) = ws.ingest([tmp_path / "coins.png"])
        assert result.id is not None
        box = {"kind": "box", "label": "coin", "bbox": [40, 40, 90, 90], "source": "model:m", "status": "proposed"}
        (aid,) = ws.annotations.add(result.id, Annotations.from_records([box], canvas=ws.canvas(result.id)), "m")
        ws.reviews.add([NewTask(image_id=result.id, reason="audit", annotation_id=aid, label="coin")], actor="m")
        (task,) = ws.reviews.page()[0]
    with run_server(tmp_path / "ws", tmp_path / "serve.log") as base_url:
        context = chromium_browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=False)
        context.set_default_timeout(15_000)
        page = context.new_page()
        page.goto(f"{base_url}/#/review")
        page.wait_for_url("**/login?next=*")
        page.fill("#login-name", "rita")
        page.fill("#login-password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/#/review")
        expect(page.get_by_test_id("review-task")).to_have_attribute("data-task-id", str(task["id"]))
        page.wait_for_function("(id) => window.__gvReview && window.__gvReview.shown === id", arg=task["id"])
        page.keyboard.press("a")
        expect(page.get_by_test_id("review-state")).to_contain_text("No more open tasks")
        expect(page.get_by_test_id("review-counts")).to_contain_text("1 answered")
        page.get_by_test_id("app-nav").get_by_text("QC").click()
        expect(page.get_by_text("No items assigned to you.")).to_be_visible()
        expect(page.get_by_test_id("qc-actor")).to_have_count(0)  # the login acts
        context.close()
    with gv.open_workspace(tmp_path / "ws") as ws:
        answered = ws.reviews.get(task["id"])
        label = ws.annotations.get_record(answered["result_annotation_id"])
    assert (answered["decision"], answered["decided_by"]) == ("accept", "rita")
    assert label["source"] == "user:rita"
