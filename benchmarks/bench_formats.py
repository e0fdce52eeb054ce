"""Import and export at scale, per format: 100,000 boxes over 10,000 images (issues 3 and 16).

Formats: ``coco``, ``cvat`` and ``labelstudio`` (``--format``, repeatable; default all three). One JSON line
per format; a format whose module is not in this checkout is reported as skipped, with the reason.
Each step runs as a child process (Python start-up included; exact peak RSS of that child from ``wait4``):

  export      ``gigavision -w A export FMT OUT --json``: the live workspace, streamed image by image
  import      ``gigavision -w B import FMT OUT --json`` into a fresh workspace that holds the same images
              (matched by file name), one transaction per image
  reference   COCO only: pycocotools ``COCO(OUT/annotations.json)`` only parses and indexes the file, the
              floor any COCO reader pays (our import also validates every record and stores it);
              ``import_vs_reference`` is our import time ÷ its time
  round trip  B is exported again and compared with A's export byte for byte, every file
              (``round_trip_identical``)

Fixture: image rows are inserted directly (``--images`` 1024×768 images; an export or import of these formats
never reads pixels), then ``--boxes-per-image`` random boxes per image through ``AnnotationStore.add``
(fractional coordinates, 5 classes). Workspace A is built once and shared by the formats; each format
imports into its own B. Built fresh in ``.bench/formats-<pid>/`` on every run and removed at the end.

Usage: .venv/bin/python benchmarks/bench_formats.py [--quick] [--format coco|cvat|labelstudio ...]
                                                    [--images N] [--boxes-per-image K] [--db sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util as u

PG_ADMIN = "postgresql://127.0.0.1:5432/test"
LABELS = ("car", "person", "roof", "tree", "window")
FORMATS = ("coco", "cvat", "labelstudio")
WIDTH, HEIGHT = 1024, 768


def image_rows(count: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        sha = hashlib.sha256(f"bench-formats-{i}".encode()).hexdigest()
        rows.append(
            {
                "id": sha,
                "name": f"img_{i:06d}.jpg",
                "source_path": None,
                "size_bytes": 100_000,
                "blob_key": f"{sha[:2]}/{sha}.jpg",
                "pyramid": None,
                "reader": "pil",
                "format": "JPEG",
                "width": WIDTH,
                "height": HEIGHT,
                "levels": [{"width": WIDTH, "height": HEIGHT, "downsample": 1.0}],
                "bands": 3,
                "dtype": "uint8",
                "meta": {},
            }
        )
    return rows


def make_workspace(root: Path, db_url: str, rows: list[dict[str, Any]], boxes_per_image: int) -> float:
    """A workspace with ``rows`` as images and (unless 0) that many boxes on each; returns the seconds taken."""
    from sqlalchemy import insert

    import gigavision as gv
    from gigavision.annotations import Annotations
    from gigavision.store.schema import ImageRow

    t0 = time.perf_counter()
    ws = gv.init_workspace(root, db_url=db_url)
    with ws.engine.begin() as conn:
        conn.execute(insert(ImageRow), rows)
    if boxes_per_image:
        for name in LABELS:
            ws.labels.set(name, "box")
        rng = np.random.default_rng(0)
        for n, row in enumerate(rows):
            xy = rng.uniform(0, [WIDTH - 100, HEIGHT - 100], (boxes_per_image, 2)).round(2)
            wh = rng.uniform(4, 100, (boxes_per_image, 2)).round(2)
            labels = rng.choice(LABELS, boxes_per_image).tolist()
            boxes = Annotations.from_boxes(np.hstack([xy, xy + wh]), labels, status="accepted", source="bench")
            ws.annotations.add(row["id"], boxes, "bench")
            if (n + 1) % 2000 == 0:
                u.log(f"  fixture: {n + 1:,} / {len(rows):,} images annotated")
    ws.close()
    return time.perf_counter() - t0


def reference_load(path: Path) -> u.ChildResult:
    code = f"from pycocotools.coco import COCO\nc = COCO({str(path)!r})\nprint(len(c.anns))"
    return u.run_child([u.PY, "-c", code]).check()


def missing_reason(fmt: str) -> str | None:
    """Why ``fmt`` cannot run in this checkout (its module is not there yet), or None."""
    module = f"gigavision.formats.{fmt}"
    if importlib.util.find_spec(module) is None:
        return f"{module} does not exist in this checkout"
    return None


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def step(result: u.ChildResult, boxes: int, counts: dict[str, Any]) -> dict[str, Any]:
    return {
        "wall_s": u.rnd(result.wall_s, 2),
        "peak_rss_mb": u.rnd(result.peak_rss_mb, 1),
        "boxes_per_s": int(boxes / result.wall_s),
        **counts,
    }


def run_format(fmt: str, root: Path, b_url: str, rows: list[dict[str, Any]], total_boxes: int) -> dict[str, Any]:
    """Export A as ``fmt``, import it into a fresh B, export B again; the figures of one format."""
    make_workspace(root / f"b-{fmt}", b_url, rows, 0)
    out, again = root / f"out-{fmt}", root / f"again-{fmt}"
    u.log(f"{fmt}: exporting ...")
    export = u.run_child([u.GIGAVISION, "-w", str(root / "a"), "export", fmt, str(out), "--json"])
    if export.returncode != 0:
        return {"error": f"export failed ({export.returncode}): {export.stderr.strip()[-500:]}"}
    exported = json.loads(export.stdout)
    u.log(f"{fmt}: export {export.wall_s:.1f}s; importing ...")
    imp = u.run_child([u.GIGAVISION, "-w", str(root / f"b-{fmt}"), "import", fmt, str(out), "--json"])
    if imp.returncode not in (0, 1):
        return {"error": f"import failed ({imp.returncode}): {imp.stderr.strip()[-500:]}"}
    report = json.loads(imp.stdout)
    u.log(f"{fmt}: import {imp.wall_s:.1f}s; round trip ...")
    second = u.run_child([u.GIGAVISION, "-w", str(root / f"b-{fmt}"), "export", fmt, str(again), "--json"])
    if second.returncode != 0:
        return {"error": f"second export failed ({second.returncode}): {second.stderr.strip()[-500:]}"}
    first_files = files_of(out)
    figures: dict[str, Any] = {
        "files": len(first_files),
        "file_mb": u.rnd(sum(len(v) for v in first_files.values()) / 1e6, 1),
        "export": step(export, total_boxes, {"annotations": exported["annotations"]}),
        "import": step(
            imp,
            total_boxes,
            {
                "annotations": report["annotations"],
                "rejected": report["rejected_count"],
                "unmatched": len(report["unmatched"]),
            },
        ),
    }
    if fmt == "coco":
        reference = reference_load(out / "annotations.json")
        figures["reference_pycocotools_load"] = {
            "wall_s": u.rnd(reference.wall_s, 2),
            "peak_rss_mb": u.rnd(reference.peak_rss_mb, 1),
        }
        figures["import_vs_reference"] = u.rnd(imp.wall_s / reference.wall_s, 2)
    figures["round_trip_identical"] = files_of(again) == first_files
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1,000 images, 10,000 boxes")
    ap.add_argument(
        "--format", dest="formats", action="append", choices=FORMATS, help="repeatable; default: all of them"
    )
    ap.add_argument("--images", type=int, help="number of images (default 10,000)")
    ap.add_argument("--boxes-per-image", type=int, default=10)
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    args = ap.parse_args()
    quick = args.quick or u.quick_requested([])
    count = args.images or (1_000 if quick else 10_000)
    total_boxes = count * args.boxes_per_image
    formats = list(dict.fromkeys(args.formats or FORMATS))

    root = u.BENCH / f"formats-{os.getpid()}"  # its own folder: a second run at the same time cannot delete it
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    pg_names: list[str] = []

    def db_url() -> str:
        if args.db == "sqlite":
            return ""
        import psycopg

        name = f"gv_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        pg_names.append(name)
        return f"postgresql+psycopg://127.0.0.1:5432/{name}"

    base = {"benchmark": "formats", "quick": quick, "db": args.db, "images": count, "boxes": total_boxes}
    try:
        runnable = []
        for fmt in formats:
            reason = missing_reason(fmt)
            if reason:
                u.emit({**base, "format": fmt, "skipped": reason})
            else:
                runnable.append(fmt)
        if not runnable:
            return
        rows = image_rows(count)
        u.log(f"fixture: {count:,} images x {args.boxes_per_image} boxes on {args.db} ...")
        build_s = make_workspace(root / "a", db_url(), rows, args.boxes_per_image)
        u.log(f"fixture ready in {build_s:.0f}s")
        for fmt in runnable:
            figures = run_format(fmt, root, db_url(), rows, total_boxes)
            u.emit({**base, "format": fmt, **figures, "fixture_build_s": u.rnd(build_s, 1), "machine": u.machine()})
    finally:
        if pg_names:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                for name in pg_names:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
