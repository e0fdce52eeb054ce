"""Property-based fuzzing of the REST API from its own OpenAPI schema (schemathesis + hypothesis).

Shared by the quick test (``tests/test_api_fuzz.py``) and the long run (``benchmarks/fuzz_api.py``).
A workspace is seeded through the API with real things to point at (an ingested photograph, a label
schema, annotations, a dataset version, QC items, a finished export job), then every operation of the
schema gets generated requests, valid (positive) and schema-violating (negative). Generated path
parameters are random strings that only ever reach a 404, so half the cases swap in the id of something
that exists: the fuzzed query and body then reach the code behind the lookup.

The only property checked is schemathesis' ``not_a_server_error``: no answer >= 500, whatever was sent.
Every 5xx is recorded with the request (method, path, query, body, a curl line) and the server's logged
traceback, so a finding can be reproduced without re-running the fuzzer.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI

ADMIN = "fuzz-admin"
ADMIN_PASSWORD = "fuzzing is not a password"  # a throwaway workspace's
# Workspace overrides for a fuzzed server: jobs that a fuzzed POST queues (training, exports, imports,
# background datasets) stay queued instead of running on the test's CPU.
FUZZ_OVERRIDES: dict[str, Any] = {"job_workers": 0}


@dataclass
class Seeded:
    """Ids of real things in the fuzzed workspace, by the path parameter that names them."""

    image_ids: list[str]
    image_refs: list[str]  # full ids, unique prefixes and names: every form a path accepts
    annotation_ids: list[str]
    labels: list[str]
    datasets: list[str]
    qc_items: list[str]
    job_ids: list[str]
    job_files: list[str]
    review_tasks: list[str] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)

    def path_values(self, path: str) -> dict[str, list[str]]:
        """Real values for each path parameter of the operation at ``path``."""
        names = self.datasets if path.startswith(("/api/v1/datasets", "/iiif/3/datasets")) else self.labels
        if path.startswith("/api/v1/indexes"):
            names = self.indexes
        return {
            "image_id": self.image_refs,
            "annotation_id": self.annotation_ids,
            "name": names,
            "version": ["1", "latest"],
            "item_id": self.review_tasks if path.startswith("/api/v1/reviews") else self.qc_items,
            "job_id": self.job_ids,
            "path": self.job_files,
            "model_id": ["no-such-model"],
        }


def login(ws: Any) -> dict[str, str]:
    """An admin with an API token in ``ws``: the headers that make the fuzzer's requests that admin's.

    A Bearer token, not a login session: a session's CSRF token would have to ride on every fuzzed unsafe
    request, and the fuzzer cannot log itself out by accident (no fuzzed route takes the secret).
    """
    from gigavision.store.users import Accounts

    accounts = Accounts(ws.session)
    accounts.add(ADMIN, "admin", ADMIN_PASSWORD)
    secret, _ = accounts.add_token(ADMIN, "fuzz")
    return {"Authorization": f"Bearer {secret}"}


def _ok(response: Any, what: str) -> Any:
    if response.status_code >= 300:
        raise RuntimeError(f"seeding the fuzzed workspace: {what} answered {response.status_code}: {response.text}")
    return response.json()


def seed(client: Any, samples: dict[str, Path]) -> Seeded:
    """Fill an empty workspace through the REST API (``client``: a TestClient or an ``httpx.Client``)."""
    image_ids = []
    for name in ("immunohistochemistry.png", "coins.png"):
        with samples[name].open("rb") as fh:
            body = _ok(client.post("/api/v1/images", files={"file": (name, fh, "application/octet-stream")}), name)
        image_ids.append(body["id"])
    ihc = image_ids[0]
    for label, kind in (("nucleus", "polygon"), ("cell", "box"), ("tumour", "tag"), ("spot", "point")):
        _ok(
            client.put(f"/api/v1/labels/{label}", json={"kind": kind, "attributes": {"stain": ["weak", "strong"]}}),
            label,
        )
    records = [
        {
            "kind": "polygon",
            "label": "nucleus",
            "status": "accepted",
            "attributes": {"stain": "strong"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[100, 100], [140, 100], [140, 130], [100, 130], [100, 100]]],
            },
        },
        {"kind": "box", "label": "cell", "status": "accepted", "bbox": [200, 200, 260, 250]},
        {"kind": "tag", "label": "tumour", "status": "accepted"},
        {"kind": "point", "label": "spot", "geometry": {"type": "Point", "coordinates": [300, 40]}},
    ]
    added = _ok(client.post(f"/api/v1/images/{ihc}/annotations", json={"annotations": records}), "annotations")
    coins = _ok(
        client.post(f"/api/v1/images/{image_ids[1]}/annotations", json={"annotations": records[1:3]}), "annotations"
    )
    _ok(client.post("/api/v1/datasets", json={"name": "fuzz", "split": "train=0.5,test=0.5"}), "dataset")
    made = _ok(
        client.post("/api/v1/qc/items", json={"image_id": ihc, "kind": "box", "grid": [256, 256], "labels": ["cell"]}),
        "qc items",
    )
    qc_items = [str(i["id"]) for i in made["items"]]
    _ok(client.post("/api/v1/qc/assignments", json={"all_items": True, "pool": [ADMIN, "ana"]}), "qc assignments")
    return Seeded(
        image_ids=image_ids,
        image_refs=[*image_ids, ihc[:8], "coins.png"],
        annotation_ids=[*added["ids"], *coins["ids"]],
        labels=["nucleus", "cell", "tumour", "spot"],
        datasets=["fuzz"],
        qc_items=qc_items,
        job_ids=[],
        job_files=[],
    )


def finish_export(ws: Any, seeded: Seeded) -> None:
    """A finished export job (run inline, recorded like a queued one), so job ids and files exist; and
    review tasks (selection and proposals make them; no route creates one)."""
    from gigavision.store.reviews import NewTask

    ihc = seeded.image_ids[0]
    ws.reviews.add(
        [NewTask(ihc, "selected", region=(0, 0, 256, 256), priority=2), NewTask(ihc, "uncertain", label="cell")],
        actor=ADMIN,
    )
    seeded.review_tasks += [str(t["id"]) for t in ws.reviews.page(None, offset=0, limit=10)[0]]
    result = ws.jobs.run("export", {"format": "coco", "dataset": None, "options": {}}, ADMIN)
    records, _ = ws.jobs.list_jobs(kind="export", status="done")
    seeded.job_ids += [records[0]["id"], records[0]["id"][:8]]
    seeded.job_files.append(str(result["out"]))
    seeded.indexes += [empty_index(ws, "fuzzed"), empty_index(ws, "fuzzed-2")]  # DELETE may drop one


def empty_index(ws: Any, name: str) -> str:
    """An embedding index with no entries whose model is gone (no model is trained here): its card answers,
    a search finds no model (404)."""
    from gigavision.search import store, vectors

    index, params = vectors.build(np.zeros((0, 8), np.float32), 8)
    card = store.IndexCard(
        name, "no-such-model", "embed", 8, "image", None, [], None, False, params, 0, 0, 0, store.now(), "", ADMIN
    )
    with store.locked(ws, name) as folder:
        store.save(folder, card, index, store.Entries.empty())
    return name


# -- the server's own account of a 5xx -----------------------------------------------------------------------
class Tracebacks(logging.Handler):
    """Collects what ``gigavision.server`` logs for an unhandled error (``log.exception``)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        self.records.append(text)


@dataclass
class Report:
    """What a fuzz run sent and got back."""

    seed: int
    examples_per_operation: int
    operations: dict[str, Counter[int]] = field(default_factory=dict)
    server_errors: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def cases(self) -> int:
        return sum(sum(c.values()) for c in self.operations.values())

    def statuses(self) -> dict[str, int]:
        total: Counter[int] = Counter()
        for c in self.operations.values():
            total.update(c)
        return {str(k): v for k, v in sorted(total.items())}

    def findings(self) -> list[str]:
        """One line per 5xx: the route, the last line of the server's traceback and a curl to reproduce it."""
        lines = []
        for e in self.server_errors:
            last = (e.get("traceback") or "").strip().splitlines()
            error = next((x for x in reversed(last) if x and not x.startswith((" ", "Reproduce"))), "")
            lines.append(f"{e['operation']} -> {e['status']} {error} | {e['curl']}")
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "examples_per_operation": self.examples_per_operation,
            "routes": len(self.operations),
            "cases": self.cases,
            "seconds": round(self.seconds, 1),
            "statuses": self.statuses(),
            "server_errors": len(self.server_errors),
            "per_route": {op: {str(k): v for k, v in sorted(c.items())} for op, c in sorted(self.operations.items())},
            "server_error_cases": self.server_errors,
        }


def _describe(case: Any) -> dict[str, Any]:
    body = case.body
    try:
        shown = json.dumps(body, default=repr)[:2000]
    except (TypeError, ValueError):
        shown = repr(body)[:2000]
    return {
        "operation": f"{case.operation.method.upper()} {case.operation.path}",
        "path": case.formatted_path,
        "path_parameters": case.path_parameters,
        "query": case.query,
        "media_type": case.media_type,
        "body": shown,
    }


def fuzz(
    app: FastAPI,
    seeded: Seeded,
    *,
    examples: int,
    seed_value: int = 0,
    headers: dict[str, str] | None = None,
    base_url: str = "http://127.0.0.1",
    only: set[str] | None = None,
) -> Report:
    """Send ``examples`` generated requests to every operation of ``app``'s schema (half positive, half
    negative), in process through schemathesis' ASGI transport; deterministic for one ``seed_value``."""
    import schemathesis

    # fetched as a loopback client: the app answers only hosts it knows (its DNS-rebinding guard)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers={**(headers or {}), "Host": "127.0.0.1"})
    report = Report(seed=seed_value, examples_per_operation=examples)
    catcher = Tracebacks()
    server_log = logging.getLogger("gigavision.server")
    server_log.addHandler(catcher)
    # python-multipart warns about each malformed part header it skips: thousands of lines, all expected
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    started = time.perf_counter()
    try:
        for number, result in enumerate(schema.get_all_operations()):
            operation = result.ok()
            label = f"{operation.method.upper()} {operation.path}"
            if only is None or label in only:
                counts = report.operations.setdefault(label, Counter())
                _fuzz_operation(operation, seeded, examples, seed_value * 1000 + number, headers, base_url, counts,
                                report, catcher)  # fmt: skip
    finally:
        server_log.removeHandler(catcher)
        report.seconds = time.perf_counter() - started
    return report


def _fuzz_operation(
    operation: Any,
    seeded: Seeded,
    examples: int,
    seed_value: int,
    headers: dict[str, str] | None,
    base_url: str,
    counts: Counter[int],
    report: Report,
    catcher: Tracebacks,
) -> None:
    import hypothesis
    from hypothesis import HealthCheck, Phase
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.failures import FailureGroup

    values = seeded.path_values(operation.path)
    names = [p.name for p in operation.path_parameters]
    real = st.fixed_dictionaries({n: st.sampled_from(values[n]) for n in names if values.get(n)})
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    # explicit seed, no example database: the same cases on every run for one seed_value
    @hypothesis.settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=hypothesis.Verbosity.quiet,
    )
    @hypothesis.given(case=cases, swap=st.booleans(), ids=real)
    @hypothesis.seed(seed_value)
    def one(case: Any, swap: bool, ids: dict[str, str]) -> None:
        if swap:  # past the lookups and the identity check (a login acts only as itself: 403 otherwise)
            if ids:
                case.path_parameters = {**(case.path_parameters or {}), **ids}
            if isinstance(case.body, dict) and "actor" in case.body:
                case.body = {**case.body, "actor": ADMIN}
            if isinstance(case.query, dict) and "actor" in case.query:
                case.query = {**case.query, "actor": ADMIN}
            # references by name in the query or the body (a search's index and image): real ones
            for field_name, known in (("index", seeded.indexes), ("image_id", seeded.image_ids)):
                if known and isinstance(case.query, dict) and field_name in case.query:
                    case.query = {**case.query, field_name: known[0]}
                if known and isinstance(case.body, dict) and field_name in case.body:
                    case.body = {**case.body, field_name: known[0]}
        del catcher.records[:]
        try:
            response = case.call(base_url=base_url, headers=headers)
        except Exception as exc:  # raised out of the app: a real server answers 500 to this
            counts[500] += 1
            report.server_errors.append(
                {
                    **_describe(case),
                    "status": 500,
                    "curl": case.as_curl_command(headers=headers),
                    "traceback": "".join(traceback.format_exception(exc))[-6000:],
                }
            )
            return
        counts[response.status_code] += 1
        try:
            case.validate_response(response, checks=[not_a_server_error], headers=headers)
        except FailureGroup:
            report.server_errors.append(
                {
                    **_describe(case),
                    "status": response.status_code,
                    "response": response.text[:1000],
                    "curl": case.as_curl_command(headers=headers),
                    "traceback": "\n".join(catcher.records)[-6000:],
                }
            )

    one()
