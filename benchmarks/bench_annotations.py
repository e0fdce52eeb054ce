"""Annotation store at scale: 5,000,000 cell-like polygons (~20 vertices) on one 100,000 × 100,000 image.

Anchor (DESIGN.md §6, issue 3): TIAToolbox's SQLiteStore took 20 min 25 s and 5.2 GB for 5 M polygons.
Targets: bulk ingest ≤ 5 min, ≤ 2 GB on disk, p95 ≤ 20 ms for 1024² viewport queries.

Measured for SQLite (R*Tree) and PostgreSQL (GiST), one after the other in the same run, on the same polygons:
  ingest_s      ``ws.annotations.add`` in batches of 250,000 (one transaction each), polygons pre-built
  db_mb         size on disk after ingest: SQLite database file + WAL (after a checkpoint); PostgreSQL
                ``pg_total_relation_size`` (heap, TOAST, indexes) of the annotation tables
  index_*       1,000 random 1024² and 8192² viewports: ``count_in`` (ids through the spatial index only)
  records_*     the same viewports as full records with GeoJSON geometry (what the REST API sends);
                all 1,000 for 1024², the first 100 for 8192² (each returns ~33,500 polygons at 5 M)

``--coords`` picks the vertex precision: ``float64`` (default; every coordinate a full-precision double, as
in the anchor's synthetic cells), ``float32`` (as a segmentation model emits them) or ``int`` (traced
from a mask). Storage is lossless in every case; compact geometry depends on it (store/geometry_codec.py).

Usage: .venv/bin/python benchmarks/bench_annotations.py [--quick] [--count N] [--queries N]
       [--db sqlite|postgresql|both] [--coords float64|float32|int]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
import uuid
from typing import Any

import numpy as np
from sqlalchemy import text

import _util as u

SIDE = 100_000
BATCH = 250_000
PG_ADMIN = os.environ.get("GIGAVISION_TEST_PG", "postgresql://127.0.0.1:5432/test")
ANCHOR_S, ANCHOR_MB = 1225.0, 5200.0  # TIAToolbox SQLiteStore, 5 M polygons
TARGET_S, TARGET_MB, TARGET_P95_MS = 300.0, 2000.0, 20.0
PG_TABLES = ("annotations", "annotation_images", "annotation_events")


def cells(n: int, seed: int, coords: str = "float64") -> Any:
    """``n`` nucleus-like polygons: 20-vertex jittered circles, radius 6-12 px, uniform over the image."""
    import shapely

    from gigavision.annotations import Annotations

    rng = np.random.default_rng(seed)
    centres = rng.uniform(20, SIDE - 20, (n, 2))
    radius = rng.uniform(6, 12, (n, 1)) * rng.uniform(0.85, 1.15, (n, 20))
    theta = np.linspace(0, 2 * np.pi, 20, endpoint=False)[None, :]
    ring = np.stack([centres[:, :1] + radius * np.cos(theta), centres[:, 1:] + radius * np.sin(theta)], axis=2)
    if coords == "float32":
        ring = ring.astype(np.float32).astype(np.float64)
    elif coords == "int":
        ring = np.round(ring)
    ring = np.concatenate([ring, ring[:, :1]], axis=1)
    labels = np.where(rng.random(n) < 0.7, "tumour", "lymphocyte")
    return Annotations.from_polygons(shapely.polygons(ring), labels.tolist(), source="model:hovernet@1")


def db_size_mb(ws: Any, dialect: str) -> dict[str, float]:
    """Bytes on disk in MB: the SQLite file and its WAL; PostgreSQL's annotation tables with indexes."""
    with ws.engine.connect() as conn:
        if dialect == "sqlite":
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
            path = ws.root / "gigavision.db"
            wal = path.with_name(path.name + "-wal")
            size = {"file_mb": path.stat().st_size / 1e6, "wal_mb": wal.stat().st_size / 1e6 if wal.exists() else 0}
            return {"total": size["file_mb"] + size["wal_mb"], **size}
        sizes = {}
        for table in PG_TABLES:
            n = conn.execute(text("SELECT pg_total_relation_size(to_regclass(:t))"), {"t": table}).scalar()
            sizes[f"{table}_mb"] = float(n or 0) / 1e6
        return {"total": sum(sizes.values()), **sizes}


def run_backend(dialect: str, count: int, queries: int, coords: str) -> dict[str, Any]:
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
        db_url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{pg_name}"
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
            batch = cells(min(BATCH, count - start), seed=start, coords=coords)
            t0 = time.perf_counter()
            ws.annotations.add(image_id, batch, actor="bench")
            ingest_s += time.perf_counter() - t0
            u.log(f"{dialect}: {start + len(batch):,} / {count:,} polygons, {ingest_s:.1f} s")
        size = db_size_mb(ws, dialect)
        rng = np.random.default_rng(1)
        out: dict[str, Any] = {
            "ingest_s": u.rnd(ingest_s, 1),
            "polygons_per_s": int(count / ingest_s),
            "db_mb": u.rnd(size["total"], 1),
            "bytes_per_polygon": int(size["total"] * 1e6 / count),
            "db_detail_mb": {k: u.rnd(v, 1) for k, v in size.items() if k != "total"},
        }
        for side in (1024, 8192):
            index_ms, record_ms, hits = [], [], []
            t_side = time.perf_counter()
            for _ in range(queries):
                x0, y0 = rng.uniform(0, SIDE - side, 2)
                vp = Viewport(x0, y0, x0 + side, y0 + side)
                t0 = time.perf_counter()
                n = ws.annotations.count_in(image_id, vp)
                index_ms.append((time.perf_counter() - t0) * 1e3)
                hits.append(n)
                if side == 1024 or len(record_ms) < 100:  # full records of 8192² views are ~33k rows: sample
                    t0 = time.perf_counter()
                    got = ws.annotations.query_records(image_id, vp, limit=100_000)
                    record_ms.append((time.perf_counter() - t0) * 1e3)
                    assert len(got) == n, (len(got), n)
            u.log(f"{dialect}: {queries} viewports of {side}² in {time.perf_counter() - t_side:.0f} s")
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
    ap.add_argument("--queries", type=int, help="viewports per size (default 1,000)")
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--coords", choices=["float64", "float32", "int"], default="float64")
    args = ap.parse_args()
    quick = args.quick or u.quick_requested([])
    count = args.count or (500_000 if quick else 5_000_000)
    queries = args.queries or (200 if quick else 1000)
    backends = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    results = {b: run_backend(b, count, queries, args.coords) for b in backends}
    scale = count / 5_000_000  # the anchor and targets are for 5 M polygons
    met = {
        b: {
            "ingest": r["ingest_s"] <= TARGET_S * scale,
            "disk": r["db_mb"] <= TARGET_MB * scale,
            "p95_1024_records": r["viewport_1024"]["records_p95_ms"] <= TARGET_P95_MS,
        }
        for b, r in results.items()
    }
    u.emit(
        {
            "benchmark": "annotations",
            "quick": quick,
            "polygons": count,
            "coords": args.coords,
            "image": f"{SIDE}x{SIDE}",
            "queries_per_size": queries,
            "anchor": {"what": "TIAToolbox SQLiteStore, 5 M polygons", "ingest_s": ANCHOR_S, "disk_mb": ANCHOR_MB},
            "targets": {"ingest_s": TARGET_S, "disk_mb": TARGET_MB, "p95_1024_ms": TARGET_P95_MS, "scaled_by": scale},
            "ingest_ratio_vs_anchor": {b: u.rnd(ANCHOR_S * scale / r["ingest_s"], 2) for b, r in results.items()},
            "disk_ratio_vs_anchor": {b: u.rnd(ANCHOR_MB * scale / r["db_mb"], 2) for b, r in results.items()},
            "ingest_ratio_vs_target": {b: u.rnd(TARGET_S * scale / r["ingest_s"], 2) for b, r in results.items()},
            "disk_ratio_vs_target": {b: u.rnd(TARGET_MB * scale / r["db_mb"], 2) for b, r in results.items()},
            "results": results,
            "met": met,
            "machine": u.machine(),
        }
    )


if __name__ == "__main__":
    main()
