"""Property-based fuzzing of every REST route from the app's OpenAPI schema, as a logged-in admin.

The long run of ``tests/test_api_fuzz.py`` (same machinery: ``tests/apifuzz.py``): a fresh workspace seeded
through the API with real things to point at (an ingested photograph, a label schema, annotations, a dataset
version, QC items, a finished export), then ``--examples`` generated requests per route, valid and
schema-violating (schemathesis + hypothesis, explicit seed), in process through schemathesis' ASGI
transport. The property checked is schemathesis' ``not_a_server_error``.

One JSON line on stdout (routes, cases, statuses histogram, 5xx count); the full report in ``--out`` lists
every 5xx with its request (method, path, query, body, a curl line) and the server's traceback.
``--examples 300`` takes about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util as u

sys.path.insert(0, str(u.ROOT))  # tests/apifuzz.py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=100, help="generated requests per route")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--db-url", default="", help="a PostgreSQL URL to fuzz that path (default: SQLite)")
    ap.add_argument("--route", action="append", help="only this route ('GET /api/v1/jobs'); repeatable")
    ap.add_argument("--out", type=Path, default=u.BENCH / "fuzz_api.json")
    ap.add_argument("--quick", action="store_true", help="10 examples per route")
    args = ap.parse_args()
    if u.quick_requested() or args.quick:
        args.examples = min(args.examples, 10)

    import shutil

    from fastapi.testclient import TestClient
    from tests import apifuzz

    import gigavision as gv
    from gigavision.demo import bundled_images
    from gigavision.server.main import create_app

    root = u.BENCH / "fuzz_api"
    shutil.rmtree(root, ignore_errors=True)
    samples = {p.name: p for p in bundled_images(u.BENCH / "samples")}
    gv.init_workspace(root / "ws", db_url=args.db_url).close()
    ws = gv.open_workspace(root / "ws", **apifuzz.FUZZ_OVERRIDES)
    headers = apifuzz.login(ws)
    app = create_app(ws)
    started = time.perf_counter()
    with TestClient(app, base_url="http://127.0.0.1", headers=headers) as client:
        seeded = apifuzz.seed(client, samples)
    apifuzz.finish_export(ws, seeded)
    u.log(f"seeded in {time.perf_counter() - started:.1f}s; {args.examples} examples per route (seed {args.seed})")
    report = apifuzz.fuzz(
        app, seeded, examples=args.examples, seed_value=args.seed, headers=headers, only=set(args.route or []) or None
    )
    ws.close()
    full = report.as_dict()
    summary = {
        "benchmark": "fuzz_api",
        "database": "postgresql" if args.db_url else "sqlite",
        **{k: full[k] for k in ("seed", "examples_per_operation", "routes", "cases", "seconds", "statuses")},
        "server_errors": full["server_errors"],
        "findings": report.findings(),
        "met": {"no_5xx": not report.server_errors},
        "machine": u.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**summary, **full}, indent=1, default=str))
    u.log(f"full report: {args.out}")
    u.emit(summary)
    if report.server_errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
