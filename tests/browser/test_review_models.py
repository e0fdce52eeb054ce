"""The models page in Debian's chromium: models with their headline metric and lineage, the aliases table, promote
a model to "production" and roll it back with the buttons (a manager's), the alias history; a model of another
label set is refused with the server's reason. A tiny digits classifier (about a second of training) and clones
of it stand for the models.

Set ``GIGAVISION_SCREENSHOTS=DIR`` to also save a screenshot of the page there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

import gigavision as gv
from gigavision.models import aliases, store
from tests.browser.conftest import run_server
from tests.realdata import digits_version
from tests.seeding import TRAIN_SEED

pytestmark = pytest.mark.browser

TINY = {"task": "classify", "dataset": "digits@1", "arch": "test_resnet", "image_size": 16, "epochs": 1}


def _clone(ws: gv.Workspace, info: store.ModelInfo, model_id: str, **card: object) -> None:
    folder = store.models_dir(ws) / model_id
    shutil.copytree(info.path, folder)
    info.card.model_copy(update={"id": model_id, **card}).write(folder)


@pytest.fixture(scope="module")
def models_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from gigavision.train.recipe import load_recipe
    from gigavision.train.trainer import train

    root = tmp_path_factory.mktemp("models-page")
    with gv.init_workspace(root / "ws") as ws:
        digits_version(ws, root / "digits", limit=40)
        a = train(ws, load_recipe(overrides={**TINY, "seed": TRAIN_SEED}), model_id="digits-a")
        _clone(ws, a, "digits-b")
        _clone(ws, a, "odd", classes=[*a.classes[:-1], "eleven"])
        aliases.set_alias(ws, "production", "digits-a", actor="lead")
    with run_server(root / "ws", root / "serve.log") as base_url:
        yield base_url, root / "ws"


@pytest.fixture
def page(chromium_browser: Browser) -> Iterator[Page]:
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=False)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert errors == []


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
    expect(page.get_by_test_id("model-details")).to_contain_text("Metrics")
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
    production.get_by_text("history").click()
    expect(production.get_by_test_id("alias-history").locator("li")).to_have_count(3)  # set, promote, rollback

    with gv.open_workspace(workspace) as ws:
        assert aliases.get_alias(ws, "production").model_id == "digits-a"
        moves = [e.action for e in aliases.history(ws, "production", 10)]
    assert moves[:2] == ["rollback", "promote"]
