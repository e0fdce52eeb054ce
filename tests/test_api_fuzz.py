"""Property-based fuzzing of every REST route from the app's own OpenAPI schema: no request, valid or not,
gets an answer >= 500 (issue 13). The long run is ``benchmarks/fuzz_api.py`` (``make fuzz``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import gigavision as gv
from gigavision.server.main import create_app
from tests import apifuzz

EXAMPLES = 8  # per route, valid and schema-violating: ~490 requests, about 9 s on an idle 2-core machine


@pytest.fixture(scope="module")
def fuzzed(
    tmp_path_factory: pytest.TempPathFactory, samples: dict[str, Path]
) -> Iterator[tuple[FastAPI, apifuzz.Seeded, dict[str, str]]]:
    root = tmp_path_factory.mktemp("apifuzz") / "ws"
    gv.init_workspace(root).close()
    ws = gv.open_workspace(root, **apifuzz.FUZZ_OVERRIDES)
    headers = apifuzz.login(ws)  # the acceptance asks for a logged-in admin, not local mode
    app = create_app(ws)
    with TestClient(app, base_url="http://127.0.0.1", headers=headers) as client:
        seeded = apifuzz.seed(client, samples)
    apifuzz.finish_export(ws, seeded)
    yield app, seeded, headers
    ws.close()


def test_no_route_answers_a_server_error(fuzzed: tuple[FastAPI, apifuzz.Seeded, dict[str, str]]) -> None:
    app, seeded, headers = fuzzed
    report = apifuzz.fuzz(app, seeded, examples=EXAMPLES, headers=headers)
    routes = {f"{m.upper()} {p}" for p, ops in app.openapi()["paths"].items() for m in ops}
    assert set(report.operations) == routes
    assert all(sum(c.values()) >= 1 for c in report.operations.values())
    assert report.findings() == [], "\n".join(report.findings())
    # the seeded ids let the fuzzer past the lookups: a good share of the answers are successes
    statuses = report.statuses()
    assert sum(n for s, n in statuses.items() if s.startswith("2")) >= report.cases // 5, statuses


def test_values_beyond_the_database_are_a_400(workspace: gv.Workspace) -> None:
    """What the fuzzer found first: an id or offset past 64 bits reached the database and answered 500
    (SQLite cannot bind it, PostgreSQL says bigint out of range), and so did text with a NUL byte on
    PostgreSQL. The store refuses them as bad input."""
    huge = str(2**70)
    with TestClient(create_app(workspace), base_url="http://127.0.0.1") as client:
        for path in (
            f"/api/v1/annotations/{huge}",
            f"/api/v1/annotations/-{huge}/history",
            f"/api/v1/jobs?offset={huge}",
            f"/api/v1/qc/queue?offset={huge}",
            f"/api/v1/qc/items/{huge}",
        ):
            r = client.get(path)
            assert r.status_code == 400, (path, r.text)
            assert "out of the range the database can store" in r.json()["error"]["message"]
        assert client.get(f"/api/v1/annotations/{2**40}").status_code == 404  # in range: just not there
        # PostgreSQL cannot hold a NUL in text (psycopg refuses it): 400 there, an ordinary 404 on SQLite
        merge = client.post("/api/v1/labels/merge", json={"into": "cell", "sources": ["nu\x00cleus"]})
        assert merge.status_code in (400, 404), merge.text
        if workspace.settings.resolved_db_url().startswith("postgresql"):
            assert "cannot store" in merge.json()["error"]["message"]
