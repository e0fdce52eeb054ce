"""Accounts (issue 13): the users CLI, logins, sessions, CSRF, API tokens, rate limits, loopback refusal."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import delete, update

import gigavision as gv
from gigavision.cli.main import main
from gigavision.errors import GigavisionError, TooManyAttempts, Unauthorized
from gigavision.jobs import registry
from gigavision.server.auth import Auth, LoopbackOnly
from gigavision.server.main import create_app
from gigavision.store import users as users_module
from gigavision.store.schema import ApiTokenRow, LoginAttemptRow, LoginSessionRow, UserRow
from gigavision.store.users import Accounts, sha256
from tests import aio

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def _cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2-cffi's defaults take ~50 ms a hash by design; the tests need the behaviour, not the cost."""
    monkeypatch.setattr(users_module, "HASHER", PasswordHasher(time_cost=1, memory_cost=8192))


@pytest.fixture
def ws_path(tmp_path: Path) -> Iterator[Path]:
    gv.init_workspace(tmp_path / "ws").close()
    yield tmp_path / "ws"


def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = ""
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_users_cli_round_trip(
    ws_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    w = ["-w", str(ws_path)]
    code, _, err = cli(
        monkeypatch, capsys, *w, "users", "add", "ada", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert code == 0, err
    assert "ada added (admin)" in err
    code, _, err = cli(
        monkeypatch, capsys, *w, "users", "add", "bo", "--role", "annotator", "--password-stdin", stdin=PASSWORD + "\n"
    )
    assert code == 0, err
    # a second user of the same name: one line, exit 2 (the other refusals: test_refusals)
    code, _, err = cli(
        monkeypatch, capsys, *w, "users", "add", "bo", "--role", "viewer", "--password-stdin", stdin=PASSWORD
    )
    assert (code, err.strip()) == (2, "error: user 'bo' exists")
    assert cli(monkeypatch, capsys, *w, "users", "set-role", "bo", "reviewer")[0] == 0
    code, secret, err = cli(
        monkeypatch, capsys, *w, "users", "token", "bo", "--name", "script", "--role", "viewer", "--expires-days", "2"
    )
    assert code == 0 and secret.strip().startswith("gvt_") and "shown once" in err
    assert cli(monkeypatch, capsys, *w, "users", "disable", "bo")[0] == 0

    assert cli(monkeypatch, capsys, *w, "users", "revoke-token", "bo", "--name", "script")[0] == 0
    code, out, _ = cli(monkeypatch, capsys, *w, "users", "list", "--json")
    listed = {u["name"]: u for u in json.loads(out)["users"]}
    assert listed["ada"]["role"] == "admin" and not listed["ada"]["disabled"]
    assert listed["bo"]["role"] == "reviewer" and listed["bo"]["disabled"]
    assert [(t["name"], t["role"], t["revoked"]) for t in listed["bo"]["tokens"]] == [("script", "viewer", True)]
    assert "secret" not in out and secret.strip() not in out  # the secret is never shown again

    # the password is stored as an argon2id hash, never as given
    with gv.open_workspace(ws_path) as ws:
        from gigavision.store.schema import UserRow

        with ws.session() as s:
            digest = s.query(UserRow).filter_by(name="ada").one().password_hash
    assert digest.startswith("$argon2id$") and PASSWORD not in digest


def test_init_makes_the_first_admin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(
        monkeypatch, capsys, "init", str(tmp_path / "a"), "--admin", "root", "--password-stdin", stdin="x"
    )
    assert code == 2 and "8 to 1024 characters" in err and not (tmp_path / "a").exists()
    code, _, err = cli(
        monkeypatch, capsys, "init", str(tmp_path / "b"), "--admin", "root", "--password-stdin", stdin=PASSWORD
    )
    assert code == 0, err
    with gv.open_workspace(tmp_path / "b") as ws:
        assert [(u.name, u.role) for u in Accounts(ws.session).users()] == [("root", "admin")]


def test_refusals(ws_path: Path) -> None:
    with gv.open_workspace(ws_path) as ws:
        accounts = Accounts(ws.session)
        accounts.add("bo", "reviewer", PASSWORD)
        for call, message in (
            (lambda: accounts.add("cy", "boss", PASSWORD), "role 'boss': unknown; known: admin, manager, reviewer"),
            (lambda: accounts.add("cy", "viewer", "short"), "8 to 1024 characters"),
            (lambda: accounts.add("a:b", "viewer", PASSWORD), "without surrounding spaces, control characters or ':'"),
            (lambda: accounts.add_token("bo", "x", role="manager"), "cannot have role manager: it allows more"),
            (lambda: accounts.add_token("bo", "x", expires_days=0), "must be positive"),
            (lambda: accounts.revoke_token("bo", "none"), "no live token named 'none'"),
            (lambda: accounts.set_role("nobody", "viewer"), "no user named 'nobody'"),
        ):
            with pytest.raises(GigavisionError, match=re.escape(message)):
                call()
        accounts.add_token("bo", "x")
        with pytest.raises(GigavisionError, match="already has a token named 'x'"):
            accounts.add_token("bo", "x")


# -- the server ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Accounts]]:
    """One app for the server tests (a workspace costs a second to make): an admin and a viewer; logins are
    not cached, so revocations show at once."""
    mp = pytest.MonkeyPatch()
    mp.setattr(users_module, "HASHER", PasswordHasher(time_cost=1, memory_cost=8192))
    ws = gv.init_workspace(tmp_path_factory.mktemp("accounts") / "site")
    app = create_app(ws)
    auth = app.state.auth
    auth.cache.seconds = 0
    auth.accounts.add("ada", "admin", PASSWORD)
    auth.accounts.add("vic", "viewer", PASSWORD)
    with TestClient(app) as client:
        yield client, auth.accounts
    ws.close()
    mp.undo()


@pytest.fixture
def site(shared_site: tuple[TestClient, Accounts]) -> tuple[TestClient, Accounts]:
    """The shared app as new: no sessions, tokens or failed attempts, everyone enabled, the real clock."""
    client, accounts = shared_site
    with accounts.session.begin() as s:
        for table in (LoginAttemptRow, LoginSessionRow, ApiTokenRow):
            s.execute(delete(table))
        s.execute(update(UserRow).values(disabled=False))
    accounts.clock = lambda: datetime.now(UTC)
    client.cookies.clear()
    return client, accounts


def log_in(client: TestClient, name: str, password: str = PASSWORD) -> dict[str, Any]:
    r = client.post("/api/v1/login", json={"name": name, "password": password})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_login_me_logout(site: tuple[TestClient, Accounts]) -> None:
    client, _ = site
    r = client.get("/api/v1/me")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    me = log_in(client, "ada")
    assert (me["name"], me["role"], me["via"], me["users"]) == ("ada", "admin", "session", True)
    assert "users" in me["permissions"] and len(me["csrf"]) >= 32
    cookie = client.cookies.get("gv_session")
    assert cookie and cookie != me["csrf"]
    set_cookie = client.post("/api/v1/login", json={"name": "ada", "password": PASSWORD}).headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=lax" in set_cookie and "Secure" not in set_cookie  # http here
    me = client.get("/api/v1/me").json()
    assert me["name"] == "ada"
    # a form login works too (the login page posts one when scripts are off)
    form = client.post("/api/v1/login", data={"name": "vic", "password": PASSWORD})
    assert form.status_code == 200 and form.json()["role"] == "viewer"
    assert "annotations.write" not in form.json()["permissions"]
    # logout needs the CSRF token (it is an unsafe request with a cookie), then ends the session everywhere
    csrf = form.json()["csrf"]
    assert client.post("/api/v1/logout").status_code == 403
    old = client.cookies.get("gv_session")
    assert client.post("/api/v1/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert client.get("/api/v1/me").status_code == 401
    client.cookies.set("gv_session", old)
    assert client.get("/api/v1/me").status_code == 401  # the old cookie is dead


def test_wrong_password_and_rate_limit(site: tuple[TestClient, Accounts]) -> None:
    client, _ = site
    wrong = client.post("/api/v1/login", json={"name": "ada", "password": "not the password"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "wrong user name or password"
    unknown = client.post("/api/v1/login", json={"name": "nobody", "password": "whatever1"})
    assert unknown.status_code == 401 and unknown.json() == wrong.json()  # no hint which part was wrong
    bad = client.post("/api/v1/login", content=b"name=ada", headers={"content-type": "text/plain"})
    assert bad.status_code == 400
    # the limit (10 a minute by default): the 11th try is refused even with the right password
    for _ in range(8):
        assert client.post("/api/v1/login", json={"name": "ada", "password": "nope nope"}).status_code == 401
    limited = client.post("/api/v1/login", json={"name": "ada", "password": PASSWORD})
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "too_many_attempts"


def test_rate_limit_per_user_and_per_address(site: tuple[TestClient, Accounts]) -> None:
    _, accounts = site
    for i in range(3):  # one user tried from many addresses
        with pytest.raises(Unauthorized):
            accounts.authenticate("ada", "nope nope", f"10.0.0.{i}", 3)
    with pytest.raises(TooManyAttempts):
        accounts.authenticate("ada", PASSWORD, "10.0.0.99", 3)
    for name in ("x1", "x2", "x3"):  # one address trying many names
        with pytest.raises(Unauthorized):
            accounts.authenticate(name, "nope nope", "10.9.9.9", 3)
    with pytest.raises(TooManyAttempts):
        accounts.authenticate("vic", PASSWORD, "10.9.9.9", 3)
    assert accounts.authenticate("vic", PASSWORD, "10.1.1.1", 3).name == "vic"


def test_rate_limit_window_passes(site: tuple[TestClient, Accounts]) -> None:
    client, accounts = site
    for _ in range(10):
        client.post("/api/v1/login", json={"name": "vic", "password": "nope nope"})
    assert client.post("/api/v1/login", json={"name": "vic", "password": PASSWORD}).status_code == 429
    later = datetime.now(UTC) + timedelta(seconds=61)
    accounts.clock = lambda: later
    assert client.post("/api/v1/login", json={"name": "vic", "password": PASSWORD}).status_code == 200


def test_api_tokens(site: tuple[TestClient, Accounts]) -> None:
    client, accounts = site
    secret, _ = accounts.add_token("ada", "ci", role="viewer", expires_days=1)
    bearer = {"Authorization": f"Bearer {secret}"}
    me = client.get("/api/v1/me", headers=bearer).json()
    assert (me["name"], me["role"], me["via"], me["csrf"]) == ("ada", "viewer", "token", None)
    assert "annotations.write" not in me["permissions"]  # the token's role, not the user's
    # bearer requests need no CSRF token: nothing ambient a foreign page could use
    assert client.post("/api/v1/logout", headers=bearer).status_code == 204
    assert client.get("/api/v1/me", headers={"Authorization": "Bearer gvt_wrong"}).status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": f"Basic {secret}"}).status_code == 401
    # expiry
    accounts.clock = lambda: datetime.now(UTC) + timedelta(days=1, seconds=1)
    expired = client.get("/api/v1/me", headers=bearer)
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    accounts.clock = lambda: datetime.now(UTC)
    assert client.get("/api/v1/me", headers=bearer).status_code == 200
    # revocation
    accounts.revoke_token("ada", "ci")
    assert client.get("/api/v1/me", headers=bearer).status_code == 401
    # a disabled user's tokens and sessions stop working
    secret2, _ = accounts.add_token("vic", "script")
    log_in(client, "vic")
    accounts.disable("vic")
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret2}"}).status_code == 401
    assert client.get("/api/v1/me").status_code == 401
    assert client.post("/api/v1/login", json={"name": "vic", "password": PASSWORD}).status_code == 401
    # the database holds no secret, only hashes
    with accounts.session() as s:
        stored = [t.secret_hash for t in s.query(ApiTokenRow)]
    assert secret not in stored and sha256(secret) in stored


def test_session_expiry_slides(site: tuple[TestClient, Accounts]) -> None:
    client, accounts = site
    log_in(client, "vic")
    start = datetime.now(UTC)
    for hours in (8, 16, 24):  # 12-hour sessions used every 8 hours stay alive
        accounts.clock = lambda hours=hours: start + timedelta(hours=hours)
        assert client.get("/api/v1/me").status_code == 200
    accounts.clock = lambda: start + timedelta(hours=24 + 12, seconds=1)
    assert client.get("/api/v1/me").status_code == 401


def test_no_users_is_local_mode(sqlite_workspace: gv.Workspace) -> None:
    with TestClient(create_app(sqlite_workspace)) as client:
        me = client.get("/api/v1/me").json()
    assert (me["name"], me["via"], me["users"]) == ("local", "local", False)


def test_no_users_refuses_non_loopback_however_launched(ws_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without users the app itself will not serve a network address: not through ``gigavision serve``, not
    through ``uvicorn --factory`` (it exits non-zero before binding), not behind another ASGI server (503)."""
    code = main(["-w", str(ws_path), "serve", "--host", "0.0.0.0", "--port", "1"])
    assert code == 2 and "loopback only" in capsys.readouterr().err
    env = {**os.environ, "GIGAVISION_WORKSPACE": str(ws_path)}
    factory = [sys.executable, "-m", "uvicorn", "--factory", "gigavision.server.main:app_from_environment"]
    run = subprocess.run(
        [*factory, "--host", "0.0.0.0", "--port", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0 and "no users, so gigavision serves loopback only" in run.stderr
    assert "Uvicorn running" not in run.stderr

    # the per-connection guard, for ASGI servers whose bind address cannot be read
    with gv.open_workspace(ws_path) as ws:
        auth = Auth(Accounts(ws.session), 12, 10)
        reached: list[str] = []
        sent: list[dict[str, Any]] = []

        async def inner(scope: Any, receive: Any, send: Any) -> None:
            reached.append(scope["path"])

        async def send(message: Any) -> None:
            sent.append(message)

        async def receive() -> Any:
            return {"type": "http.request", "body": b""}

        guard = LoopbackOnly(inner, auth)
        for server in (("127.0.0.1", 8000), ("::1", 8000), ("testserver", 80), ("192.0.2.1", 8000)):
            scope = {"type": "http", "method": "GET", "path": str(server[0]), "headers": [], "server": server}
            aio.run(guard(scope, receive, send))
        assert reached == ["127.0.0.1", "::1", "testserver"]
        assert sent[0]["status"] == 503 and b"loopback_only" in sent[1]["body"]
        Accounts(ws.session).add("ada", "admin", PASSWORD)
        auth.users_added()
        aio.run(guard(scope, receive, send))
        assert reached[-1] == "192.0.2.1"


def test_with_users_the_cli_serves_other_addresses(ws_path: Path) -> None:
    from gigavision.cli.serve import run_server

    with gv.open_workspace(ws_path) as ws:
        Accounts(ws.session).add("ada", "admin", PASSWORD)
        started: dict[str, Any] = {}
        import uvicorn

        def fake_run(app: Any, **kwargs: Any) -> None:
            started.update(kwargs)

        original, uvicorn.run = uvicorn.run, fake_run
        try:
            run_server(ws, "0.0.0.0", 8123)
        finally:
            uvicorn.run = original
    assert started["host"] == "0.0.0.0"


def test_metadata_edits_and_job_cancels_record_the_login(site: tuple[TestClient, Accounts], tmp_path: Path) -> None:
    """Every write records its user: image metadata and job cancels too (annotations, QC, reviews, aliases
    and datasets are tested where they live)."""
    from PIL import Image

    client, accounts = site
    ws = client.app.state.workspace  # type: ignore[attr-defined]
    Image.new("RGB", (32, 32), (200, 40, 40)).save(tmp_path / "red.png")
    (result,) = ws.ingest([tmp_path / "red.png"])
    assert ws.get_image(result.id, fresh=True).meta_by is None  # only ingest wrote it
    secret, _ = accounts.add_token("ada", "meta", role="admin")
    bearer = {"Authorization": f"Bearer {secret}"}
    patched = client.patch(f"/api/v1/images/{result.id}/meta", json={"site": "b"}, headers=bearer)
    assert patched.status_code == 200, patched.text
    assert patched.json()["meta_by"] == "ada" and patched.json()["meta_at"]
    assert client.get(f"/api/v1/images/{result.id}", headers=bearer).json()["meta_by"] == "ada"
    ws.set_image_meta(result.id, {"site": "c"}, "cli")  # the CLI acts as the local operator it is given
    assert ws.get_image(result.id, fresh=True).meta_by == "cli"

    def until_cancelled(ctx: Any, params: dict[str, Any]) -> dict[str, Any]:
        while True:  # progress() raises JobCancelled once a cancel is requested
            ctx.progress(0, 1, "waiting")
            idle.wait(0.02)

    idle = threading.Event()  # never set: the job idles between progress reports
    registry.register("test.until_cancelled", until_cancelled)
    try:
        job_id = ws.jobs.submit("test.until_cancelled", {}, actor="ada")["id"]
        cancelled = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["cancelled_by"] == "ada"
        ended = ws.jobs.wait(job_id, timeout=30)
        assert (ended["status"], ended["cancelled_by"]) == ("cancelled", "ada") and ended["attempts"] <= 1
    finally:
        registry.KINDS.discard("test.until_cancelled")
        accounts.revoke_token("ada", "meta")
