"""Dependencies shared by the routers: the workspace and tile renderer live on ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gigavision.server.render import TileRenderer
from gigavision.workspace import Workspace


def get_workspace(request: Request) -> Workspace:
    ws: Workspace = request.app.state.workspace
    return ws


def get_renderer(request: Request) -> TileRenderer:
    renderer: TileRenderer = request.app.state.renderer
    return renderer


WorkspaceDep = Annotated[Workspace, Depends(get_workspace)]
RendererDep = Annotated[TileRenderer, Depends(get_renderer)]
