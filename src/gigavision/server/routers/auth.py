"""``/api/v1/login``, ``/api/v1/logout``, ``/api/v1/me`` and the login page ``/login``.

``POST /api/v1/login`` takes ``{"name", "password"}`` as JSON or as a form, sets the session cookie
``gv_session`` (HttpOnly, SameSite=Lax, Secure over HTTPS) and answers who logged in with the session's CSRF
token, which cookie-authenticated unsafe requests send back as ``X-CSRF-Token``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, ValidationError

from gigavision.errors import InvalidInput
from gigavision.server.auth import COOKIE, Allow, LoginDep, Public, get_auth
from gigavision.store.roles import PERMISSIONS, ROLE_PERMISSIONS, Login
from gigavision.store.users import sha256

router = APIRouter(tags=["accounts"])

MAX_LOGIN_BODY = 8192
# The viewer's own page shows the login form at /login (web/src/login.ts): one build, one CSP, no inline script.
LOGIN_PAGE = Path(__file__).resolve().parent.parent / "static" / "index.html"
NO_LOGIN_PAGE = (
    "<!doctype html><title>gigavision: log in</title><p>The login page is not built. Run <code>make web</code>, "
    "or log in with <code>POST /api/v1/login</code>.</p>"
)


class Credentials(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024)


class Me(BaseModel):
    name: str
    role: str
    permissions: list[str] = Field(description="what this login may do (docs/server.md, Accounts and roles)")
    via: str = Field(description="session | token | local (a workspace without users)")
    csrf: str | None = Field(description="send as X-CSRF-Token on unsafe requests (session logins)")
    users: bool = Field(description="whether the workspace has users (false: single-user, loopback only)")


def _me(login: Login, users: bool) -> Me:
    return Me(
        name=login.name,
        role=login.role,
        permissions=[p for p in PERMISSIONS if login.can(p)],
        via=login.via,
        csrf=login.csrf,
        users=users,
    )


async def _credentials(request: Request) -> Credentials:
    body = await request.body()
    if len(body) > MAX_LOGIN_BODY:
        raise InvalidInput(f"login body over {MAX_LOGIN_BODY} bytes")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind == "application/json":
            data: Any = json.loads(body or b"null")
        elif kind == "application/x-www-form-urlencoded":
            form = await request.form()
            data = {k: v for k, v in form.items() if isinstance(v, str)}
        else:
            raise InvalidInput(
                "send the login as JSON {name, password} or as a form (application/x-www-form-urlencoded)"
            )
        return Credentials.model_validate(data)
    except (ValueError, ValidationError) as exc:
        raise InvalidInput("login: give name and password (1 to 200 and 1 to 1024 characters)") from exc


@router.post(
    "/api/v1/login",
    dependencies=[Public()],
    response_model=Me,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": Credentials.model_json_schema()},
                "application/x-www-form-urlencoded": {"schema": Credentials.model_json_schema()},
            },
        }
    },
    responses={401: {"description": "wrong name or password"}, 429: {"description": "too many failed logins"}},
)
async def login(request: Request) -> JSONResponse:
    """Log in with name and password: sets the ``gv_session`` cookie; answers the login and its CSRF token."""
    auth = get_auth(request)
    creds = await _credentials(request)
    address = request.client.host if request.client else "unknown"
    user = await run_in_threadpool(
        auth.accounts.authenticate, creds.name, creds.password, address, auth.attempts_per_minute
    )
    session = await run_in_threadpool(auth.accounts.open_session, user, auth.session_hours)
    auth.users_added()
    login = Login(user.name, user.role, ROLE_PERMISSIONS.get(user.role, frozenset()), "session", session.csrf)
    response = JSONResponse(_me(login, True).model_dump())
    response.set_cookie(
        COOKIE,
        session.secret,  # no max_age: a browser-session cookie; the server ends it session_hours after last use
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/api/v1/logout", status_code=204, dependencies=[Public()])
async def logout(request: Request) -> Response:
    """End this session (its cookie stops working everywhere at once) and clear the cookie."""
    auth = get_auth(request)
    cookie = request.cookies.get(COOKIE)
    if cookie and auth.has_users():
        auth.resolve(request)  # a cookie logout is an unsafe request: it needs the CSRF token too
        await run_in_threadpool(auth.accounts.close_session, cookie)
        auth.cache.forget(f"s:{sha256(cookie)}")
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax", secure=request.url.scheme == "https")
    return response


@router.get("/api/v1/me", response_model=Me, dependencies=[Allow("view")])
def me(request: Request, login: LoginDep) -> Me:
    """Who this request is logged in as, what it may do, and the session's CSRF token (401 without a login)."""
    return _me(login, get_auth(request).has_users())


@router.get("/login", include_in_schema=False, dependencies=[Public()])
def login_page() -> Response:
    """The login form: the built viewer's page, which shows it at this path (no inline script, the app's CSP)."""
    if LOGIN_PAGE.is_file():
        return FileResponse(LOGIN_PAGE, media_type="text/html", headers={"Cache-Control": "no-cache"})
    return HTMLResponse(NO_LOGIN_PAGE)
