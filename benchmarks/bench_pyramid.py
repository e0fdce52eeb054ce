"""Pyramid build from a 1-gigapixel untiled image: gigavision vs ``vips tiffsave --tile --pyramid``.

Claim (DESIGN.md §6): ≥ 0.8× the speed of Debian's ``vips tiffsave --tile --pyramid``, peak RSS ≤ 1 GB.

Input: a plain baseline JPEG (40,000 × 25,000, made once from ``gigavision.demo.make_slide`` output), so
both contenders decode every pixel. Each contender runs in its own child process; its peak RSS is the
kernel's high-water mark for that process (``wait4``). Both write BigTIFF, 256² JPEG tiles at the same
quality. Usage::

    .venv/bin/python benchmarks/bench_pyramid.py [--quick] [--repeats N] [--input jpeg|tiff] [--no-ingest]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util as u

OURS = r"""
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from gigavision import open_image
from gigavision.images.pyramid import build_pyramid
src_path, out, q = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
t1 = time.perf_counter()
source = open_image(src_path)
opts = build_pyramid(src_path, source, out, tile_size=256, jpeg_quality=q)
source.close()
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "options": opts}))
"""

# The same tiffsave through the same libvips gigavision uses (pyvips-binary), without gigavision around it:
# separates gigavision's own overhead from the libvips version difference against Debian's CLI.
RAW_PYVIPS = r"""
import sys, pyvips
image = pyvips.Image.new_from_file(sys.argv[1], access="sequential")
image.tiffsave(sys.argv[2], tile=True, pyramid=True, tile_width=256, tile_height=256, compression="jpeg",
               Q=int(sys.argv[3]), bigtiff=True)
"""


def make_input(kind: str, width: int, height: int, quality: int) -> Path:
    """The untiled source both contenders must decode fully: baseline JPEG or uncompressed strip TIFF."""
    import pyvips

    suffix = "jpg" if kind == "jpeg" else "tif"
    out = u.BENCH / f"pyramid_input_{width}x{height}.{suffix}"
    if out.exists():
        return out
    slide = u.slide_path(width, height)
    u.log(f"writing untiled {kind} input {out.name} from the slide (once) ...")
    image = pyvips.Image.new_from_file(str(slide), access="sequential")
    tmp = out.with_name(out.name + ".tmp-input")
    if kind == "jpeg":
        image.jpegsave(str(tmp), Q=quality, optimize_coding=False, interlace=False, strip=True)
    else:
        image.tiffsave(str(tmp), tile=False, compression="none", bigtiff=True)
    tmp.rename(out)
    return out


def tiff_levels(path: Path) -> list[tuple[int, int]]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        return [(int(lvl.keyframe.imagewidth), int(lvl.keyframe.imagelength)) for lvl in series.levels]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20,000 × 12,500 (250 Mpx) instead of 1 Gpx")
    ap.add_argument("--width", type=int)
    ap.add_argument("--height", type=int)
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each contender (median reported)")
    ap.add_argument("--input", choices=("jpeg", "tiff"), default="jpeg", help="untiled source format")
    ap.add_argument("--quality", type=int, default=90, help="JPEG Q for both outputs (gigavision's default is 90)")
    ap.add_argument("--no-control", action="store_true", help="skip the raw-pyvips control contender")
    ap.add_argument("--no-ingest", action="store_true", help="skip the full `gigavision ingest` measurement")
    args = ap.parse_args()
    quick = args.quick or u.quick_requested([])
    width = args.width or (20_000 if quick else 40_000)
    height = args.height or (12_500 if quick else 25_000)
    u.require_tools("vips")

    src = make_input(args.input, width, height, 90)
    work = u.BENCH / "pyramid"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    u.log(f"input {src.name}: {src.stat().st_size / 1e6:.0f} MB; warming the page cache")
    u.warm_page_cache(src)

    ours_out, base_out = work / "ours.tif", work / "vips.tif"
    base_cmd = [
        "vips",
        "tiffsave",
        str(src),
        str(base_out),
        "--tile",
        "--pyramid",
        "--compression",
        "jpeg",
        "--tile-width",
        "256",
        "--tile-height",
        "256",
        "--bigtiff",
        "--Q",
        str(args.quality),
    ]
    ours_cmd = [u.PY, "-c", OURS, str(src), str(ours_out), str(args.quality)]
    raw_out = work / "raw.tif"
    raw_cmd = [u.PY, "-c", RAW_PYVIPS, str(src), str(raw_out), str(args.quality)]
    base_runs: list[u.ChildResult] = []
    ours_runs: list[u.ChildResult] = []
    raw_runs: list[u.ChildResult] = []
    inner: list[dict[str, float]] = []
    order = ["vips", "ours"] + ([] if args.no_control else ["raw"])
    for i in range(args.repeats):
        for name in order if i % 2 == 0 else order[::-1]:
            if name == "vips":
                base_out.unlink(missing_ok=True)
                r = u.run_child(base_cmd).check()
                base_runs.append(r)
            elif name == "raw":
                r = u.run_child(raw_cmd).check()
                raw_out.unlink(missing_ok=True)
                raw_runs.append(r)
            else:
                ours_out.unlink(missing_ok=True)
                r = u.run_child(ours_cmd).check()
                ours_runs.append(r)
                inner.append(json.loads(r.stdout.strip().splitlines()[-1]))
            u.log(
                f"  run {i + 1} {name:5}: {r.wall_s:6.1f} s wall, {r.user_s + r.sys_s:6.1f} s cpu, "
                f"peak RSS {r.peak_rss_mb:7.0f} MB"
            )

    ingest: dict[str, object] | None = None
    if not args.no_ingest:
        ws = work / "ws"
        u.run_child([u.GIGAVISION, "init", str(ws)]).check()
        r = u.run_child([u.GIGAVISION, "-w", str(ws), "ingest", str(src), "--json"]).check()
        summary = json.loads(r.stdout)["summary"]
        ingest = {
            "wall_s": u.rnd(r.wall_s, 2),
            "cpu_s": u.rnd(r.user_s + r.sys_s, 1),
            "peak_rss_mb": u.rnd(r.peak_rss_mb, 0),
            "speed_ratio": u.rnd(statistics.median(x.wall_s for x in base_runs) / r.wall_s),
            "added": summary["added"],
            "note": "whole `gigavision ingest` CLI: start-up, sha256, blob copy+fsync, pyramid, thumbnail, mask, DB",
        }
        u.log(f"  ingest     : {r.wall_s:6.1f} s wall, peak RSS {r.peak_rss_mb:7.0f} MB")
        shutil.rmtree(ws, ignore_errors=True)

    ours_levels, base_levels = tiff_levels(ours_out), tiff_levels(base_out)
    ours_s = statistics.median(r.wall_s for r in ours_runs)
    base_s = statistics.median(r.wall_s for r in base_runs)
    ours_rss = max(r.peak_rss_mb for r in ours_runs)
    ratio = base_s / ours_s
    result = {
        "benchmark": "pyramid",
        "claim": "pyramid build from a 1-gigapixel image: >= 0.8x vips tiffsave speed, peak RSS <= 1 GB",
        "quick": quick,
        "input": {
            "format": args.input,
            "width": width,
            "height": height,
            "megapixels": round(width * height / 1e6),
            "mb": u.rnd(src.stat().st_size / 1e6, 0),
        },
        "ours": {
            "wall_s": u.rnd(ours_s, 2),
            "build_s": u.rnd(statistics.median(x["build_s"] for x in inner), 2),
            "import_s": u.rnd(statistics.median(x["import_s"] for x in inner), 2),
            "cpu_s": u.rnd(statistics.median(r.user_s + r.sys_s for r in ours_runs), 1),
            "peak_rss_mb": u.rnd(ours_rss, 0),
            "output_mb": u.rnd(ours_out.stat().st_size / 1e6, 0),
            "levels": len(ours_levels),
            "libvips": u.pyvips_version(),
            "runs_s": [u.rnd(r.wall_s, 2) for r in ours_runs],
        },
        "baseline": {
            "tool": " ".join([*base_cmd[:2], "IN", "OUT", *base_cmd[4:]]),
            "wall_s": u.rnd(base_s, 2),
            "cpu_s": u.rnd(statistics.median(r.user_s + r.sys_s for r in base_runs), 1),
            "peak_rss_mb": u.rnd(max(r.peak_rss_mb for r in base_runs), 0),
            "output_mb": u.rnd(base_out.stat().st_size / 1e6, 0),
            "levels": len(base_levels),
            "libvips": u.vips_cli_version(),
            "runs_s": [u.rnd(r.wall_s, 2) for r in base_runs],
        },
        "control_same_libvips": None
        if not raw_runs
        else {
            "what": "pyvips new_from_file(sequential).tiffsave(same options), gigavision's libvips, no gigavision",
            "wall_s": u.rnd(statistics.median(r.wall_s for r in raw_runs), 2),
            "cpu_s": u.rnd(statistics.median(r.user_s + r.sys_s for r in raw_runs), 1),
            "peak_rss_mb": u.rnd(max(r.peak_rss_mb for r in raw_runs), 0),
            "ours_overhead_pct": u.rnd(100 * (ours_s / statistics.median(r.wall_s for r in raw_runs) - 1), 1),
            "runs_s": [u.rnd(r.wall_s, 2) for r in raw_runs],
        },
        "ingest": ingest,
        "speed_ratio": u.rnd(ratio),
        "targets": {"speed_ratio_min": 0.8, "peak_rss_mb_max": 1024},
        "met": {"speed": ratio >= 0.8, "rss": ours_rss <= 1024},
        "same_levels": ours_levels == base_levels,
        "machine": u.machine(),
    }
    shutil.rmtree(work, ignore_errors=True)
    u.emit(result)


if __name__ == "__main__":
    main()
