"""Who a request is, and whether its role allows the route (docs/server.md, "Accounts and roles").

- Without users the workspace is a single-user install: every request acts as the local operator
  (``LOCAL_LOGIN``), and the app refuses to serve anything but loopback (``check_bind`` at start-up, and
  ``LoopbackOnly`` for each connection's local address, whatever ASGI server runs it).
- With users, a request logs in with the session cookie ``gv_session`` (from ``POST /api/v1/login``) or
  ``Authorization: Bearer <API token>``. A cookie-authenticated unsafe method must carry ``X-CSRF-Token``
  equal to its session's token (a foreign page cannot read it); bearer requests carry no ambient credential,
  so they need none.
- Every route declares what it needs with ``Allow("permission")`` (or ``Public()``), a dependency whose
  function carries the permission, so the tests can walk the routes and check each declaration. The
  permissions of each role are ``gigavision.store.roles.ROLE_PERMISSIONS``.

Logins are cached for ``CACHE_SECONDS`` per process (tiles come many per second): a disabled user, a changed
role or a revoked token takes effect within that time; a logout at once in the process that answered it.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.params import Depends as DependsParam
from starlette.types import ASGIApp, Receive, Scope, Send

from gigavision.errors import Forbidden, Unauthorized
from gigavision.server.boundary import is_loopback
from gigavision.server.errors import error_response
from gigavision.store.roles import LOCAL_LOGIN, PERMISSIONS, Login
from gigavision.store.users import Accounts, sha256

if TYPE_CHECKING:
    from gigavision.workspace import Workspace

log = logging.getLogger("gigavision.server")

COOKIE = "gv_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CACHE_SECONDS = 5.0
#: The pseudo-permission of routes anyone may call (health, login, the login page).
PUBLIC = "public"
LOOPBACK_ONLY = (
    "this workspace has no users, so gigavision serves loopback only (127.0.0.1, ::1); "
    "add an admin first (gigavision users add NAME --role admin) to serve {host}"
)


class LoginCache:
    """Recent session and token logins by the sha256 of their secret (None: known to be invalid)."""

    def __init__(self, seconds: float = CACHE_SECONDS, size: int = 4096) -> None:
        self.seconds, self.size = seconds, size
        self._entries: dict[str, tuple[float, Login | None]] = {}

    def get(self, key: str) -> tuple[bool, Login | None]:
        hit = self._entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def put(self, key: str, login: Login | None) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.seconds, login)

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)


class Auth:
    """The app's accounts and login cache (``app.state.auth``)."""

    def __init__(self, accounts: Accounts, session_hours: float, attempts_per_minute: int) -> None:
        self.accounts = accounts
        self.session_hours = session_hours
        self.attempts_per_minute = attempts_per_minute
        self.cache = LoginCache()
        self._local_until = 0.0  # no users seen until then (a user added meanwhile counts from then on)

    def has_users(self) -> bool:
        if self._local_until > time.monotonic():
            return False
        if self.accounts.any_users():
            return True
        self._local_until = time.monotonic() + 1.0
        return False

    def users_added(self) -> None:
        self._local_until = 0.0

    def resolve(self, request: Request) -> Login:
        """The request's login (``Unauthorized`` without a valid one; the CSRF check for cookie logins)."""
        if not self.has_users():
            return LOCAL_LOGIN
        header = request.headers.get("authorization", "")
        if header:
            scheme, _, secret = header.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                raise Unauthorized("Authorization: give 'Bearer <API token>'")
            login = self._cached(f"t:{sha256(secret.strip())}", lambda: self.accounts.token_login(secret.strip()))
            if login is None:
                raise Unauthorized("the API token is unknown, revoked or expired")
            return login
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            raise Unauthorized("log in first: POST /api/v1/login, or send an API token as Authorization: Bearer")
        login = self._cached(f"s:{sha256(cookie)}", lambda: self.accounts.session_login(cookie, self.session_hours))
        if login is None:
            raise Unauthorized("the login has expired or ended: log in again")
        if request.method not in SAFE_METHODS and not _same_token(request.headers.get(CSRF_HEADER), login.csrf):
            raise Forbidden(f"missing or wrong {CSRF_HEADER} header (the csrf value of /api/v1/login or /api/v1/me)")
        return login

    def _cached(self, key: str, lookup: Callable[[], Login | None]) -> Login | None:
        hit, login = self.cache.get(key)
        if not hit:
            login = lookup()
            self.cache.put(key, login)
        return login


def _same_token(sent: str | None, expected: str | None) -> bool:
    """Constant-time comparison of a CSRF header with the session's token (never equal when either is missing)."""
    return bool(sent and expected) and secrets.compare_digest(str(sent).encode(), str(expected).encode())


def get_auth(request: Request) -> Auth:
    auth: Auth = request.app.state.auth
    return auth


async def current_login(request: Request) -> Login:
    """The request's login, resolved once per request (async: no thread hop; the lookups are cached)."""
    login: Login | None = getattr(request.state, "login", None)
    if login is None:
        login = get_auth(request).resolve(request)
        request.state.login = login
    return login


_CHECKS: dict[str, Callable[[Request], Awaitable[Login]]] = {}


def _check(permission: str) -> Callable[[Request], Awaitable[Login]]:
    """One dependency function per permission (FastAPI runs a shared one once per request)."""
    if permission not in _CHECKS:
        if permission != PUBLIC and permission not in PERMISSIONS:
            raise ValueError(f"unknown permission {permission!r}; known: {', '.join(PERMISSIONS)}")

        async def check(request: Request) -> Login:
            # async: runs on the event loop (no thread hop per tile); the lookups are cached, short queries
            if permission == PUBLIC:
                return LOCAL_LOGIN
            login = await current_login(request)
            if not login.can(permission):
                raise Forbidden(f"{login.name} ({login.role}) may not: {PERMISSIONS[permission]}")
            return login

        check.permission = permission  # type: ignore[attr-defined]  # read by the route walker (tests)
        check.__name__ = f"allow_{permission.replace('.', '_')}"
        _CHECKS[permission] = check
    return _CHECKS[permission]


def Allow(permission: str) -> Any:
    """The route needs ``permission`` (``gigavision.store.roles.PERMISSIONS``); 401 without a login, 403
    when the login's role lacks it."""
    return Depends(_check(permission))


def Public() -> Any:
    """The route is open to anyone (health check, login)."""
    return Depends(_check(PUBLIC))


def declared_permission(dependency: Any) -> str | None:
    """The permission a route dependency declares (None: not a declaration)."""
    call = dependency.dependency if isinstance(dependency, DependsParam) else getattr(dependency, "call", None)
    return getattr(call, "permission", None)


LoginDep = Annotated[Login, Depends(current_login)]


def acting_as(login: Login, given: str | None) -> str:
    """Who a write is recorded as. Without users: the request's ``actor`` (the CLI's ``--as`` convention),
    else the local operator. With users: always the login; an ``actor`` field naming someone else is refused
    (403), so a script learns at once that it cannot act for others."""
    if login.via == "local":
        return given or login.name
    if given not in (None, "", "anonymous", login.name):
        raise Forbidden(f"actor {given!r}: a login acts only as itself ({login.name})")
    return login.name


# -- start-up: no users, loopback only --------------------------------------------------------------------


def bound_host() -> str | None:
    """The host the running uvicorn server binds, read from its lifespan task (None: not uvicorn, or a
    socket passed by file descriptor; ``LoopbackOnly`` then checks each connection)."""
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        config = getattr(owner, "config", None)
        host = getattr(config, "host", None)
        if type(owner).__module__.startswith("uvicorn.") and host is not None:
            if getattr(config, "uds", None) or getattr(config, "fd", None) is not None:
                return None
            return str(host)
        frame = frame.f_back  # type: ignore[assignment]
    return None


def loopback_refusal(host: str, has_users: bool) -> str | None:
    """Why ``host`` may not be served (None when it may): the one rule, without users loopback only."""
    return None if has_users or is_loopback(host) else LOOPBACK_ONLY.format(host=host)


def check_bind(auth: Auth) -> None:
    """Refuse to start on a non-loopback address without users (uvicorn exits non-zero on this error)."""
    host = bound_host()
    message = None if host is None else loopback_refusal(host, auth.has_users())
    if message is not None:
        log.error(message)
        raise RuntimeError(message)


def _is_remote(address: str) -> bool:
    """A local socket address that is an IP address and not loopback (names, like TestClient's, are not)."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return not is_loopback(address)


class LoopbackOnly:
    """Without users, a connection that reached a non-loopback local address is refused (503): the second
    guard, for ASGI servers whose bind address ``check_bind`` could not read."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app, self.auth = app, auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            server = scope.get("server")
            if server and _is_remote(str(server[0])) and not self.auth.has_users():
                message = LOOPBACK_ONLY.format(host=server[0])
                await error_response(503, "loopback_only", message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install_auth(app: FastAPI, workspace: Workspace) -> None:
    """Accounts on ``app``: the login routes, ``app.state.auth``, the loopback guards (start-up and per
    connection)."""
    from gigavision.server.routers import auth as auth_routes
    from gigavision.store.users import Accounts

    settings = workspace.settings.server
    auth = Auth(Accounts(workspace.session), settings.session_hours, settings.login_attempts_per_minute)
    app.state.auth = auth
    app.include_router(auth_routes.router)
    app.add_middleware(LoopbackOnly, auth=auth)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
        check_bind(auth)  # before the app starts its job threads
        async with inner(app) as state:
            yield state

    app.router.lifespan_context = lifespan
