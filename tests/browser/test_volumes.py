"""A 3D volume in the viewer, in Debian's chromium (issue 17): a CT series opens on its middle axial slice with
plane buttons and a slice slider; the slice keys and the slider load the tiles of the new slice under the same
zoom; the coronal plane opens at its own (taller) size, and an annotation drawn on one coronal slice is shown
on that slice only."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, Response, expect

import gigavision as gv
from tests.browser.conftest import run_server
from tests.volumes import phantom, write_series

pytestmark = pytest.mark.browser

SHAPE = (24, 96, 112)  # z, y, x; 0.7 mm pixels, 2.5 mm slices
CORONAL_ROWS = round(24 * 2.5 / 0.7)


@pytest.fixture(scope="module")
def volume_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("volume")
    write_series(root / "ct", phantom(SHAPE, seed=3), spacing=0.7, step=2.5)
    with gv.init_workspace(root / "ws") as ws:
        result = ws.ingest([root / "ct"])[0]
        assert result.status == "added", result
        image_id = str(result.id)
    with run_server(root / "ws", root / "serve.log") as base_url:
        yield base_url, image_id


def _shown(page: Page, ref: str) -> None:
    page.wait_for_function(f"() => window.__gv && window.__gv.volume && window.__gv.volume.shown === '/dzi/{ref}.dzi'")


def _zoom_and_centre(page: Page) -> list[float]:
    return list(
        page.evaluate(
            "() => { const v = window.__gv.viewer.viewport; const c = v.getCenter(true);"
            " return [v.getZoom(true), c.x, c.y]; }"
        )
    )


def test_browse_a_volume_by_plane_and_slice(page: Page, volume_server: tuple[str, str]) -> None:
    base_url, image_id = volume_server
    tiles: list[tuple[int, str]] = []

    def on_response(response: Response) -> None:
        if "/dzi/" in response.url and "_files/" in response.url:
            tiles.append((response.status, response.url))

    page.on("response", on_response)
    page.goto(f"{base_url}/#/image/{image_id}")
    _shown(page, f"{image_id}:axial:12")
    expect(page.get_by_test_id("volume-panel")).to_be_visible()
    expect(page.get_by_test_id("plane-axial")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_test_id("slice-label")).to_have_text("Axial slice 13 of 24")

    # zoom in, then step with the keyboard: the next slice's tiles load, the view stays where it was
    page.evaluate(
        "() => { const v = window.__gv.viewer.viewport; v.zoomTo(v.getZoom() * 3, null, true);"
        " v.panBy({x: 0.05, y: 0.02}, true); }"
    )
    before = _zoom_and_centre(page)
    page.locator("body").press(".")
    _shown(page, f"{image_id}:axial:13")
    assert any(s == 200 and f"/dzi/{image_id}:axial:13_files/" in u for s, u in tiles), tiles
    assert _zoom_and_centre(page) == pytest.approx(before)
    assert page.evaluate("() => window.__gv.viewer.world.getItemCount()") == 1  # the previous slice is gone

    # the slider
    page.get_by_test_id("slice-slider").fill("3")
    _shown(page, f"{image_id}:axial:3")
    expect(page.get_by_test_id("slice-label")).to_have_text("Axial slice 4 of 24")
    assert any(s == 200 and f"/dzi/{image_id}:axial:3_files/" in u for s, u in tiles)

    # an annotation drawn on coronal slice 40 (stored with its plane and slice)
    body = {
        "annotations": [
            {
                "kind": "box",
                "label": "lesion",
                "bbox": [20, 30, 60, 70],
                "attributes": {"plane": "coronal", "slice": 40},
            }
        ],
        "actor": "ana",
    }
    request = urllib.request.Request(
        f"{base_url}/api/v1/images/{image_id}/annotations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # loopback only
        annotation_id = json.loads(response.read())["ids"][0]

    # the coronal plane: its own size (2.5 mm slices on 0.7 mm square pixels), its middle slice
    page.get_by_test_id("plane-coronal").click()
    _shown(page, f"{image_id}:coronal:48")
    size = page.evaluate(
        "() => { const s = window.__gv.viewer.world.getItemAt(0).getContentSize(); return [s.x, s.y]; }"
    )
    assert size == [SHAPE[2], CORONAL_ROWS]
    expect(page.get_by_test_id("slice-label")).to_have_text("Coronal slice 49 of 96")
    page.get_by_test_id("slice-slider").fill("40")
    _shown(page, f"{image_id}:coronal:40")
    assert any(s == 200 and f"/dzi/{image_id}:coronal:40_files/" in u for s, u in tiles)
    drawn = (
        f"() => window.__gv.overlay && window.__gv.overlay.settled() && {annotation_id} in window.__gv.overlay.drawn()"
    )
    page.wait_for_function(drawn)
    page.locator("body").press(".")  # coronal slice 41: not drawn there
    _shown(page, f"{image_id}:coronal:41")
    assert not page.evaluate(drawn)
    assert all(s == 200 for s, _ in tiles), [t for t in tiles if t[0] != 200]
