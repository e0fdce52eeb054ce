"""Review inbox speed (issue 14): how soon the next task is shown after an answer, on the 1-gigapixel demo slide.

Acceptance: the next task is shown <= 300 ms after an answer. "Shown" is the inbox's own mark
(``window.__gvReview.switches``): from the key press to the next task's details in the panel, the viewer fitted to
its region with context and its proposal drawn (the answer's POST included). Reported beside it: the time until
every tile of that view has been drawn (``tilesLoaded``).

Setup: ``benchmarks/_util.slide_path`` (40,000 x 25,000 tiled JPEG TIFF of real IHC texture) in a fresh
workspace; ``--tasks`` model proposals (boxes of 40-160 px, source model:bench) at random places all over the
slide, each a review task ("uncertain", highest priority first), so that every task needs tiles nobody fetched
yet; ``gigavision serve``; Debian's chromium headless with ``--disable-gpu``, 1280x800, the built app
(``make web`` first). The "expert" answers with A and R alternately, each time once the task's tiles are drawn
and ``--think-ms`` later (the inbox fetches the next task, its image and its tiles meanwhile). The same is done
on as many other tasks with prefetching off (``#/review?prefetch=0``: each task and its tiles fetched after the
answer) as the baseline, each run in a fresh browser context.

Prints one JSON line. The machine is shared (2 cores with other work running): timings include that noise.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import _util as u

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
CHROMIUM_ARGS += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOWN = "(id) => !!window.__gvReview && window.__gvReview.shown === id"
TILES = "(n) => !!window.__gvReview && window.__gvReview.tilesLoaded.length >= n"


def _workspace(root: Path, slide: Path, n: int, seed: int) -> tuple[str, list[int]]:
    import gigavision as gv
    from gigavision.annotations import Annotations
    from gigavision.store.reviews import NewTask

    rng = np.random.default_rng(seed)
    ws = gv.init_workspace(root)
    try:
        (result,) = ws.ingest([slide])
        assert result.id is not None, result
        image = ws.get_image(result.id)
        records: list[dict[str, Any]] = []
        for _ in range(n):
            w, h = rng.uniform(40, 160, size=2)
            x0 = float(rng.uniform(0, image.width - w))
            y0 = float(rng.uniform(0, image.height - h))
            score = float(rng.uniform(0.4, 0.6))
            bbox = [round(x0), round(y0), round(x0 + w), round(y0 + h)]
            label = "mitosis" if rng.random() < 0.5 else "tumor cell"
            records.append({"kind": "box", "label": label, "bbox": bbox, "source": "model:bench", "score": score})
        ids = ws.annotations.add(result.id, Annotations.from_records(records), "bench")
        tasks = [
            NewTask(
                image_id=result.id,
                reason="uncertain",
                region=tuple(r["bbox"]),  # type: ignore[arg-type]
                annotation_id=aid,
                model_id="bench",
                label=r["label"],
                score=r["score"],
                uncertainty=1 - r["score"],
                priority=float(n - i),
            )
            for i, (aid, r) in enumerate(zip(ids, records, strict=True))
        ]
        ws.reviews.add(tasks, actor="bench")
        order = [t["id"] for t in ws.reviews.page(offset=0, limit=n)[0]]
        return result.id, order
    finally:
        ws.close()


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "p50": u.rnd(statistics.median(values), 1),
        "p95": u.rnd(u.percentile(values, 95), 1),
        "max": u.rnd(max(values), 1),
    }


def _answer(browser: Any, port: int, order: list[int], query: str, think_ms: int) -> dict[str, list[float]]:
    """Answers the tasks `order` in a fresh context; the inbox's timings of each switch to the next task."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(120_000)
    page = context.new_page()
    page.goto(f"http://{u.LOOPBACK}:{port}/#/review{query}")
    page.wait_for_function(SHOWN, arg=order[0])
    page.wait_for_function("() => window.__gvReview.viewer.world.getItemAt(0).getFullyLoaded()")
    for i, task in enumerate(order[1:], start=1):
        page.wait_for_timeout(think_ms)  # the expert looks; the inbox prefetches meanwhile
        page.keyboard.press("a" if i % 2 else "r")
        page.wait_for_function(SHOWN, arg=task)
        page.wait_for_function(TILES, arg=i)
    hook: dict[str, list[float]] = page.evaluate(
        "() => ({s: window.__gvReview.switches, t: window.__gvReview.tilesLoaded})"
    )
    context.close()
    return hook


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 tasks instead of --tasks")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--think-ms", type=int, default=1000, help="the expert's look at a task once drawn")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    n = 10 if args.quick else args.tasks
    chromium = shutil.which("chromium")
    if chromium is None:
        u.log("Debian's chromium is not installed (apt-get install chromium)")
        return 2
    from playwright.sync_api import sync_playwright

    import gigavision

    if not (Path(gigavision.__file__).parent / "server" / "static" / "index.html").is_file():
        u.log("the web front end is not built: run `make web`")
        return 2

    slide = u.slide_path(40_000, 25_000)
    u.BENCH.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gv-review-", dir=u.BENCH) as tmp:
        root = Path(tmp) / "ws"
        t0 = time.perf_counter()
        _, order = _workspace(root, slide, 2 * n, args.seed)
        u.log(f"workspace with {2 * n} review tasks in {time.perf_counter() - t0:.1f}s")
        port = u.free_port()
        server = subprocess.Popen(
            [u.GIGAVISION, "-w", str(root), "serve", "--host", u.LOOPBACK, "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            u.wait_http("/healthz", port, server)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
                # the baseline first (each task fetched when needed), then the inbox as built, each on its own
                # half of the tasks, in a fresh browser context (empty cache)
                baseline = _answer(browser, port, order[:n], "?prefetch=0", args.think_ms)
                prefetched = _answer(browser, port, order[n - 1 :], "", args.think_ms)  # n-1: still open
                version = browser.version
                browser.close()
        finally:
            u.stop(server)

    shown = prefetched["s"]
    result = {
        "benchmark": "review",
        "machine": u.machine(),
        "browser": f"Debian chromium {version}, headless, --disable-gpu",
        "what": "review inbox on the 1-gigapixel slide: key press (A or R) to the next task shown "
        "(panel, viewer fitted to its region, proposal drawn), and to all its tiles drawn; 1280x800 window",
        "tasks_answered": len(shown),
        "think_ms": args.think_ms,
        "next_task_shown_ms": _stats(shown),
        "next_task_tiles_drawn_ms": _stats(prefetched["t"]),
        "without_prefetch": {
            "tasks_answered": len(baseline["s"]),
            "next_task_shown_ms": _stats(baseline["s"]),
            "next_task_tiles_drawn_ms": _stats(baseline["t"]),
        },
        "target": {"next_task_shown_ms_max": 300},
        "ok": max(shown) <= 300,
    }
    u.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
