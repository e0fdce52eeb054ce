"""The FastAPI app: a thin assembly of routers, middleware and the built web viewer."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from gigavision import __version__
from gigavision.server.errors import install_error_handlers
from gigavision.server.render import TileRenderer
from gigavision.server.routers import health, images, tiles
from gigavision.workspace import Workspace

STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
NOT_BUILT = (
    "<!doctype html><title>gigavision</title><p>The web viewer is not built. Run <code>make web</code> "
    "(or <code>make demo</code>), then reload. The API is at <a href='/docs'>/docs</a>.</p>"
)


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response


def create_app(workspace: Workspace) -> FastAPI:
    app = FastAPI(title="gigavision", version=__version__, docs_url="/docs", openapi_url="/openapi.json")
    app.state.workspace = workspace
    app.state.renderer = TileRenderer()
    install_error_handlers(app)
    app.add_middleware(SecurityHeaders)
    # IIIF and Deep Zoom are meant to be embedded by other viewers: tiles are public to any origin (GET only).
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "HEAD"], allow_headers=["*"])
    app.include_router(health.router)
    app.include_router(images.router)
    app.include_router(tiles.router)

    if (STATIC / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=STATIC / "assets"), name="assets")
    for extra in ("images",):  # OpenSeadragon's button images, when the build copies them
        if (STATIC / extra).is_dir():
            app.mount(f"/{extra}", StaticFiles(directory=STATIC / extra), name=extra)

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        page = STATIC / "index.html"
        if page.is_file():
            return FileResponse(page, media_type="text/html", headers={"Cache-Control": "no-cache"})
        return HTMLResponse(NOT_BUILT)

    return app
