"""Accounts (issue 13): the users CLI, logins, sessions, CSRF, API tokens, rate limits, loopback refusal."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

import gigavision as gv
from gigavision.cli.main import main
from gigavision.store import users as users_module

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
    # a second user of the same name, an unknown role, a short password: one line, exit 2
    code, _, err = cli(
        monkeypatch, capsys, *w, "users", "add", "bo", "--role", "viewer", "--password-stdin", stdin=PASSWORD
    )
    assert (code, err.strip()) == (2, "error: user 'bo' exists")
    code, _, err = cli(
        monkeypatch, capsys, *w, "users", "add", "cy", "--role", "boss", "--password-stdin", stdin=PASSWORD
    )
    assert code == 2 and "role 'boss': unknown; known: admin, manager, reviewer, annotator, viewer" in err
    code, _, err = cli(
        monkeypatch, capsys, *w, "users", "add", "cy", "--role", "viewer", "--password-stdin", stdin="short\n"
    )
    assert code == 2 and "8 to 1024 characters" in err

    assert cli(monkeypatch, capsys, *w, "users", "set-role", "bo", "reviewer")[0] == 0
    code, secret, err = cli(
        monkeypatch, capsys, *w, "users", "token", "bo", "--name", "script", "--role", "viewer", "--expires-days", "2"
    )
    assert code == 0 and secret.strip().startswith("gvt_") and "shown once" in err
    # a token may not allow more than its user's role
    code, _, err = cli(monkeypatch, capsys, *w, "users", "token", "bo", "--name", "x", "--role", "manager")
    assert code == 2 and "cannot have role manager" in err
    assert cli(monkeypatch, capsys, *w, "users", "disable", "bo")[0] == 0

    code, out, _ = cli(monkeypatch, capsys, *w, "users", "list", "--json")
    listed = {u["name"]: u for u in json.loads(out)["users"]}
    assert listed["ada"]["role"] == "admin" and not listed["ada"]["disabled"]
    assert listed["bo"]["role"] == "reviewer" and listed["bo"]["disabled"]
    assert [(t["name"], t["role"], t["revoked"]) for t in listed["bo"]["tokens"]] == [("script", "viewer", False)]
    assert "secret" not in out and secret.strip() not in out  # the secret is never shown again
    assert cli(monkeypatch, capsys, *w, "users", "revoke-token", "bo", "--name", "script")[0] == 0
    code, out, _ = cli(monkeypatch, capsys, *w, "users", "list", "--json")
    assert json.loads(out)["users"][1]["tokens"][0]["revoked"] is True

    # the password is stored as an argon2id hash, never as given
    with gv.open_workspace(ws_path) as ws:
        from gigavision.store.schema import UserRow

        with ws.session() as s:
            digest = s.query(UserRow).filter_by(name="ada").one().password_hash
    assert digest.startswith("$argon2id$") and PASSWORD not in digest
