"""Ingest of a folder of 1,000 small JPEGs: ``gigavision ingest DIR --recursive --json`` vs a bare loop.

The baseline is the least any ingester must do per file, in plain Python: copy the file into a store,
sha256 it, decode it fully with Pillow, make a 512-px thumbnail and save it as JPEG. Both run as child
processes over the same files in the same run, start-up included; the ratio is ours ÷ baseline images/s.

Inputs: random 256–1024 px crops and resizes of scikit-image's bundled photographs (astronaut, coffee,
chelsea, rocket, hubble_deep_field, retina), each saved at a random JPEG quality so every file is distinct.
Built once in ``.bench/``. Usage::

    .venv/bin/python benchmarks/bench_ingest.py [--quick] [--count N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util as u

SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina")
THUMB = 512


def make_inputs(count: int, seed: int = 0) -> Path:
    """``count`` distinct JPEGs (256–1024 px sides) in .bench/ingest-src-COUNT (built once)."""
    import numpy as np
    from PIL import Image
    from skimage import data

    folder = u.BENCH / f"ingest-src-{count}"
    stamp = folder / ".complete"
    if stamp.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    u.log(f"making {count} distinct JPEGs from scikit-image's bundled photographs (once) ...")
    rng = np.random.default_rng(seed)
    images = {name: Image.fromarray(getattr(data, name)()).convert("RGB") for name in SOURCES}
    seen: set[str] = set()
    i = 0
    while i < count:
        name = SOURCES[i % len(SOURCES)]
        im = images[name]
        out_w, out_h = (int(v) for v in rng.integers(256, 1025, size=2))
        # a random crop of random size (at least half the output, at most the whole image), resized
        cw = int(rng.integers(max(32, min(im.width, out_w) // 2), im.width + 1))
        ch = int(rng.integers(max(32, min(im.height, out_h) // 2), im.height + 1))
        x, y = int(rng.integers(0, im.width - cw + 1)), int(rng.integers(0, im.height - ch + 1))
        tile = im.crop((x, y, x + cw, y + ch)).resize((out_w, out_h), Image.Resampling.BICUBIC)
        path = folder / f"{i:04d}_{name}.jpg"
        tile.save(path, "JPEG", quality=int(rng.integers(80, 96)))
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen:  # never happens in practice; keeps "distinct bytes" a guarantee
            path.unlink()
            continue
        seen.add(digest)
        i += 1
    stamp.touch()
    return folder


BASELINE = r"""
import hashlib, os, shutil, sys, time
from pathlib import Path
t0 = time.perf_counter()
from PIL import Image
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
(dst / "blobs").mkdir(parents=True, exist_ok=True)
(dst / "thumbs").mkdir(parents=True, exist_ok=True)
n = 0
for path in sorted(p for p in src.rglob("*") if p.is_file() and not p.name.startswith(".")):
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    sha = h.hexdigest()
    shutil.copyfile(path, dst / "blobs" / sha)
    with Image.open(path) as im:
        im.load()                       # full decode
        im = im.convert("RGB")
        im.thumbnail((512, 512), Image.Resampling.LANCZOS)
        im.save(dst / "thumbs" / (sha + ".jpg"), "JPEG", quality=85)
    n += 1
print(n, time.perf_counter() - t0)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 images instead of 1,000")
    ap.add_argument("--count", type=int)
    args = ap.parse_args()
    quick = args.quick or u.quick_requested([])
    count = args.count or (200 if quick else 1000)

    src = make_inputs(count)
    files = [p for p in src.iterdir() if p.is_file() and not p.name.startswith(".")]
    total_mb = sum(p.stat().st_size for p in files) / 1e6
    work = u.BENCH / "ingest"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    u.log(f"{len(files)} JPEGs, {total_mb:.0f} MB; warming the page cache")
    u.warm_page_cache(src)

    # baseline first, then ours (each in a fresh child process, start-up included)
    base = u.run_child([u.PY, "-c", BASELINE, str(src), str(work / "baseline")]).check()
    base_n = int(base.stdout.split()[0])
    u.log(
        f"  baseline : {base.wall_s:6.1f} s, {base_n / base.wall_s:6.1f} images/s, peak RSS {base.peak_rss_mb:.0f} MB"
    )

    ws = work / "ws"
    u.run_child([u.GIGAVISION, "init", str(ws)]).check()
    ours = u.run_child([u.GIGAVISION, "-w", str(ws), "ingest", str(src), "--recursive", "--json"]).check()
    summary = json.loads(ours.stdout)["summary"]
    u.log(
        f"  gigavision: {ours.wall_s:6.1f} s, {len(files) / ours.wall_s:6.1f} images/s, "
        f"peak RSS {ours.peak_rss_mb:.0f} MB, {summary}"
    )
    if summary["added"] != len(files) or base_n != len(files):
        raise SystemExit(f"expected {len(files)} images added, got {summary} / baseline {base_n}")

    ours_ips, base_ips = len(files) / ours.wall_s, base_n / base.wall_s
    result = {
        "benchmark": "ingest",
        "claim": "ingest of 1,000 small JPEGs: images/s vs a bare copy+sha256+decode+thumbnail loop",
        "quick": quick,
        "images": len(files),
        "input_mb": u.rnd(total_mb, 1),
        "ours": {
            "command": "gigavision -w WS ingest DIR --recursive --json",
            "wall_s": u.rnd(ours.wall_s, 2),
            "cpu_s": u.rnd(ours.user_s + ours.sys_s, 1),
            "images_per_s": u.rnd(ours_ips, 1),
            "peak_rss_mb": u.rnd(ours.peak_rss_mb, 0),
            "summary": summary,
        },
        "baseline": {
            "what": "python loop: sha256 + copyfile + Pillow full decode + 512px LANCZOS thumbnail + JPEG save",
            "wall_s": u.rnd(base.wall_s, 2),
            "cpu_s": u.rnd(base.user_s + base.sys_s, 1),
            "images_per_s": u.rnd(base_ips, 1),
            "peak_rss_mb": u.rnd(base.peak_rss_mb, 0),
        },
        "ratio": u.rnd(ours_ips / base_ips),
        "machine": u.machine(),
    }
    shutil.rmtree(work, ignore_errors=True)
    u.emit(result)


if __name__ == "__main__":
    main()
