"""The models page in Debian's chromium: models with their headline metric and lineage, the aliases table, promote
a model to "production" and roll it back with the buttons (a manager's), the alias history; a model of another
label set is refused with the server's reason. Model folders holding only their card (model.json, and a report)
stand for trained models: the page and the alias moves read nothing else.

Set ``GIGAVISION_SCREENSHOTS=DIR`` to also save a screenshot of the page there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

import gigavision as gv
from gigavision.models import aliases, store
from gigavision.models.card import ModelCard, ModelInput
from tests.browser.conftest import run_server

pytestmark = pytest.mark.browser

CLASSES = [str(d) for d in range(10)]


def _card(ws: gv.Workspace, model_id: str, created_at: str, classes: list[str] = CLASSES) -> None:
    """A published model's folder with its card only (what list, show and the alias checks read)."""
    folder = store.models_dir(ws) / model_id
    folder.mkdir(parents=True)
    ModelCard(
        id=model_id,
        task="classify",
        arch="resnet18",
        classes=classes,
        dataset="digits@1",
        input=ModelInput(size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
        created_at=created_at,
        headline="accuracy",
        metrics={"accuracy": 0.9412, "macro_f1": 0.9377},
        evaluated_on="test",
    ).write(folder)
    (folder / store.REPORT_HTML).write_text("<!doctype html><title>report</title><p>accuracy 0.9412</p>")


@pytest.fixture(scope="module")
def models_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("models-page")
    with gv.init_workspace(root / "ws") as ws:
        _card(ws, "digits-a", "2026-12-01T10:00:00+00:00")
        _card(ws, "digits-b", "2026-12-02T10:00:00+00:00")
        _card(ws, "odd", "2026-12-03T10:00:00+00:00", classes=[*CLASSES[:-1], "eleven"])
        aliases.set_alias(ws, "production", "digits-a", actor="lead")
    with run_server(root / "ws", root / "serve.log") as base_url:
        yield base_url, root / "ws"


def test_models_page_promote_and_rollback(page: Page, models_server: tuple[str, Path]) -> None:
    base_url, workspace = models_server
    page.goto(f"{base_url}/#/models")
    production = page.locator("[data-testid=aliases] tr[data-alias=production]")
    expect(production.get_by_test_id("alias-model")).to_have_text("digits-a")
    expect(production).to_contain_text("digits@1")  # lineage: the dataset version it was trained on
    expect(page.get_by_test_id("model-rows").locator("tr")).to_have_count(3)

    # a model of another label set: the server's refusal is shown, nothing moves
    page.locator("tr[data-model=odd] [data-testid=model-open]").click()
    expect(page.get_by_test_id("model-details")).to_contain_text("Trained on")
    page.get_by_test_id("model-promote").click()
    expect(page.get_by_test_id("models-message")).to_contain_text("Not promoted")
    expect(production.get_by_test_id("alias-model")).to_have_text("digits-a")

    # promote digits-b, then roll back
    page.locator("tr[data-model=digits-b] [data-testid=model-open]").click()
    expect(page.get_by_test_id("model-details")).to_contain_text("accuracy (headline)")
    expect(page.get_by_test_id("model-report")).to_have_attribute("href", "/api/v1/models/digits-b/report")
    page.get_by_test_id("model-promote").click()
    expect(page.get_by_test_id("models-message")).to_contain_text("production now serves digits-b")
    expect(production.get_by_test_id("alias-model")).to_have_text("digits-b")
    expect(page.get_by_test_id("model-aliases")).to_contain_text("Served as production")
    folder = os.environ.get("GIGAVISION_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / "models.png"))
    production.get_by_test_id("alias-rollback").click()
    expect(page.get_by_test_id("models-message")).to_contain_text("production rolled back to digits-a")
    expect(production.get_by_test_id("alias-model")).to_have_text("digits-a")
    production.get_by_text("lineage").click()  # alias -> model -> dataset version (gone here: cards only)
    expect(production.get_by_test_id("alias-lineage")).to_contain_text("production → digits-a → digits@1")
    production.get_by_text("history").click()
    expect(production.get_by_test_id("alias-history").locator("li")).to_have_count(3)  # set, promote, rollback

    with gv.open_workspace(workspace) as ws:
        assert aliases.get_alias(ws, "production").model_id == "digits-a"
        moves = [e.action for e in aliases.history(ws, "production", 10)]
    assert moves[:2] == ["rollback", "promote"]
