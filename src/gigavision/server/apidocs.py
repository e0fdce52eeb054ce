"""``/docs``: Swagger UI from the app's own files, under the app's own CSP.

FastAPI's default page loads Swagger UI from a CDN and starts it with an inline script; the app's CSP
(``default-src 'self'; script-src 'self'``) blocks both. Here the page comes from FastAPI's
``get_swagger_ui_html`` with local asset URLs (``make web`` copies them from the ``swagger-ui-dist`` npm
package into ``static/docs/``), and this one route's CSP allows exactly its inline script by hash. ReDoc is not
served (it would need another bundle).
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from gigavision.server.auth import Public

ASSETS = Path(__file__).parent / "static" / "docs"
ASSET_URL = "/docs/static"
REQUIRED = ("swagger-ui-bundle.js", "swagger-ui.css")
NOT_BUILT = (
    "<!doctype html><title>gigavision API</title><p>The API docs page is not built: run <code>make web</code> "
    "(it copies Swagger UI into the app), then reload. The OpenAPI schema is at "
    "<a href='/openapi.json'>/openapi.json</a>.</p>"
)


def script_hashes(html: bytes) -> list[str]:
    """CSP source expressions (``'sha256-…'``) for each inline ``<script>`` of ``html``."""
    inline = re.findall(rb"<script>(.*?)</script>", html, flags=re.S)
    return [f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'" for body in inline]


def install_api_docs(app: FastAPI, csp: str, assets: Path | None = None) -> None:
    """Serve ``GET /docs`` and its assets under ``/docs/static``. ``csp``: the app's policy, whose
    ``script-src 'self'`` this page extends with its inline script's hash (nothing else changes)."""
    folder = assets if assets is not None else ASSETS
    page = get_swagger_ui_html(
        openapi_url=app.openapi_url or "/openapi.json",
        title=f"{app.title} API",
        swagger_js_url=f"{ASSET_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSET_URL}/swagger-ui.css",
        swagger_favicon_url=f"{ASSET_URL}/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None},  # the badge would call validator.swagger.io
    ).body
    page_csp = csp.replace("script-src 'self'", " ".join(["script-src 'self'", *script_hashes(bytes(page))]), 1)
    if page_csp == csp:
        raise RuntimeError("the app's CSP has no script-src 'self' to extend for /docs")
    headers = {"Content-Security-Policy": page_csp, "Cache-Control": "no-cache"}

    # check_dir=False: the folder may appear later (`make web` while the server runs), as for the viewer.
    app.mount(ASSET_URL, StaticFiles(directory=folder, check_dir=False), name="docs-assets")

    @app.get("/docs", include_in_schema=False, dependencies=[Public()])  # the page; its API calls need logins
    def docs() -> HTMLResponse:
        if all((folder / name).is_file() for name in REQUIRED):
            return HTMLResponse(page, headers=headers)
        return HTMLResponse(NOT_BUILT, headers={"Cache-Control": "no-cache"})
