"""/docs in a real browser under the server's real CSP: Swagger UI loads from the app and lists every operation.

An asset from a CDN, an inline script without its hash, or an eval the page needs would leave it empty.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Request, Response, expect

pytestmark = pytest.mark.browser


def test_api_docs_render_under_the_csp(chromium_browser: Browser, gigavision_server: Any) -> None:
    base_url = str(gigavision_server.base_url)
    with urllib.request.urlopen(f"{base_url}/openapi.json", timeout=10) as resp:
        schema = json.load(resp)
    operations = sum(
        1 for ops in schema["paths"].values() for m in ops if m in ("get", "post", "put", "patch", "delete")
    )

    context = chromium_browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=False)
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems: list[str] = []
    host = urlsplit(base_url).netloc

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console error: {message.text}")

    def on_request(request: Request) -> None:
        if urlsplit(request.url).scheme in ("http", "https") and urlsplit(request.url).netloc != host:
            problems.append(f"request to another host: {request.url}")

    def on_response(response: Response) -> None:
        if response.status >= 400:
            problems.append(f"HTTP {response.status}: {response.url}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("request", on_request)
    page.on("response", on_response)
    try:
        page.goto(f"{base_url}/docs")
        expect(page.locator(".opblock")).to_have_count(operations)
        expect(page.locator(".info .title")).to_contain_text("gigavision")
    finally:
        context.close()
    assert problems == []
