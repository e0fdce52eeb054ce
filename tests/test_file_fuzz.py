"""Generated malformed images (truncated, bit-flipped, spliced, header-lying, bombs; PNG, JPEG, TIFF, BigTIFF,
pyramidal TIFF, DICOM) uploaded through the REST route: never a 5xx, and every refusal names the file and
says why. The long run, with imports, a real server, latency and memory, is ``benchmarks/fuzz_files.py``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import gigavision as gv
from gigavision.server.main import create_app
from tests import apifuzz, badfiles

FILES = 150


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("filefuzz") / "ws"
    gv.init_workspace(root).close()
    ws = gv.open_workspace(root, **apifuzz.FUZZ_OVERRIDES)  # big uploads' ingest jobs stay queued
    headers = apifuzz.login(ws)
    with TestClient(create_app(ws), base_url="http://127.0.0.1", headers=headers) as c:
        yield c
    ws.close()


def test_malformed_uploads_are_refused_by_name_never_a_server_error(
    client: TestClient, tmp_path: Path, samples: dict[str, Path]
) -> None:
    seeds = badfiles.fuzz_seeds(tmp_path / "seeds", samples)
    statuses: Counter[int] = Counter()
    problems = []
    for f in badfiles.fuzz_files(seeds, FILES, seed=13, imports=0.0):
        r = client.post("/api/v1/images", files={"file": (f.name, f.data, "application/octet-stream")})
        statuses[r.status_code] += 1
        if r.status_code >= 500:
            problems.append(f"{f.name} ({f.how}): {r.status_code} {r.text[:300]}")
        elif r.status_code >= 400:
            error = r.json().get("error", {})
            message = str(error.get("message", ""))
            # the file's name and a reason after it, not just the name
            if f.name not in message or len(message) < len(f.name) + 12 or not error.get("code"):
                problems.append(f"{f.name} ({f.how}): refusal without file and reason: {r.text[:300]}")
    assert problems == [], "\n".join(problems)
    assert sum(statuses.values()) == FILES
    # most of them are broken beyond use: refused, each with its reason (checked above)
    assert sum(n for s, n in statuses.items() if 400 <= s < 500) >= FILES // 2, statuses
    assert client.get("/healthz").status_code == 200


def test_what_the_fuzzers_found_is_refused_by_name(
    client: TestClient, tmp_path: Path, samples: dict[str, Path]
) -> None:
    """Each of these answered 500 (a reader's arithmetic on a lying header) before its fix."""
    found = badfiles.found_by_fuzzing(badfiles.fuzz_seeds(tmp_path / "seeds", samples))
    answers = {}
    for name, data in found.items():
        r = client.post("/api/v1/images", files={"file": (name, data, "application/octet-stream")})
        answers[name] = (r.status_code, r.json().get("error", {}).get("message", ""))
    assert {n: s for n, (s, _) in answers.items() if s >= 500} == {}
    refused = {n: m for n, (s, m) in answers.items() if s >= 400}
    assert set(refused) >= set(found) - {"one_bit.tif"}, answers  # a 1-bit image may be a real one
    assert all(m.startswith(f"{n}: ") for n, m in refused.items()), refused
