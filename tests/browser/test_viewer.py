"""The web viewer, end to end: list -> viewer -> deepest Deep Zoom level of a gigapixel image.

Runs Debian's chromium against a real `gigavision serve` with the server's real CSP
(no bypass), so an inline script, eval or a request to another host fails the test.
Synchronisation is by `wait_for_function` / `expect` only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response, expect

pytestmark = pytest.mark.browser

Image = dict[str, Any]


@dataclass
class PageLog:
    """What a page did that the tests forbid (or inspect)."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_responses: list[tuple[int, str]] = field(default_factory=list)
    off_host_requests: list[str] = field(default_factory=list)
    responses: list[tuple[int, str, str]] = field(default_factory=list)

    def problems(self) -> list[str]:
        return (
            [f"console error: {m}" for m in self.console_errors]
            + [f"page error: {m}" for m in self.page_errors]
            + [f"HTTP {s}: {u}" for s, u in self.failed_responses]
            + [f"request to another host: {u}" for u in self.off_host_requests]
        )


@pytest.fixture
def base_url(gigavision_server: Any) -> str:
    return str(gigavision_server.base_url)


@pytest.fixture
def gigapixel_image(gigavision_server: Any) -> Image:
    images: list[Image] = gigavision_server.images
    big = [i for i in images if i["width"] * i["height"] >= 1_000_000_000]
    assert big, f"no gigapixel image among {[i['name'] for i in images]}"
    return big[0]


@pytest.fixture
def html_named_image(gigavision_server: Any, html_image_name: str) -> Image:
    images: list[Image] = gigavision_server.images
    found = [i for i in images if i["name"] == html_image_name]
    if not found:
        pytest.skip("the served workspace has no image named with HTML")
    return found[0]


@pytest.fixture
def browser_page(chromium_browser: Browser, base_url: str) -> Iterator[tuple[Page, PageLog]]:
    """A fresh page under the server's real CSP (never bypassed), with everything it did logged."""
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=False)
    context.set_default_timeout(30_000)
    page = context.new_page()
    log = PageLog()
    allowed_host = urlsplit(base_url).netloc

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            log.console_errors.append(f"{message.text} ({message.location.get('url', '')})")

    def on_request(request: Request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc != allowed_host:
            log.off_host_requests.append(request.url)

    def on_response(response: Response) -> None:
        log.responses.append((response.status, response.url, response.headers.get("content-type", "")))
        if response.status >= 400:
            log.failed_responses.append((response.status, response.url))

    page.on("console", on_console)
    page.on("pageerror", lambda exc: log.page_errors.append(str(exc)))
    page.on("request", on_request)
    page.on("response", on_response)
    try:
        yield page, log
    finally:
        context.close()


# Playwright runs string predicates through eval() unless they are function
# expressions; the page's CSP forbids eval, so every predicate below is `() => ...`.
VIEWER_OPEN = """() => {
  const gv = window.__gv;
  if (!gv || gv.viewer.world.getItemCount() !== 1) return false;
  return gv.viewer.world.getItemAt(0).getFullyLoaded();
}"""

DEEPEST_LEVEL_DRAWN = """(maxLevel) => {
  const viewer = window.__gv.viewer;
  const item = viewer.world.getItemAt(0);
  const drawn = item.getTilesToDraw();
  return item.getFullyLoaded() && drawn.some((info) => info.level === maxLevel && info.tile.loaded);
}"""

ZOOM_ALL_THE_WAY_IN = """() => {
  const viewer = window.__gv.viewer;
  viewer.viewport.zoomTo(viewer.viewport.getMaxZoom(), null, true);
  viewer.viewport.applyConstraints(true);
}"""

VIEWER_STATE = """() => {
  const viewer = window.__gv.viewer;
  const item = viewer.world.getItemAt(0);
  return {
    sourceMaxLevel: item.source.maxLevel,
    imageZoom: item.viewportToImageZoom(viewer.viewport.getZoom(true)),
  };
}"""

# The scale bar, measured independently of scalebar.ts: µm per CSS pixel from the viewport's
# image zoom, bar length from the rendered box. Truthy once the bar matches the current zoom.
SCALEBAR_MATCHES_ZOOM = """(mpp) => {
  const viewer = window.__gv.viewer;
  const item = viewer.world.getItemAt(0);
  const box = document.querySelector('[data-testid="scalebar"]');
  if (!box || box.hidden) return false;
  const micrometres = Number(box.dataset.micrometres);
  const pixels = box.querySelector('.scalebar-bar').getBoundingClientRect().width;
  const umPerPixel = mpp / item.viewportToImageZoom(viewer.viewport.getZoom(true));
  const expected = pixels * umPerPixel;
  if (!(Math.abs(expected - micrometres) / micrometres < 0.03)) return false;
  return { micrometres, pixels, label: box.textContent };
}"""


def dzi_max_level(width: int, height: int) -> int:
    return math.ceil(math.log2(max(width, height)))


def size_text(width: int, height: int) -> str:
    return f"{width:,} × {height:,}"


def is_round(micrometres: float) -> bool:
    exponent = math.floor(math.log10(micrometres) + 1e-9)
    mantissa = micrometres / 10**exponent
    return any(math.isclose(mantissa, step, rel_tol=1e-6) for step in (1, 2, 5))


def open_from_list(page: Page, base_url: str, image: Image) -> None:
    page.goto(f"{base_url}/")
    card = page.locator(f'[data-testid="image-card"][data-image-id="{image["id"]}"]')
    expect(card).to_be_visible()
    card.click()
    expect(page).to_have_url(re.compile(rf"#/image/{image['id']}$"))
    expect(page.get_by_test_id("viewer")).to_be_visible()
    page.wait_for_function(VIEWER_OPEN)


def test_gigapixel_list_viewer_deepest_level(
    browser_page: tuple[Page, PageLog], base_url: str, gigapixel_image: Image
) -> None:
    page, log = browser_page
    image = gigapixel_image
    width, height, image_id = int(image["width"]), int(image["height"]), str(image["id"])
    max_level = dzi_max_level(width, height)

    # The list: a card with thumbnail, name, size (and mpp when known).
    page.goto(f"{base_url}/")
    card = page.locator(f'[data-testid="image-card"][data-image-id="{image_id}"]')
    expect(card).to_be_visible()
    expect(card.locator(".card-name")).to_have_text(str(image["name"]))
    expect(card).to_contain_text(size_text(width, height))
    if image["mpp_x"] is not None:
        expect(card).to_contain_text("µm/px")
    thumb = card.locator("img")
    thumb.scroll_into_view_if_needed()
    page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
    natural = thumb.evaluate("(img) => [img.naturalWidth, img.naturalHeight]")
    assert 0 < max(natural) <= 512, natural

    # The viewer.
    card.click()
    expect(page).to_have_url(re.compile(rf"#/image/{image_id}$"))
    viewer = page.get_by_test_id("viewer")
    expect(viewer).to_be_visible()
    expect(page.locator("header h1")).to_have_text(str(image["name"]))
    expect(page.get_by_test_id("image-size")).to_contain_text(size_text(width, height))
    page.wait_for_function(VIEWER_OPEN)
    state = page.evaluate(VIEWER_STATE)
    assert state["sourceMaxLevel"] == max_level, (state, width, height)

    # All the way in: tiles of the deepest DZI level are requested, answered 200 and drawn.
    deepest = f"/dzi/{image_id}_files/{max_level}/"
    with page.expect_response(lambda response: deepest in response.url):
        page.evaluate(ZOOM_ALL_THE_WAY_IN)
    page.wait_for_function(DEEPEST_LEVEL_DRAWN, arg=max_level)
    state = page.evaluate(VIEWER_STATE)
    assert state["imageZoom"] >= 1, state  # at least one screen pixel per image pixel

    deepest_responses = [(s, u, t) for s, u, t in log.responses if deepest in u]
    assert deepest_responses, "no tile of the deepest level was requested"
    assert all(s == 200 for s, _, _ in deepest_responses), deepest_responses
    assert all(t.startswith("image/jpeg") for _, _, t in deepest_responses), deepest_responses

    # The scale bar: a round length whose on-screen size matches the zoom.
    if image["mpp_x"] is not None:
        expect(page.get_by_test_id("scalebar")).to_be_visible()
        bar = page.wait_for_function(SCALEBAR_MATCHES_ZOOM, arg=float(image["mpp_x"])).json_value()
        assert is_round(bar["micrometres"]), bar
        assert 160 / 2.5 < bar["pixels"] <= 160.5, bar
        assert re.fullmatch(r"\d+ (nm|µm|mm|m)", bar["label"]), bar

        # Zooming out changes the bar with the view.
        page.evaluate("() => window.__gv.viewer.viewport.goHome(true)")
        home_bar = page.wait_for_function(SCALEBAR_MATCHES_ZOOM, arg=float(image["mpp_x"])).json_value()
        assert home_bar["micrometres"] > bar["micrometres"], (home_bar, bar)

    # Back to the list; the viewer is torn down.
    page.get_by_role("link", name="← Images").click()
    expect(page.locator(f'[data-testid="image-card"][data-image-id="{image_id}"]')).to_be_visible()
    assert page.evaluate("() => window.__gv === undefined")

    assert log.problems() == []


def test_image_name_is_text_not_html(
    browser_page: tuple[Page, PageLog], base_url: str, html_named_image: Image
) -> None:
    page, log = browser_page
    image = html_named_image
    name = str(image["name"])

    page.goto(f"{base_url}/")
    card = page.locator(f'[data-testid="image-card"][data-image-id="{image["id"]}"]')
    expect(card.locator(".card-name")).to_have_text(name)

    open_from_list(page, base_url, image)
    expect(page.locator("header h1")).to_have_text(name)
    if image["mpp_x"] is None:
        expect(page.get_by_test_id("scalebar")).to_have_count(0)

    assert page.evaluate("() => window.__xss") is None
    assert page.locator('img[src="x"]').count() == 0
    assert log.problems() == []


def test_unknown_image_shows_not_found(browser_page: tuple[Page, PageLog], base_url: str) -> None:
    page, log = browser_page
    missing = "0" * 64
    page.goto(f"{base_url}/#/image/{missing}")
    expect(page.get_by_role("alert")).to_contain_text("does not exist")
    expect(page.get_by_role("link", name="← Images")).to_be_visible()

    # Not an id at all: rejected in the page, no request made.
    page.goto(f"{base_url}/#/image/..%2F..%2Fetc%2Fpasswd")
    expect(page.get_by_role("alert")).to_contain_text("does not exist")

    # The only failure allowed is the 404 for the missing image (and its console line).
    assert [u for _, u in log.failed_responses] == [f"{base_url}/api/v1/images/{missing}"]
    assert all("404" in m for m in log.console_errors), log.console_errors
    assert log.page_errors == []
    assert log.off_host_requests == []
