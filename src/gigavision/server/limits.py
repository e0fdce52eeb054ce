"""Every request body bounded before it is parsed: a pure ASGI middleware in front of the routers.

A declared ``Content-Length`` over the route's limit is answered 413 before a byte of the body is read; a body
without one (chunked transfer) is counted while it streams and cut with 413 once it passes the limit, so no
parser, spool or ``await request.body()`` ever sees more. The limit is ``limits.max_upload_bytes`` (plus a little
room for the multipart framing and text fields) on routes that take a file upload, ``limits.max_request_bytes``
everywhere else. Upload routes are registered in ``UPLOAD_ROUTES`` by ``uploads.multipart_body``, the same call
that writes their OpenAPI body (marked ``x-body-limit``), so the schema and this middleware cannot disagree.

Not Starlette's ``RequestBodyLimitMiddleware``: its limits are fixed when routes are declared (at import, before
a workspace's settings are known), it checks a declared length only once the app first reads, and its 413 is
plain text that does not name the setting. Not ``BaseHTTPMiddleware``: the tile routes pay only a header lookup
and a wrapped ``receive``. Finding upload routes by walking the app's routes cost 0.2-0.9 s on FastAPI 0.165
(its included-router contexts), so they are registered instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gigavision.config import Limits
from gigavision.errors import LimitExceeded

UPLOAD_MARK = "x-body-limit"  # OpenAPI extension on upload routes: the setting their body is held to
UPLOAD_ROUTES: set[tuple[str, str]] = set()  # (method, exact path) of every route that takes a file upload
UPLOAD_LIMIT = "limits.max_upload_bytes"
REQUEST_LIMIT = "limits.max_request_bytes"
# Multipart framing, part headers and the small text fields next to the file (uploads.MAX_TEXT_BYTES).
UPLOAD_SLACK = 1024 * 1024


class BodyTooLarge(LimitExceeded):
    """The request body passed its limit while it was being received."""


def over_limit_message(size: int | None, limit: int, setting: str) -> str:
    what = f"request body of {size:,} bytes" if size is not None else "request body"
    return f"{what} is larger than {setting} ({limit:,} bytes)"


def _error(message: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = json.dumps({"error": {"code": LimitExceeded.code, "message": message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),  # the unread rest of the body is not worth keeping the connection for
    ]
    return headers, body


class BodyLimit:
    """Caps every HTTP request body by its route's limit (see the module docstring).

    ``limits`` returns the settings to apply (default: the app's workspace settings, read per request so a
    changed limit applies at once); ``upload_routes`` the (method, path) pairs held to ``max_upload_bytes``
    (default: ``UPLOAD_ROUTES``).
    """

    def __init__(
        self,
        app: ASGIApp,
        limits: Callable[[], Limits] | None = None,
        upload_routes: set[tuple[str, str]] | None = None,
    ) -> None:
        self.app = app
        self._limits = limits
        self._uploads = UPLOAD_ROUTES if upload_routes is None else upload_routes

    def limit_for(self, scope: Scope) -> tuple[int, str]:
        """The byte limit of this request's body and the setting that sets it."""
        limits: Limits = self._limits() if self._limits else scope["app"].state.workspace.settings.limits
        if (scope["method"], scope["path"]) in self._uploads:
            return limits.max_upload_bytes + UPLOAD_SLACK, UPLOAD_LIMIT
        return limits.max_request_bytes, REQUEST_LIMIT

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope)
        shown = limit - UPLOAD_SLACK if setting == UPLOAD_LIMIT else limit  # name the setting's own value
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, over_limit_message(declared, shown, setting))
            return

        received = 0
        over = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, over
            if over:  # the app asked again after the cut: nothing more is read
                raise BodyTooLarge(over_limit_message(None, shown, setting))
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = True
                    raise BodyTooLarge(over_limit_message(None, shown, setting))
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # whatever the app answers to the cut body (a 400 from a parser, a 500): 413 below instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:  # BodyTooLarge, or what the app made of it (a parser's error, a wrapped exception)
            if not over or started:
                raise
        if over and not started:
            await _refuse(send, over_limit_message(None, shown, setting))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


async def _refuse(send: Send, message: str) -> None:
    headers, body = _error(message)
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
