"""Crash consistency of ingest: SIGKILL ``gigavision ingest`` at random points, then ``gigavision fsck --repair``.

Until ``--kills`` (default 50) kills, each run ingests one new file in a child process and SIGKILLs it at a random
moment of its work: once its scratch folder appears (it has started writing), after a delay drawn uniformly from 0 to
1.1x the time that kind of file takes to ingest uninterrupted (measured first), so kills land in decoding,
pyramid building and thumbnails alike; every fifth kill instead lands the moment the original starts being
copied into the blob store (the publish window, blob copy -> folder rename -> commit, lasts milliseconds: random
delays almost never hit it), or up to 50 ms after. A run that ends before its kill counts as completed and
another file is tried. Inputs are distinct files made from scikit-image's bundled photographs: most 400-2000 px
JPEG/PNG, every fourth a 5,000-6,000 px JPEG mosaic that builds a pyramid.

Then ``gigavision fsck --json`` (the report), ``gigavision fsck --repair --json`` (timed) and an independent
check that does not use fsck's code: every image row's original has its recorded size and sha256, its pyramid's
tiles lie inside the file, its thumbnail and mask exist; no byte in ``blobs/`` or ``pyramids/`` belongs to no
row, and no temp file is left anywhere. Finally every input is ingested again in one uninterrupted run
(all must be added or duplicate) and fsck must pass. Usage::

    .venv/bin/python benchmarks/bench_ingest_crashes.py [--quick] [--kills N] [--seed S]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util as u

SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")
LARGE_EVERY = 4
PUBLISH_EVERY = 5  # every fifth kill lands as the original is being copied into the blob store
PUBLISH_SPREAD_S = 0.05  # ... or up to this long after it started


def make_inputs(folder: Path, count: int, seed: int) -> list[Path]:
    """``count`` distinct image files (every LARGE_EVERY-th a 5,000-6,000 px mosaic that needs a pyramid)."""
    import numpy as np
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in SOURCES]
    paths = []
    for i in range(count):
        if i % LARGE_EVERY == LARGE_EVERY - 1:
            side = int(rng.integers(5000, 6001))
            canvas = Image.new("RGB", (side, int(side * rng.uniform(0.7, 1.0))))
            step = 500
            for y in range(0, canvas.height, step):
                for x in range(0, canvas.width, step):
                    photo = photos[int(rng.integers(len(photos)))]
                    canvas.paste(photo.resize((step, step)).rotate(int(rng.integers(4)) * 90), (x, y))
            path = folder / f"{i:03d}_mosaic.jpg"
            canvas.save(path, "JPEG", quality=int(rng.integers(80, 95)))
        else:
            photo = photos[i % len(photos)]
            w, h = (int(v) for v in rng.integers(400, 2001, size=2))
            im = photo.resize((w, h), Image.Resampling.BICUBIC)
            arr = np.asarray(im).copy()
            arr[0, 0] = rng.integers(0, 256, size=3)  # distinct bytes even when sizes repeat
            ext = "png" if i % 2 else "jpg"
            path = folder / f"{i:03d}_{SOURCES[i % len(SOURCES)]}.{ext}"
            Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def ingest_cmd(ws: Path, path: Path) -> list[str]:
    return [u.GIGAVISION, "-w", str(ws), "ingest", str(path), "--json"]


def scratches(ws: Path) -> set[Path]:
    return {p for p in (ws / "pyramids").glob(".tmp-*") if p.is_dir()}


def blob_files(ws: Path) -> set[Path]:
    return set((ws / "blobs").glob("??/*")) | set((ws / "blobs").glob("??/.*"))


def one_run(ws: Path, path: Path, work_s: float, rng: Any, *, at_publish: bool = False) -> tuple[str, float]:
    """Start an ingest of ``path``; kill it at a random point of its work (``at_publish``: the moment its
    original starts being copied into the blob store). Returns (outcome, delay)."""
    earlier, earlier_blobs = scratches(ws), blob_files(ws)  # left by earlier kills
    proc = subprocess.Popen(ingest_cmd(ws, path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not scratches(ws) - earlier:  # its own scratch: it started writing; a kill can leave something
            if proc.poll() is not None or time.monotonic() > deadline:
                return "completed", 0.0
            time.sleep(0.001)
        if at_publish:  # the publish window (blob copy, folder rename, commit) is too short to hit by chance
            start = time.monotonic()
            while not blob_files(ws) - earlier_blobs:
                if proc.poll() is not None or time.monotonic() > deadline:
                    return "completed", time.monotonic() - start
                time.sleep(0.0005)
            try:  # 0-50 ms on: mid-copy, after the blob's rename, after the folder's, after the commit
                proc.wait(timeout=float(rng.uniform(0, PUBLISH_SPREAD_S)))
                return "completed", time.monotonic() - start
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                return "killed_at_publish", time.monotonic() - start
        delay = float(rng.uniform(0, 1.1 * work_s))
        try:
            proc.wait(timeout=delay)
            return "completed", delay
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            return "killed", delay
    finally:
        proc.wait()


def calibrate(ws: Path, path: Path) -> float:
    """Seconds from the scratch folder appearing to the end of an uninterrupted ingest of ``path``."""
    proc = subprocess.Popen(ingest_cmd(ws, path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not scratches(ws) and proc.poll() is None:
        time.sleep(0.001)
    start = time.monotonic()
    proc.wait()
    return time.monotonic() - start


def fsck(ws: Path, *args: str) -> tuple[int, dict[str, Any], float]:
    start = time.perf_counter()
    proc = subprocess.run([u.GIGAVISION, "-w", str(ws), "fsck", "--json", *args], capture_output=True, text=True)
    return proc.returncode, json.loads(proc.stdout), time.perf_counter() - start


def leftovers(ws: Path) -> dict[str, int]:
    """What crashes left, by kind, from the files alone (before fsck)."""
    rows = row_ids(ws)
    out = {"scratch_folders": 0, "blob_temp_files": 0, "orphan_blobs": 0, "orphan_folders": 0}
    out["scratch_folders"] = sum(1 for p in (ws / "pyramids").glob(".tmp-*") if p.is_dir())
    out["blob_temp_files"] = sum(1 for p in (ws / "blobs").glob("??/.*.tmp-*"))
    out["orphan_blobs"] = sum(1 for p in (ws / "blobs").glob("??/[!.]*") if p.name.split(".")[0] not in rows)
    out["orphan_folders"] = sum(1 for p in (ws / "pyramids").glob("??/*") if p.name not in rows)
    return out


def row_ids(ws: Path) -> set[str]:
    with sqlite3.connect(ws / "gigavision.db") as db:
        return {r[0] for r in db.execute("select id from images")}


def verify(ws: Path) -> dict[str, Any]:
    """Independent of fsck: rows whose files are missing or short, and bytes no row owns."""
    import tifffile

    with sqlite3.connect(ws / "gigavision.db") as db:
        rows = db.execute("select id, blob_key, size_bytes, pyramid from images").fetchall()
    broken: list[str] = []
    owned: set[Path] = set()
    for image_id, key, size, pyramid in rows:
        blob = ws / "blobs" / key
        owned.add(blob)
        if not blob.is_file() or blob.stat().st_size != size:
            broken.append(f"{image_id[:12]} original missing or short")
        elif hashlib.sha256(blob.read_bytes()).hexdigest() != image_id:
            broken.append(f"{image_id[:12]} original damaged")
        folder = ws / "pyramids" / image_id[:2] / image_id
        wanted = ["thumbnail.jpg", "mask.png"] + (["pyramid.tif"] if pyramid else [])
        for name in wanted:
            path = folder / name
            owned.add(path)
            if not path.is_file() or path.stat().st_size == 0:
                broken.append(f"{image_id[:12]} {name} missing")
            elif name == "pyramid.tif":
                with tifffile.TiffFile(path) as tif:
                    end = max(
                        o + n for page in tif.pages for o, n in zip(page.dataoffsets, page.databytecounts, strict=False)
                    )
                if end > path.stat().st_size:
                    broken.append(f"{image_id[:12]} pyramid short")
    stray = [
        p
        for top in (ws / "blobs", ws / "pyramids")
        for p in top.rglob("*")
        if p.is_file() and p not in owned and p.name not in (".publish.lock", ".meta.lock")
    ]
    temps = [p for p in ws.rglob("*") if ".tmp-" in p.name]
    return {
        "rows": len(rows),
        "rows_broken": len(broken),
        "broken": broken[:10],
        "orphan_files": len(stray),
        "orphan_bytes": sum(p.stat().st_size for p in stray),
        "temp_entries": len(temps),
        "temp_bytes": sum(p.stat().st_size for p in temps if p.is_file()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="10 kills")
    args = parser.parse_args()
    import numpy as np

    kills_wanted = 10 if u.quick_requested() else args.kills
    rng = np.random.default_rng(args.seed)
    root = u.BENCH / "ingest-crashes"
    shutil.rmtree(root, ignore_errors=True)
    ws = root / "ws"
    subprocess.run([u.GIGAVISION, "init", str(ws)], check=True, capture_output=True)
    u.log("making inputs ...")
    pool = make_inputs(root / "inputs", kills_wanted * 2 + 4, args.seed)
    large = [p for p in pool if "mosaic" in p.name]
    small = [p for p in pool if "mosaic" not in p.name]
    # calibration: one of each kind, uninterrupted (they stay in the workspace as ordinary rows)
    work = {"small": calibrate(ws, small.pop()), "large": calibrate(ws, large.pop())}
    u.log(f"uninterrupted work: small {work['small']:.2f} s, large {work['large']:.2f} s")
    outcomes = {"killed": 0, "killed_at_publish": 0, "completed": 0}
    delays: list[float] = []
    used: list[Path] = []
    kills = 0
    while kills < kills_wanted and (small or large):
        kind = "large" if large and (len(used) % LARGE_EVERY == LARGE_EVERY - 1 or not small) else "small"
        path = (large if kind == "large" else small).pop()
        used.append(path)
        outcome, delay = one_run(ws, path, work[kind], rng, at_publish=kills % PUBLISH_EVERY == PUBLISH_EVERY - 1)
        outcomes[outcome] += 1
        kills = outcomes["killed"] + outcomes["killed_at_publish"]
        if outcome == "killed":
            delays.append(delay / work[kind])
        u.log(f"{path.name}: {outcome} after {delay:.3f} s ({kills}/{kills_wanted} kills)")
    left = leftovers(ws)
    before = verify(ws)
    code_report, report, _ = fsck(ws)
    code_repair, repaired, repair_s = fsck(ws, "--repair")
    after = verify(ws)
    code_again, again, _ = fsck(ws)
    # the workspace is usable: every input ingests (added, or duplicate for those committed before the kill)
    reingest = subprocess.run(
        [u.GIGAVISION, "-w", str(ws), "ingest", *map(str, used), "--json"], capture_output=True, text=True
    )
    statuses = [item["status"] for item in json.loads(reingest.stdout)["images"]] if reingest.stdout else []
    code_final, final, _ = fsck(ws)
    result = {
        "bench": "ingest_crashes",
        "machine": u.machine(),
        "kills": kills,
        "kills_at_random_points": outcomes["killed"],
        "kills_at_publish": outcomes["killed_at_publish"],
        "completed_before_kill": outcomes["completed"],
        "kill_point_fraction_of_work": {
            "min": u.rnd(min(delays, default=0)),
            "median": u.rnd(float(np.median(delays)) if delays else 0),
            "max": u.rnd(max(delays, default=0)),
        },
        "uninterrupted_work_s": {k: u.rnd(v) for k, v in work.items()},
        "left_by_crashes": left,
        "before_repair": before,
        "fsck_report": {
            "exit": code_report,
            "problems": report["problems"],
            "by_check": _by_check(report),
        },
        "fsck_repair": {
            "exit": code_repair,
            "seconds": u.rnd(repair_s),
            "repaired": repaired["repaired"],
            "remaining": repaired["remaining"],
            "freed_bytes": repaired["freed_bytes"],
        },
        "after_repair": after,
        "fsck_after_exit": code_again,
        "fsck_after_problems": again["problems"],
        "reingest": {s: statuses.count(s) for s in sorted(set(statuses))},
        "fsck_final_exit": code_final,
        "fsck_final_problems": final["problems"],
    }
    result["met"] = {
        "zero_rows_missing_or_short": after["rows_broken"] == 0,
        "zero_orphan_bytes": after["orphan_bytes"] == 0 and after["temp_bytes"] == 0 and after["temp_entries"] == 0,
        "fsck_clean_after_repair": code_again == 0 and again["problems"] == 0,
        "reingest_ok": statuses.count("rejected") == 0 and len(statuses) == len(used) and code_final == 0,
    }
    u.emit(result)


def _by_check(report: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in report["findings"]:
        key = f"{f['check']}:{f['problem']}"
        counts[key] = counts.get(key, 0) + 1
    return counts


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
