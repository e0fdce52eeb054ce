from __future__ import annotations

from fastapi import APIRouter

from gigavision import __version__
from gigavision.server.auth import Public

router = APIRouter(tags=["health"])


@router.get("/healthz", dependencies=[Public()])
def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}
