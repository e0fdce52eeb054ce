"""Tile serving: ``gigavision serve`` vs nginx serving the same tiles pre-cut by ``vips dzsave``.

Claim (DESIGN.md §6): uncached 256² JPEG tile, 4 concurrent clients, 2 cores: median ≤ 8 ms,
p95 ≤ 25 ms, and ≥ 0.5× the tiles/s of nginx serving pre-cut static tiles.

Load: wrk (Debian), 2 threads, 4 connections, ``--latency``; a Lua script walks a shuffled list of distinct
tile paths (each wrk thread takes every other path, so a path is requested once per pass over the list)
and its ``done()`` prints the latency distribution (p50/p95/p99) as JSON.

Scenarios, one wrk run each:
  a. ``dzi_deepest``: Deep Zoom tiles at the deepest level (full resolution), interior tiles only, shuffled.
     They line up with the slide's stored JPEG tiles, so they are served as stored bytes (passthrough).
  b. ``iiif_resize``: IIIF regions 384² at level-0 offsets that are not multiples of 256, scaled to 256²:
     a zoom between pyramid levels 0 and 1. Each needs 4 stored tiles decoded, a Lanczos resize and a JPEG
     encode. Offsets shift every pass, so neither the decoded-tile cache nor the rendered-tile cache hits.
  c. ``cached``: 64 of the (b) requests repeated: every answer comes from the rendered-tile LRU.
  d. ``nginx``: the (a) tiles pre-cut by ``vips dzsave --tile-size 256 --overlap 0`` and served by nginx
     (worker_processes 2, access_log off, sendfile), same paths, same wrk settings.

Usage::

    .venv/bin/python benchmarks/bench_tiles.py [--quick] [--duration S] [--width W --height H]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util as u

THREADS, CONNECTIONS = 2, 4
TILE = 256

LUA = r"""
-- Walks a list of paths: thread k of n requests paths k+1, k+1+n, ... (wrapping), so no two
-- threads ask for the same path within one pass. done() prints one JSON line prefixed WRKJSON.
local paths = {}
local idx = 0
local step = 1
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  step = tonumber(args[2])
  idx = tid
end

function request()
  local p = paths[(idx % #paths) + 1]
  idx = idx + step
  return wrk.format("GET", p)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d},"latency_us":{"mean":%.1f,"stdev":%.1f,"min":%d,"max":%d,"p50":%d,' ..
    '"p75":%d,"p90":%d,"p95":%d,"p99":%d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.min, latency.max, latency:percentile(50), latency:percentile(75),
    latency:percentile(90), latency:percentile(95), latency:percentile(99)))
end
"""

NGINX_CONF = """
worker_processes 2;
daemon off;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path {dir}/tmp-body;
  proxy_temp_path {dir}/tmp-proxy;
  fastcgi_temp_path {dir}/tmp-fastcgi;
  uwsgi_temp_path {dir}/tmp-uwsgi;
  scgi_temp_path {dir}/tmp-scgi;
  types {{ image/jpeg jpeg jpg; }}
  server {{
    listen 127.0.0.1:{port};
    root {root};
  }}
}}
"""


def dzi_max_level(width: int, height: int) -> int:
    return max(0, math.ceil(math.log2(max(width, height))))


def workspace_with_slide(slide: Path, width: int, height: int) -> tuple[Path, str]:
    """A workspace holding the slide (cached in .bench); returns (workspace, image id)."""
    ws = u.BENCH / f"tiles-ws-{width}x{height}"
    if (ws / "gigavision.toml").exists():
        r = u.run_child([u.GIGAVISION, "-w", str(ws), "images", "list", "--json"])
        if r.returncode == 0:
            items = json.loads(r.stdout)["items"]
            if len(items) == 1 and items[0]["width"] == width:
                return ws, items[0]["id"]
        shutil.rmtree(ws)
    u.log(f"ingesting the slide into {ws} (once) ...")
    u.run_child([u.GIGAVISION, "init", str(ws)]).check()
    r = u.run_child([u.GIGAVISION, "-w", str(ws), "ingest", str(slide), "--json"]).check()
    return ws, json.loads(r.stdout)["images"][0]["id"]


def dzsave_tiles(slide: Path, width: int, height: int) -> Path:
    """Full-resolution Deep Zoom tiles cut by Debian's vips CLI; returns the folder nginx serves as root."""
    root = u.BENCH / f"dz-{width}x{height}"
    stamp = root / ".complete"
    if stamp.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    u.log("cutting full-resolution tiles with `vips dzsave --tile-size 256 --overlap 0 --depth one` (once) ...")
    t0 = time.perf_counter()
    u.run_child(
        [
            "vips",
            "dzsave",
            str(slide),
            str(root / "slide"),
            "--tile-size",
            str(TILE),
            "--overlap",
            "0",
            "--suffix",
            ".jpeg[Q=80]",
            "--depth",
            "one",
        ]
    ).check()
    # --depth one names its only level 0; Deep Zoom numbers the full-resolution level log2(max side)
    (root / "slide_files" / "0").rename(root / "slide_files" / str(dzi_max_level(width, height)))
    stamp.touch()
    u.log(f"  dzsave took {time.perf_counter() - t0:.0f}s")
    return root


def write_paths(name: str, paths: list[str]) -> Path:
    out = u.BENCH / "tiles" / f"{name}.txt"
    out.write_text("\n".join(paths) + "\n")
    return out


def run_wrk(port: int, paths_file: Path, duration: int, label: str) -> dict[str, Any]:
    script = u.BENCH / "tiles" / "walk.lua"
    cmd = [
        "wrk",
        f"-t{THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://{u.LOOPBACK}:{port}",
        "--",
        str(paths_file),
        str(THREADS),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"wrk failed for {label}")
    line = next((x for x in proc.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        sys.stderr.write(proc.stdout)
        raise SystemExit(f"wrk printed no WRKJSON line for {label}")
    data = json.loads(line.removeprefix("WRKJSON "))
    non2xx = next((x.strip() for x in proc.stdout.splitlines() if "Non-2xx" in x), None)
    lat = data["latency_us"]
    secs = data["duration_us"] / 1e6
    n_paths = sum(1 for _ in paths_file.open())
    out = {
        "requests": data["requests"],
        "tiles_per_s": u.rnd(data["requests"] / secs, 1),
        "median_ms": u.rnd(lat["p50"] / 1000, 2),
        "p95_ms": u.rnd(lat["p95"] / 1000, 2),
        "p99_ms": u.rnd(lat["p99"] / 1000, 2),
        "mean_ms": u.rnd(lat["mean"] / 1000, 2),
        "max_ms": u.rnd(lat["max"] / 1000, 1),
        "kb_per_tile": u.rnd(data["bytes"] / max(1, data["requests"]) / 1024, 1),
        "distinct_paths": n_paths,
        "passes_over_paths": u.rnd(data["requests"] / n_paths, 2),
        "errors": {k: v for k, v in data["errors"].items() if v},
        "non_2xx_line": non2xx,
        "all_200": non2xx is None and data["errors"]["status"] == 0,
    }
    u.log(
        f"  {label:13} {out['tiles_per_s']:8.1f} tiles/s  median {out['median_ms']:6.2f} ms  "
        f"p95 {out['p95_ms']:6.2f} ms  p99 {out['p99_ms']:6.2f} ms  ({out['requests']} req, "
        f"{out['passes_over_paths']} passes, {out['kb_per_tile']} KB/tile){'  ' + non2xx if non2xx else ''}"
    )
    return out


def check_sample(port: int, paths: list[str], *, want_stored: bool | None, n: int = 20) -> dict[str, Any]:
    """GET a sample of the paths: all 200, JPEG, 256×256; and whether they were served as stored bytes."""
    import io

    from PIL import Image

    sample = paths[:: max(1, len(paths) // n)][:n]
    stored = 0
    for p in sample:
        status, headers, body = u.http_get(p, port)
        if status != 200 or not body.startswith(b"\xff\xd8"):
            raise SystemExit(f"GET {p} -> {status} ({body[:120]!r})")
        with Image.open(io.BytesIO(body)) as im:
            if im.size != (TILE, TILE):
                raise SystemExit(f"GET {p} -> {im.size}, expected {TILE}x{TILE}")
        stored += headers.get("x-gigavision-tile") == "stored"
    if want_stored is not None and stored != (len(sample) if want_stored else 0):
        raise SystemExit(f"expected {'all' if want_stored else 'none'} of the sample as stored tiles, got {stored}")
    return {"sampled": len(sample), "status_200_jpeg_256": True, "stored_passthrough": stored}


def server_memory_mb(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmHWM", "VmRSS")):
                out[line.split(":")[0].lower() + "_mb"] = u.rnd(int(line.split()[1]) / 1024, 0)
    except OSError:
        pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10 s per scenario instead of 30 s")
    ap.add_argument("--duration", type=int, help="seconds per wrk run")
    ap.add_argument("--width", type=int, default=40_000)
    ap.add_argument("--height", type=int, default=25_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2, help="gigavision serve --workers (one per core)")
    args = ap.parse_args()
    quick = args.quick or u.quick_requested([])
    duration = args.duration or (10 if quick else 30)
    warmup = 3
    u.require_tools("vips", "nginx", "wrk")
    width, height = args.width, args.height
    workers = args.workers

    slide = u.slide_path(width, height)
    ws, image_id = workspace_with_slide(slide, width, height)
    dz_root = dzsave_tiles(slide, width, height)
    (u.BENCH / "tiles").mkdir(parents=True, exist_ok=True)
    (u.BENCH / "tiles" / "walk.lua").write_text(LUA)
    rng = random.Random(args.seed)

    # a / d: interior full-resolution tiles (edge tiles are partial, hence re-encoded), shuffled
    top = dzi_max_level(width, height)
    cells = [(c, r) for r in range(height // TILE) for c in range(width // TILE)]
    rng.shuffle(cells)
    warm_cells, cells = cells[:200], cells[200:]
    ours_deep = [f"/dzi/{image_id}_files/{top}/{c}_{r}.jpeg" for c, r in cells]
    nginx_deep = [f"/slide_files/{top}/{c}_{r}.jpeg" for c, r in cells]
    ours_warm = write_paths("ours_warm", [f"/dzi/{image_id}_files/{top}/{c}_{r}.jpeg" for c, r in warm_cells])
    nginx_warm = write_paths("nginx_warm", [f"/slide_files/{top}/{c}_{r}.jpeg" for c, r in warm_cells])
    # b: 384² level-0 regions off the 256 grid -> 256²; pass k shifts by 16k px. Each region touches tiles
    # (2a, 2a+1) x (2b, 2b+1) only, so regions of one pass share no decoded tile.
    region = 384
    resize: list[str] = []
    for k in range(4):
        off = 64 + 16 * k
        grid = [(512 * a + off, 512 * b + off) for b in range(height // 512) for a in range(width // 512)]
        grid = [(x, y) for x, y in grid if x + region <= width and y + region <= height]
        rng.shuffle(grid)
        resize += [f"/iiif/3/{image_id}/{x},{y},{region},{region}/{TILE},/0/default.jpg" for x, y in grid]
    warm_resize, resize = resize[-8:], resize[:-8]
    cached = resize[:64]

    files = {
        "dzi_deepest": write_paths("ours_deep", ours_deep),
        "nginx": write_paths("nginx_deep", nginx_deep),
        "iiif_resize": write_paths("ours_resize", resize),
        "cached": write_paths("ours_cached", cached),
    }
    u.log("warming the page cache (slide blob and dzsave tiles)")
    u.warm_page_cache(dz_root / "slide_files")
    u.warm_page_cache(ws / "blobs")

    results: dict[str, Any] = {}
    # -- d: nginx ------------------------------------------------------------------------------------------
    ndir = u.BENCH / "tiles" / "nginx"
    shutil.rmtree(ndir, ignore_errors=True)
    ndir.mkdir(parents=True)
    nport = u.free_port()
    (ndir / "nginx.conf").write_text(NGINX_CONF.format(dir=ndir, port=nport, root=dz_root))
    nginx = subprocess.Popen(
        ["nginx", "-p", str(ndir), "-c", str(ndir / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=(ndir / "stderr.log").open("wb"),
    )
    try:
        u.wait_http(nginx_deep[0], nport, nginx, timeout=20)
        nginx_check = check_sample(nport, nginx_deep, want_stored=None)
        run_wrk(nport, nginx_warm, warmup, "nginx warm-up")
        results["nginx"] = run_wrk(nport, files["nginx"], duration, "nginx")
        results["nginx"]["check"] = nginx_check
    finally:
        u.stop(nginx)

    # -- a, b, c: gigavision -------------------------------------------------------------------------------
    port = u.free_port()
    log_path = u.BENCH / "tiles" / "server.log"
    server = subprocess.Popen(
        [u.GIGAVISION, "-w", str(ws), "serve", "--host", u.LOOPBACK, "--port", str(port), "--workers", str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("wb"),
    )
    try:
        u.wait_http("/healthz", port, server, timeout=60)
        checks = {
            "dzi_deepest": check_sample(port, ours_deep[-40:], want_stored=True),
            "iiif_resize": check_sample(port, warm_resize, want_stored=False, n=8),
        }
        run_wrk(port, ours_warm, warmup, "ours warm-up")
        results["dzi_deepest"] = run_wrk(port, files["dzi_deepest"], duration, "dzi_deepest")
        results["iiif_resize"] = run_wrk(port, files["iiif_resize"], duration, "iiif_resize")
        for p in cached:  # prime the rendered-tile cache
            u.http_get(p, port)
        results["cached"] = run_wrk(port, files["cached"], duration, "cached")
        for key, check in checks.items():
            results[key]["check"] = check
        memory = server_memory_mb(server.pid)
    finally:
        u.stop(server)

    a, d, b = results["dzi_deepest"], results["nginx"], results["iiif_resize"]
    ratio = a["tiles_per_s"] / d["tiles_per_s"]
    result = {
        "benchmark": "tiles",
        "claim": "uncached 256^2 JPEG tile, 4 clients, 2 cores: median <= 8 ms, p95 <= 25 ms, >= 0.5x nginx tiles/s",
        "quick": quick,
        "duration_s": duration,
        "server_workers": workers,
        "load": f"wrk -t{THREADS} -c{CONNECTIONS} --latency, sharing the {os.cpu_count()} cores with the server",
        "slide": {"width": width, "height": height, "dzi_level": top},
        "scenarios": {
            "dzi_deepest": {"what": "uncached DZI tiles, deepest level, stored-JPEG passthrough", **a},
            "iiif_resize": {"what": "uncached IIIF 384^2 -> 256^2 off-grid regions: 4 decodes + resize + encode", **b},
            "cached": {"what": "64 IIIF resize requests repeated: rendered-tile LRU hits", **results["cached"]},
            "nginx": {"what": "same deepest-level tiles pre-cut by vips dzsave (Q80), nginx 2 workers", **d},
        },
        "ratio_vs_nginx": u.rnd(ratio),
        "targets": {"median_ms_max": 8, "p95_ms_max": 25, "ratio_vs_nginx_min": 0.5},
        "met": {
            "median": a["median_ms"] <= 8,
            "p95": a["p95_ms"] <= 25,
            "ratio": ratio >= 0.5,
            "all_200": all(r["all_200"] for r in results.values()),
            "iiif_resize_median": b["median_ms"] <= 8,
            "iiif_resize_p95": b["p95_ms"] <= 25,
        },
        "server_memory": memory,
        "versions": {"vips_cli": u.vips_cli_version(), "nginx": _nginx_version(), "wrk": _wrk_version()},
        "machine": u.machine(),
    }
    u.emit(result)


def _nginx_version() -> str:
    p = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
    return (p.stderr or p.stdout).strip().removeprefix("nginx version: ")


def _wrk_version() -> str:
    p = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (p.stdout or p.stderr).splitlines()[0].split(" Copyright")[0] if (p.stdout or p.stderr) else "?"


if __name__ == "__main__":
    main()
