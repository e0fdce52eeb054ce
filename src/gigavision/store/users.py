"""Accounts: users, roles and their permissions, web login sessions, API tokens, login rate limits.

A workspace without users is a single-user, loopback-only install (everything acts as the local operator).
Once a user exists, every request logs in: a password (argon2id, argon2-cffi's ``PasswordHasher``) opens a
server-side session (a random id in a cookie, stored as its sha256, expiry sliding with use, one CSRF token),
or an API token (a random secret shown once, stored as its sha256, with a role and an optional expiry) is
sent as ``Authorization: Bearer``. Random 256-bit secrets need no slow hash: sha256 makes a stolen database
useless for logging in, and costs nothing per request (argon2 would cost tens of ms on every tile).

Roles and their permissions are ``gigavision.store.roles`` (no database imports: the CLI's help reads them).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from gigavision.errors import Conflict, InvalidInput, NotFound, TooManyAttempts, Unauthorized
from gigavision.store.roles import ROLE_PERMISSIONS, Login, check_role
from gigavision.store.schema import ApiTokenRow, LoginAttemptRow, LoginSessionRow, UserRow, utcnow

#: Production hashing parameters are argon2-cffi's defaults (RFC 9106 low-memory profile); tests swap in a
#: cheaper hasher (``HASHER = PasswordHasher(time_cost=1, memory_cost=8192)``).
HASHER = PasswordHasher()
_DUMMY: dict[str, str] = {}  # a hash to verify unknown names against, so they cost as much as known ones


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_user_name(name: str) -> str:
    """User names are also QC annotator names and ``user:NAME`` sources: the same rule as those."""
    if not name or name != name.strip() or len(name) > 200 or any(ord(c) < 32 for c in name) or ":" in name:
        raise InvalidInput(
            f"user name must be 1 to 200 characters without surrounding spaces, control characters or ':', got {name!r}"
        )
    return name


def check_password(password: str) -> str:
    if not 8 <= len(password) <= 1024:
        raise InvalidInput("password must be 8 to 1024 characters")
    return password


def _aware(at: datetime) -> datetime:
    """SQLite gives naive datetimes back; every stored time is UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    disabled: bool
    created_at: datetime

    @classmethod
    def of(cls, row: UserRow) -> User:
        return cls(row.id, row.name, row.role, row.disabled, _aware(row.created_at))

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "disabled": self.disabled,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True)
class NewSession:
    secret: str  # the cookie value; only its sha256 is stored
    csrf: str
    expires_at: datetime
    user: User


@dataclass(frozen=True)
class Token:
    name: str
    user: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    revoked: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "user": self.user,
            "role": self.role,
            "created_at": self.created_at.isoformat(),
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
            "revoked": self.revoked,
        }


class Accounts:
    """Users, sessions and tokens of one workspace database (thread-safe: one short session per call)."""

    def __init__(self, session: sessionmaker[Session], clock: Callable[[], datetime] = utcnow) -> None:
        self.session = session
        self.clock = clock
        self._have_users = False  # once true, stays true: users are disabled, never deleted

    # -- users ---------------------------------------------------------------------------------------------
    def any_users(self) -> bool:
        """Whether the workspace has users (then every request must log in). Cheap: a cached True, else one
        indexed query, so a user added by the CLI while the server runs takes effect on the next request."""
        if not self._have_users:
            with self.session() as s:
                self._have_users = s.scalar(select(UserRow.id).limit(1)) is not None
        return self._have_users

    def add(self, name: str, role: str, password: str) -> User:
        check_user_name(name)
        check_role(role)
        check_password(password)
        digest = HASHER.hash(password)
        with self.session.begin() as s:
            if s.scalar(select(UserRow.id).where(UserRow.name == name)) is not None:
                raise Conflict(f"user {name!r} exists")
            row = UserRow(name=name, password_hash=digest, role=role, disabled=False, created_at=self.clock())
            s.add(row)
            s.flush()
            user = User.of(row)
        self._have_users = True
        return user

    def users(self) -> list[User]:
        with self.session() as s:
            return [User.of(r) for r in s.scalars(select(UserRow).order_by(UserRow.name))]

    def get(self, name: str) -> User:
        with self.session() as s:
            return User.of(self._row(s, name))

    def set_role(self, name: str, role: str) -> User:
        check_role(role)
        with self.session.begin() as s:
            row = self._row(s, name)
            row.role = role
            return User.of(row)

    def disable(self, name: str) -> User:
        """Disable a user: their sessions end now and their tokens stop working (rows kept for history)."""
        with self.session.begin() as s:
            row = self._row(s, name)
            row.disabled = True
            s.execute(delete(LoginSessionRow).where(LoginSessionRow.user_id == row.id))
            return User.of(row)

    def set_password(self, name: str, password: str) -> None:
        digest = HASHER.hash(check_password(password))
        with self.session.begin() as s:
            self._row(s, name).password_hash = digest

    # -- logins ----------------------------------------------------------------------------------------------
    def authenticate(self, name: str, password: str, address: str, limit_per_minute: int) -> User:
        """The user whose password this is; ``TooManyAttempts`` once ``limit_per_minute`` failures for this
        name or this address happened in the last minute, ``Unauthorized`` for a wrong name or password."""
        now = self.clock()
        since = now - timedelta(minutes=1)
        address = address[:64]
        with self.session.begin() as s:
            s.execute(delete(LoginAttemptRow).where(LoginAttemptRow.at < since))
            failures = [
                s.scalar(select(func.count()).select_from(LoginAttemptRow).where(where, LoginAttemptRow.at >= since))
                or 0
                for where in (LoginAttemptRow.user_name == name[:200], LoginAttemptRow.address == address)
            ]
            if max(failures) >= limit_per_minute:
                raise TooManyAttempts(
                    f"too many failed logins for this user or address: wait a minute "
                    f"(server.login_attempts_per_minute = {limit_per_minute})"
                )
            row = s.scalar(select(UserRow).where(UserRow.name == name))
        ok = self._verify(row.password_hash if row is not None else None, password)
        if row is None or not ok or row.disabled:
            with self.session.begin() as s:
                s.add(LoginAttemptRow(user_name=name[:200], address=address, at=now))
            raise Unauthorized("wrong user name or password")
        if HASHER.check_needs_rehash(row.password_hash):
            with self.session.begin() as s:
                self._row(s, name).password_hash = HASHER.hash(password)
        return User.of(row)

    @staticmethod
    def _verify(digest: str | None, password: str) -> bool:
        if digest is None:  # unknown name: spend the same time as a known one
            digest = _DUMMY.setdefault(repr(HASHER), HASHER.hash("not a password"))
        try:
            return bool(HASHER.verify(digest, password))
        except (VerificationError, InvalidHashError):
            return False

    def open_session(self, user: User, hours: float) -> NewSession:
        secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = self.clock()
        expires = now + timedelta(hours=hours)
        with self.session.begin() as s:
            s.execute(delete(LoginSessionRow).where(LoginSessionRow.expires_at < now))
            s.add(
                LoginSessionRow(id_hash=sha256(secret), user_id=user.id, csrf=csrf, created_at=now, expires_at=expires)
            )
        return NewSession(secret, csrf, expires, user)

    def session_login(self, secret: str, hours: float) -> Login | None:
        """The login of a session cookie, its expiry moved to ``hours`` from now; None when unknown, expired
        or its user disabled. The expiry is written at most once a minute (tiles come many per second)."""
        now = self.clock()
        with self.session() as s:
            found = s.execute(
                select(LoginSessionRow, UserRow)
                .join(UserRow, UserRow.id == LoginSessionRow.user_id)
                .where(LoginSessionRow.id_hash == sha256(secret))
            ).first()
            if found is None:
                return None
            sess, user = found
            if _aware(sess.expires_at) <= now or user.disabled:
                return None
            expires = now + timedelta(hours=hours)
            if expires - _aware(sess.expires_at) > timedelta(minutes=1):
                sess.expires_at = expires
                s.commit()
            return Login(user.name, user.role, ROLE_PERMISSIONS.get(user.role, frozenset()), "session", sess.csrf)

    def close_session(self, secret: str) -> None:
        with self.session.begin() as s:
            s.execute(delete(LoginSessionRow).where(LoginSessionRow.id_hash == sha256(secret)))

    # -- API tokens ------------------------------------------------------------------------------------------
    def add_token(
        self, user: str, name: str, role: str | None = None, expires_days: float | None = None
    ) -> tuple[str, Token]:
        """A new token for ``user`` (the secret is returned once, never stored); its role defaults to the
        user's and may not allow more than the user's."""
        if not name or len(name) > 200 or any(ord(c) < 32 for c in name):
            raise InvalidInput(f"token name must be 1 to 200 characters without control characters, got {name!r}")
        if expires_days is not None and expires_days <= 0:
            raise InvalidInput(f"--expires-days must be positive, got {expires_days}")
        secret = "gvt_" + secrets.token_urlsafe(32)
        now = self.clock()
        with self.session.begin() as s:
            owner = self._row(s, user)
            role = check_role(role or owner.role)
            if not ROLE_PERMISSIONS[role] <= ROLE_PERMISSIONS[owner.role]:
                raise InvalidInput(f"a token of {user} ({owner.role}) cannot have role {role}: it allows more")
            clash = select(ApiTokenRow.id).where(
                ApiTokenRow.user_id == owner.id, ApiTokenRow.name == name, ApiTokenRow.revoked.is_(False)
            )
            if s.scalar(clash) is not None:
                raise Conflict(f"{user} already has a token named {name!r}: revoke it first")
            expires = None if expires_days is None else now + timedelta(days=expires_days)
            row = ApiTokenRow(
                user_id=owner.id,
                name=name,
                secret_hash=sha256(secret),
                role=role,
                created_at=now,
                expires_at=expires,
                revoked=False,
            )
            s.add(row)
        return secret, Token(name, user, role, now, expires, False)

    def tokens(self, user: str | None = None) -> list[Token]:
        stmt = select(ApiTokenRow, UserRow.name).join(UserRow, UserRow.id == ApiTokenRow.user_id)
        if user is not None:
            stmt = stmt.where(UserRow.name == user)
        with self.session() as s:
            rows = s.execute(stmt.order_by(UserRow.name, ApiTokenRow.id)).all()
        return [
            Token(t.name, u, t.role, _aware(t.created_at), t.expires_at and _aware(t.expires_at), t.revoked)
            for t, u in rows
        ]

    def revoke_token(self, user: str, name: str) -> int:
        """Revoke ``user``'s live tokens named ``name``; returns how many."""
        with self.session.begin() as s:
            owner = self._row(s, user)
            rows = list(
                s.scalars(
                    select(ApiTokenRow).where(
                        ApiTokenRow.user_id == owner.id, ApiTokenRow.name == name, ApiTokenRow.revoked.is_(False)
                    )
                )
            )
            if not rows:
                raise NotFound(f"{user} has no live token named {name!r}")
            for row in rows:
                row.revoked = True
            return len(rows)

    def token_login(self, secret: str) -> Login | None:
        """The login of a bearer token: its role's permissions, never more than its user's role has now."""
        with self.session() as s:
            found = s.execute(
                select(ApiTokenRow, UserRow)
                .join(UserRow, UserRow.id == ApiTokenRow.user_id)
                .where(ApiTokenRow.secret_hash == sha256(secret))
            ).first()
        if found is None:
            return None
        token, user = found
        if token.revoked or user.disabled:
            return None
        if token.expires_at is not None and _aware(token.expires_at) <= self.clock():
            return None
        allowed = ROLE_PERMISSIONS.get(token.role, frozenset()) & ROLE_PERMISSIONS.get(user.role, frozenset())
        return Login(user.name, token.role, allowed, "token")

    @staticmethod
    def _row(s: Session, name: str) -> UserRow:
        row = s.scalar(select(UserRow).where(UserRow.name == name))
        if row is None:
            raise NotFound(f"no user named {name!r}")
        return row
