"""Engines and sessions for SQLite (embedded, WAL + synchronous=FULL) and PostgreSQL, migrated on open."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from gigavision.errors import ConfigError, InvalidInput
from gigavision.files import syncing

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit survives a power cut; OFF with GIGAVISION_FSYNC=0 (throwaway workspaces, files.py)
    cur.execute("PRAGMA synchronous=FULL" if syncing() else "PRAGMA synchronous=OFF")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _out_of_range(context: ExceptionContext) -> BaseException | None:
    """A value the database cannot hold came from the caller (an id or offset past 2**63: nothing gigavision
    makes reaches it; text with a NUL byte): ``InvalidInput`` (400), decided here once for every route and
    command instead of a 500. SQLite's driver refuses such an int while binding it (OverflowError);
    PostgreSQL answers SQLSTATE 22003 (out of range), and psycopg refuses NUL in text before sending it
    (a DataError, like every SQLSTATE class 22 "data exception")."""
    orig = context.original_exception
    if isinstance(orig, OverflowError) or getattr(orig, "sqlstate", None) == "22003":
        return InvalidInput(f"a number is out of the range the database can store ({orig})")
    if isinstance(context.sqlalchemy_exception, DataError):
        return InvalidInput(f"a value the database cannot store ({orig})")
    return None


def make_engine(url: str) -> Engine:
    """An engine for ``url``; only SQLite and PostgreSQL (psycopg 3) are supported."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    elif url.startswith("postgresql"):
        from gigavision.extras import require

        require("postgres", feature="db_url = postgresql://…")
        if url.startswith(("postgresql://", "postgresql+psycopg2://")):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        engine = create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)
    else:
        raise ConfigError(f"db_url {url!r}: unsupported database; use sqlite:///PATH or postgresql+psycopg://...")
    event.listen(engine, "handle_error", _out_of_range)
    return engine


def _script_heads() -> set[str] | None:
    """The head revisions of the migration scripts, read from their ``revision``/``down_revision`` lines
    without importing Alembic (a quarter second at every CLI start); None when a script cannot be read so."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        script = path.read_text(encoding="utf-8")
        rev = re.search(r"^revision\s*(?::[^=]*)?=\s*[\"']([^\"']+)[\"']", script, re.MULTILINE)
        down = re.search(r"^down_revision\s*(?::[^=]*)?=(.*)$", script, re.MULTILINE)
        if rev is None or down is None:
            return None
        revisions.add(rev.group(1))
        parents.update(re.findall(r"[\"']([^\"']+)[\"']", down.group(1)))
    return (revisions - parents) or None


def _at_heads(engine: Engine) -> bool:
    """Whether the database is already at the scripts' heads (then opening a workspace needs no Alembic)."""
    heads = _script_heads()
    if heads is None:
        return False
    try:
        with engine.connect() as conn:
            current = {str(v) for v in conn.execute(text("SELECT version_num FROM alembic_version")).scalars()}
    except DBAPIError:  # no alembic_version table yet: a new database
        return False
    return current == heads


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent; Alembic is loaded only when behind)."""
    if _at_heads(engine):
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "heads")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
