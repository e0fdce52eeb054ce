"""The FastAPI app: a thin assembly of routers, middleware and the built web viewer."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Response
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gigavision import __version__
from gigavision.server.apidocs import install_api_docs
from gigavision.server.auth import Public, install_auth
from gigavision.server.boundary import AccessBoundary, BoundaryPolicy
from gigavision.server.errors import install_error_handlers
from gigavision.server.limits import BodyLimit
from gigavision.server.render import TileRenderer
from gigavision.server.routers import active as active_routes
from gigavision.server.routers import annotations as annotation_routes
from gigavision.server.routers import datasets as dataset_routes
from gigavision.server.routers import deploy as deploy_routes
from gigavision.server.routers import health, images, jobs, labels, layers, tiles
from gigavision.server.routers import label_errors as label_error_routes
from gigavision.server.routers import manifests as manifest_routes
from gigavision.server.routers import models as model_routes
from gigavision.server.routers import predict as predict_routes
from gigavision.server.routers import quality as quality_routes
from gigavision.server.routers import reviews as review_routes
from gigavision.server.routers import search as search_routes
from gigavision.server.routers import transfer as transfer_routes
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


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", CSP.encode()),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """Adds the security headers to every response. Pure ASGI: ``BaseHTTPMiddleware`` cost ~27% of a
    tile request's CPU in the tile benchmark."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((n, v) for n, v in SECURITY_HEADERS if n not in present),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(workspace: Workspace) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The embedded job consumer: threads of this process run queued jobs (exports, imports, ...),
        # unless ``job_workers = 0`` leaves them to separate ``gigavision worker`` processes.
        workers = workspace.settings.job_workers
        consumer = workspace.jobs.start_consumer(workers) if workers else None
        try:
            yield
        finally:
            if consumer is not None:
                consumer.stop(graceful=True)

    # /docs is served by install_api_docs (self-hosted Swagger UI under the CSP); no ReDoc (a CDN bundle).
    app = FastAPI(
        title="gigavision",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.workspace = workspace
    app.state.renderer = TileRenderer()
    install_error_handlers(app)
    # Middleware added last runs first. The access boundary (Host, Origin, CORS for tiles only) comes before
    # anything that reads a body or touches the workspace, so a refused request costs a header scan; only
    # SecurityHeaders wraps it, so refusals carry nosniff and the CSP too. A bad [server] entry fails here.
    app.add_middleware(BodyLimit)  # innermost: bodies are counted (413) before any router or parser reads them
    app.add_middleware(AccessBoundary, policy=BoundaryPolicy.from_settings(workspace.settings.server))
    app.add_middleware(SecurityHeaders)
    install_auth(app, workspace)  # logins and roles; without users: loopback only, whatever the launcher
    app.include_router(health.router)
    app.include_router(images.router)
    app.include_router(tiles.router)
    app.include_router(manifest_routes.router)
    app.include_router(layers.router)
    app.include_router(annotation_routes.router)
    app.include_router(jobs.router)
    app.include_router(labels.router)
    app.include_router(dataset_routes.router)
    app.include_router(quality_routes.router)
    app.include_router(transfer_routes.router)
    app.include_router(model_routes.router)
    app.include_router(predict_routes.router)
    app.include_router(review_routes.router)
    app.include_router(active_routes.router)
    app.include_router(label_error_routes.router)
    app.include_router(deploy_routes.router)
    app.include_router(search_routes.router)

    install_api_docs(app, CSP)
    if (STATIC / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=STATIC / "assets"), name="assets")

    # The viewer's page holds no data: its first API call answers 401 and sends the browser to /login.
    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False, dependencies=[Public()])
    def index() -> Response:
        page = STATIC / "index.html"
        if page.is_file():
            return FileResponse(page, media_type="text/html", headers={"Cache-Control": "no-cache"})
        return HTMLResponse(NOT_BUILT)

    return app


def app_from_environment() -> FastAPI:
    """App factory for ``uvicorn --factory`` / several workers: the workspace comes from the environment."""
    from gigavision.workspace import open_workspace

    return create_app(open_workspace(os.environ["GIGAVISION_WORKSPACE"]))
