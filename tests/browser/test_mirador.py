"""Mirador 4 opens an image's IIIF manifest (issue 16), in Debian's chromium: the canvas is drawn from tiles of our
IIIF Image API, and the annotations panel lists the box and the polygon with their labels.

Mirador is a dev dependency of web/ (``npm ci`` installs it; ``make web`` never bundles it): the test page loads its
prebuilt UMD bundle, ``web/node_modules/mirador/dist/mirador.min.js`` (React, MUI and OpenSeadragon inside). The
page and the bundle are answered by Playwright on the server's own origin, so Mirador's requests for the manifest
and the tiles go to the real ``gigavision serve`` with no CORS set-up and no server change for the test.

Set ``GIGAVISION_SCREENSHOTS=DIR`` to also save a screenshot of Mirador there.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, Route, expect

import gigavision as gv
from gigavision.annotations import Annotations
from tests.browser.conftest import run_server

pytestmark = pytest.mark.browser

BUNDLE = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "mirador" / "dist" / "mirador.min.js"
PAGE = """<!doctype html><meta charset="utf-8"><title>Mirador</title>
<style>html, body, #mirador { margin: 0; width: 100%; height: 100%; }</style>
<div id="mirador"></div>
<script src="/__mirador__/mirador.min.js"></script>
<script>
  Mirador.viewer({
    id: "mirador",
    windows: [{ manifestId: MANIFEST }],
    window: { sideBarOpen: true, sideBarPanel: "annotations", highlightAllAnnotations: true, allowClose: false },
    workspaceControlPanel: { enabled: false },
  });
</script>"""


@pytest.fixture(scope="module")
def mirador_server(tmp_path_factory: pytest.TempPathFactory, samples: dict[str, Path]) -> Iterator[tuple[str, str]]:
    if not BUNDLE.is_file():
        message = f"Mirador is not installed ({BUNDLE} is missing): run `make web` (npm ci in web/)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("mirador")
    with gv.init_workspace(root / "ws") as ws:
        (r,) = ws.ingest([samples["coins.png"]])  # a real 384 x 303 scan
        assert r.id is not None
        rim = [(100.0, 100.0), (180.0, 100.0), (180.0, 160.0), (100.0, 160.0)]
        ann = Annotations.merge(
            [
                Annotations.from_boxes([[10.5, 20, 50, 60.25]], "coin", status=["accepted"]),
                Annotations.from_polygons([rim], "rim", status=["accepted"]),
            ]
        )
        ws.annotations.add(r.id, ann, actor="ana")
    with run_server(root / "ws", root / "serve.log") as base_url:
        yield base_url, r.id


def test_mirador_shows_the_image_and_its_annotations(page: Page, mirador_server: tuple[str, str]) -> None:
    base_url, image_id = mirador_server
    manifest = f"{base_url}/iiif/3/{image_id}/manifest.json"
    html = PAGE.replace("MANIFEST", json.dumps(manifest))

    def serve(route: Route) -> None:
        if route.request.url.endswith("/mirador.min.js"):
            route.fulfill(path=BUNDLE, content_type="text/javascript")
        else:
            route.fulfill(body=html, content_type="text/html")

    page.route(f"{base_url}/__mirador__/**", serve)
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    answered: dict[str, int] = {}
    page.on("response", lambda r: answered.__setitem__(r.url, r.status))
    # OpenSeadragon draws the canvas from our IIIF Image API: info.json, then image requests (tiles)
    tile = re.compile(rf"^{re.escape(base_url)}/iiif/3/{image_id}/[^/]+/[^/]+/0/default\.jpg$")
    with page.expect_response(lambda r: bool(tile.match(r.url)) and r.status == 200):
        page.goto(f"{base_url}/__mirador__/index.html")
    assert answered[manifest] == 200 and answered[f"{base_url}/iiif/3/{image_id}/info.json"] == 200

    panel = page.locator("#mirador")
    expect(panel.get_by_text("Showing 2 annotations")).to_be_visible()
    for label, kind in (("coin", "box"), ("rim", "polygon")):
        expect(panel.get_by_text(f"{label} ({kind}, accepted, unknown)")).to_be_visible()  # the describing body
        expect(panel.locator(".MuiChip-label", has_text=re.compile(f"^{label}$"))).to_be_visible()  # the tag
    tiles = [u for u in requested if tile.match(u)]
    assert tiles and all(answered.get(u) == 200 for u in tiles), (tiles, answered)
    if os.environ.get("GIGAVISION_SCREENSHOTS"):
        page.screenshot(path=str(Path(os.environ["GIGAVISION_SCREENSHOTS"]) / "mirador.png"))
