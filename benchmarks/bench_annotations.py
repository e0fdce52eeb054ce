"""Annotation store at scale: 5,000,000 cell-like polygons (~20 vertices) on one 100,000 × 100,000 image.

Anchor (DESIGN.md §6, issue 3): TIAToolbox's SQLiteStore took 20 min 25 s and 5.2 GB for 5 M polygons.
Targets: bulk ingest ≤ 5 min, ≤ 2 GB on disk, p95 ≤ 20 ms for 1024² viewport queries.

Measured for SQLite (R*Tree) and PostgreSQL (GiST), in the same run:
  ingest_s      ``ws.annotations.add`` in batches of 250,000 (one transaction each), polygons pre-built
  db_mb         database size on disk after ingest (SQLite file after a WAL checkpoint; pg_database_size)
  index_*       1,000 random 1024² and 8192² viewports: ids through the spatial index only
  records_*     the same viewports returned as full records with GeoJSON geometry (what the REST API sends)

Usage: .venv/bin/python benchmarks/bench_annotations.py [--quick] [--count N] [--db sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import shutil
import time
import uuid

import numpy as np
from sqlalchemy import text

import _util as u

SIDE = 100_000
BATCH = 250_000
PG_ADMIN = "postgresql://127.0.0.1:5432/test"


def cells(n: int, seed: int) -> object:
    """``n`` nucleus-like polygons: 20-vertex jittered circles, radius 6-12 px, uniform over the image."""
    import shapely

    from gigavision.annotations import Annotations

    rng = np.random.default_rng(seed)
    centres = rng.uniform(20, SIDE - 20, (n, 2))
    radius = rng.uniform(6, 12, (n, 1)) * rng.uniform(0.85, 1.15, (n, 20))
    theta = np.linspace(0, 2 * np.pi, 20, endpoint=False)[None, :]
    ring = np.stack([centres[:, :1] + radius * np.cos(theta), centres[:, 1:] + radius * np.sin(theta)], axis=2)
    ring = np.concatenate([ring, ring[:, :1]], axis=1)
    labels = np.where(rng.random(n) < 0.7, "tumour", "lymphocyte")
    return Annotations.from_polygons(shapely.polygons(ring), labels.tolist(), source="model:hovernet@1")


def db_size_mb(ws: object, dialect: str) -> float:
    with ws.engine.connect() as conn:  # type: ignore[attr-defined]
        if dialect == "sqlite":
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            page = conn.execute(text("PRAGMA page_size")).scalar()
            pages = conn.execute(text("PRAGMA page_count")).scalar()
            return float(page * pages) / 1e6
        return float(conn.execute(text("SELECT pg_database_size(current_database())")).scalar()) / 1e6


def run_backend(dialect: str, count: int, queries: int) -> dict[str, object]:
    import psycopg

    import gigavision as gv
    from gigavision.store.annotations import Viewport

    root = u.BENCH / "annotations" / dialect
    shutil.rmtree(root, ignore_errors=True)
    db_url, pg_name = "", None
    if dialect == "postgresql":
        pg_name = f"gv_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        db_url = f"postgresql+psycopg://127.0.0.1:5432/{pg_name}"
    try:
        ws = gv.init_workspace(root, db_url=db_url)
        from PIL import Image
        from skimage import data

        sample = root / "coins.png"
        Image.fromarray(data.coins()).save(sample)
        (r,) = ws.ingest([sample])
        image_id = r.id
        ingest_s = 0.0
        for start in range(0, count, BATCH):
            batch = cells(min(BATCH, count - start), seed=start)
            t0 = time.perf_counter()
            ws.annotations.add(image_id, batch, actor="bench")  # type: ignore[arg-type]
            ingest_s += time.perf_counter() - t0
            u.log(f"{dialect}: {start + len(batch):,} / {count:,} polygons, {ingest_s:.1f} s")  # type: ignore[arg-type]
        size = db_size_mb(ws, dialect)
        rng = np.random.default_rng(1)
        out: dict[str, object] = {
            "ingest_s": u.rnd(ingest_s, 1),
            "polygons_per_s": int(count / ingest_s),
            "db_mb": u.rnd(size, 1),
        }
        for side in (1024, 8192):
            index_ms, record_ms, hits = [], [], []
            for _ in range(queries):
                x0, y0 = rng.uniform(0, SIDE - side, 2)
                vp = Viewport(x0, y0, x0 + side, y0 + side)
                t0 = time.perf_counter()
                n = ws.annotations.count_in(image_id, vp)
                index_ms.append((time.perf_counter() - t0) * 1e3)
                hits.append(n)
                if side == 1024 or len(record_ms) < 100:  # full records of 8192² views are ~30k rows: sample
                    t0 = time.perf_counter()
                    ws.annotations.query_records(image_id, vp, limit=100_000)
                    record_ms.append((time.perf_counter() - t0) * 1e3)
            out[f"viewport_{side}"] = {
                "mean_hits": u.rnd(float(np.mean(hits)), 1),
                "index_p50_ms": u.rnd(u.percentile(index_ms, 50), 2),
                "index_p95_ms": u.rnd(u.percentile(index_ms, 95), 2),
                "records_p50_ms": u.rnd(u.percentile(record_ms, 50), 2),
                "records_p95_ms": u.rnd(u.percentile(record_ms, 95), 2),
                "records_samples": len(record_ms),
            }
        ws.close()
        return out
    finally:
        if pg_name:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="500,000 polygons, 200 queries per size")
    ap.add_argument("--count", type=int, help="number of polygons (default 5,000,000)")
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    args = ap.parse_args()
    quick = args.quick or u.quick_requested([])
    count = args.count or (500_000 if quick else 5_000_000)
    queries = 200 if quick else 1000
    backends = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    results = {b: run_backend(b, count, queries) for b in backends}
    scale = count / 5_000_000  # the anchor and targets are for 5 M polygons
    met = {
        b: {
            "ingest": r["ingest_s"] <= 300 * scale,  # type: ignore[operator]
            "disk": r["db_mb"] <= 2000 * scale,  # type: ignore[operator]
            "p95_1024_records": r["viewport_1024"]["records_p95_ms"] <= 20,  # type: ignore[index]
        }
        for b, r in results.items()
    }
    u.emit(
        {
            "benchmark": "annotations",
            "quick": quick,
            "polygons": count,
            "image": f"{SIDE}x{SIDE}",
            "anchor": {"what": "TIAToolbox SQLiteStore, 5 M polygons", "ingest_s": 1225, "disk_mb": 5200},
            "ingest_ratio_vs_anchor": {b: u.rnd(1225 * scale / r["ingest_s"], 2) for b, r in results.items()},  # type: ignore[operator]
            "disk_ratio_vs_anchor": {b: u.rnd(5200 * scale / r["db_mb"], 2) for b, r in results.items()},  # type: ignore[operator]
            "results": results,
            "targets": {"ingest_s": 300, "disk_mb": 2000, "p95_1024_ms": 20},
            "met": met,
            "machine": u.machine(),
        }
    )


if __name__ == "__main__":
    main()
