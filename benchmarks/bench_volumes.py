"""Ingest of a 512 × 512 × 300 CT series (int16, 300 DICOM files), and the read API on the stored volume.

Ingest: ``gigavision -w WS ingest DIR --json`` in a child process (start-up included), its exact peak RSS
(the claim: ≤ 1.5 GB) and wall time, against the least any tool does in a child process too: read every
slice with pydicom, sort by position, stack into one int16 array in HU and save it as ``.npy`` (what a
hand-written loader does before training; it holds the whole volume in memory).

Reads (in this process, after the ingest, page cache warm): random 96³ blocks (``Volume.read_block``, what a
3D patch sampler asks for) with the process's RSS growth over 200 of them, a 4× block-mean of the whole volume,
and one display slice per plane (what a slice tile is rendered from).

Input: tests/volumes.py's CT phantom (organ ellipsoids with texture, HU) made at 128 × 128 × 75 and upsampled,
plus per-slice noise; written once in ``.bench/volume-512x512x300``. Usage::

    .venv/bin/python benchmarks/bench_volumes.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import _util as u

BASELINE = r"""
import sys, time
from pathlib import Path
import numpy as np, pydicom
t0 = time.perf_counter()
files = sorted(Path(sys.argv[1]).glob("*.dcm"))
headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
iop = np.array(headers[0].ImageOrientationPatient, float)
normal = np.cross(iop[:3], iop[3:])
order = np.argsort([np.dot(np.array(h.ImagePositionPatient, float), normal) for h in headers])
volume = np.empty((len(files), int(headers[0].Rows), int(headers[0].Columns)), np.int16)
for z, i in enumerate(order):
    ds = pydicom.dcmread(files[i])
    volume[z] = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
np.save(sys.argv[2], volume)
print(time.perf_counter() - t0)
"""


def series_folder(shape: tuple[int, int, int]) -> Path:
    nz, ny, nx = shape
    return u.BENCH / f"volume-{nx}x{ny}x{nz}"


def make_series(shape: tuple[int, int, int]) -> Path:
    """The phantom as a DICOM series in .bench/ (built once, by a child process: Python's subprocess vforks, so a
    child's peak RSS as wait4 reports it starts from the driver's own high-water mark, which must stay small)."""
    folder = series_folder(shape)
    if not (folder / ".complete").exists():
        u.run_child([u.PY, __file__, "--make", str(shape[0])]).check()
    return folder


def write_phantom_series(shape: tuple[int, int, int]) -> None:
    import numpy as np
    from scipy.ndimage import zoom
    from tests.volumes import phantom, write_series

    nz, ny, nx = shape
    folder = series_folder(shape)
    shutil.rmtree(folder, ignore_errors=True)
    u.log(f"writing a {nx} x {ny} x {nz} CT phantom series (once) ...")
    small = phantom((nz // 4, ny // 4, nx // 4), seed=7).astype(np.float32)
    hu = zoom(small, (nz / small.shape[0], ny / small.shape[1], nx / small.shape[2]), order=1)
    hu += np.random.default_rng(7).normal(0, 8, hu.shape).astype(np.float32)
    write_series(folder, np.clip(np.rint(hu), -1024, 3071).astype(np.int16), spacing=0.7, step=2.5, seed=7)
    (folder / ".complete").touch()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="512 x 512 x 100 instead of x 300")
    ap.add_argument("--make", type=int, help=argparse.SUPPRESS)  # the child that writes the input series
    args = ap.parse_args()
    if args.make:
        write_phantom_series((args.make, 512, 512))
        return
    quick = args.quick or u.quick_requested([])
    shape = (100 if quick else 300, 512, 512)
    src = make_series(shape)
    work = u.BENCH / "volumes"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    u.warm_page_cache(src)
    input_mb = sum(p.stat().st_size for p in src.glob("*.dcm")) / 1e6

    base = u.run_child([u.PY, "-c", BASELINE, str(src), str(work / "baseline.npy")]).check()
    u.log(f"  baseline  : {base.wall_s:6.1f} s, peak RSS {base.peak_rss_mb:.0f} MB")
    ws_path = work / "ws"
    u.run_child([u.GIGAVISION, "init", str(ws_path)]).check()
    ours = u.run_child([u.GIGAVISION, "-w", str(ws_path), "ingest", str(src), "--json"]).check()
    images = json.loads(ours.stdout)["images"]
    u.log(f"  gigavision: {ours.wall_s:6.1f} s, peak RSS {ours.peak_rss_mb:.0f} MB, {[i['status'] for i in images]}")
    if [i["status"] for i in images] != ["added"] or images[0]["depth"] != shape[0]:
        raise SystemExit(f"expected one volume of {shape[0]} slices, got {images}")

    import numpy as np

    import gigavision as gv

    with gv.open_workspace(ws_path) as ws:
        volume = ws.open_volume(images[0]["id"])
        if not np.array_equal(volume.voxels, np.load(work / "baseline.npy", mmap_mode="r")):
            raise SystemExit("the stored volume differs from the baseline's stack")
        rng = np.random.default_rng(0)
        nz, ny, nx = volume.shape
        before, times = rss_mb(), []
        for _ in range(200):
            z, y, x = (int(rng.integers(0, n - 96 + 1)) for n in (nz, ny, nx))
            t = time.perf_counter()
            block = volume.read_block((z, z + 96), (y, y + 96), (x, x + 96))
            times.append(time.perf_counter() - t)
            del block
        growth = rss_mb() - before
        t = time.perf_counter()
        small = volume.read_block(step=4)
        mean4_s = time.perf_counter() - t
        slices = {}
        for plane in ("axial", "coronal", "sagittal"):
            t = time.perf_counter()
            for k in range(5):
                volume.display_slice(plane, 20 + k)
            slices[plane] = (time.perf_counter() - t) / 5 * 1000
    stored_mb = (ws.image_dir(images[0]["id"]) / "volume.npy").stat().st_size / 1e6
    result = {
        "benchmark": "volumes",
        "claim": f"ingest of a 512 x 512 x {shape[0]} CT series in <= 1.5 GB RSS; block and slice reads",
        "quick": quick,
        "input": {
            "shape_xyz": [512, 512, shape[0]],
            "dicom_mb": u.rnd(input_mb, 1),
            "stored_npy_mb": u.rnd(stored_mb, 1),
        },
        "ours": {
            "command": "gigavision -w WS ingest DIR --json",
            "wall_s": u.rnd(ours.wall_s, 2),
            "peak_rss_mb": u.rnd(ours.peak_rss_mb, 0),
        },
        "baseline": {
            "command": "pydicom read + sort + stack + np.save (child process)",
            "wall_s": u.rnd(base.wall_s, 2),
            "peak_rss_mb": u.rnd(base.peak_rss_mb, 0),
        },
        "ratio_wall": u.rnd(ours.wall_s / base.wall_s, 2),
        "targets": {"peak_rss_mb": 1500},
        "met": {"peak_rss_mb": ours.peak_rss_mb <= 1500},
        "reads": {
            "block96_ms_median": u.rnd(float(np.median(times)) * 1000, 2),
            "block96_ms_p95": u.rnd(float(np.percentile(times, 95)) * 1000, 2),
            "rss_growth_mb_over_200_blocks": u.rnd(growth, 1),
            "mean4_whole_volume_s": u.rnd(mean4_s, 2),
            "mean4_shape": list(small.shape),
            "display_slice_ms": {k: u.rnd(v, 2) for k, v in slices.items()},
        },
        "max_rss_self_mb": u.rnd(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0),
        "machine": u.machine(),
    }
    u.emit(result)


if __name__ == "__main__":
    main()
