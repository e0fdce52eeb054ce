"""Every error leaves the server as ``{"error": {"code", "message"}}`` with the matching status."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from gigavision.errors import GigavisionError, InvalidInput

log = logging.getLogger("gigavision.server")
M = TypeVar("M", bound=BaseModel)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def validated(model: type[M], data: dict[str, Any]) -> M:
    """``data`` (a body read by hand: JSON or form fields) as ``model``; the first problem as an
    ``InvalidInput`` (400) naming the field, as FastAPI's own validation names it."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidInput(f"{where}: {first.get('msg')}") from exc


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GigavisionError)
    async def _gigavision(_req: Request, exc: GigavisionError) -> JSONResponse:
        return error_response(exc.http_status, exc.code, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "limit_exceeded"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "invalid_input", f"{where}: {first.get('msg')}")

    @app.exception_handler(Exception)
    async def _unexpected(req: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, ImportError):  # an extra's module imported on a path no require() guarded
            from gigavision.extras import from_import_error

            missing = from_import_error(exc, f"{req.method} {req.url.path}")
            if missing is not None:
                return error_response(missing.http_status, missing.code, str(missing))
        log.exception("unhandled error on %s %s", req.method, req.url.path)
        return error_response(500, "internal_error", f"internal error: {type(exc).__name__}")
