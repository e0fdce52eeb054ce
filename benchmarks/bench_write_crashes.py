"""Acknowledged annotation writes survive SIGKILLs of the server (issue 13), on SQLite and PostgreSQL.

Acceptance: 100 SIGKILLs of the server during concurrent annotation writes → 0 acknowledged writes lost,
``PRAGMA integrity_check`` ok (SQLite), history versions strictly increasing.

For each database, one workspace with one real image (scikit-image's ``coins``), then ``--kills`` rounds of:
start ``gigavision serve`` (a real process, real HTTP), let ``--clients`` threads write through the REST API
(add a box; edit one of their own with the version they last saw; delete one) for a random 0.2–1.2 s, then
SIGKILL the server mid-traffic. A write counts as **acknowledged** when its 2xx answer reached the client; a
request cut by the kill is unknown (it may or may not have committed) and is not counted either way.

After the last kill the workspace is opened directly and checked:
- every acknowledged add is stored, and not deleted unless a delete of it was acknowledged or unknown;
- every acknowledged delete is deleted;
- each annotation's stored version is ≥ the last acknowledged one, and equal means the same box;
- ``annotation_events`` versions strictly increase per annotation (the unique index makes a repeat fail);
- SQLite: ``PRAGMA integrity_check`` answers ``ok``.

Usage: .venv/bin/python benchmarks/bench_write_crashes.py [--quick] [--kills N] [--clients N] [--db sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _util as u

PG_ADMIN = os.environ.get("GIGAVISION_TEST_PG", "postgresql://127.0.0.1:5432/test")
LABEL = "coin"


@dataclass
class Ledger:
    """What the clients were told (acknowledged) and what they cannot know (cut by a kill)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    added: dict[int, list[float]] = field(default_factory=dict)  # id → box of the acknowledged add
    acked: dict[int, tuple[int, list[float]]] = field(default_factory=dict)  # id → last acknowledged (version, box)
    deleted: set[int] = field(default_factory=set)  # acknowledged deletes
    unknown_delete: set[int] = field(default_factory=set)  # deletes cut by a kill
    writes: int = 0
    cut: int = 0
    conflicts: int = 0


def _workspace(root: Path, db_url: str) -> str:
    """A workspace with ``coins`` ingested and the label class; returns the image id."""
    from skimage import data, io

    import gigavision as gv

    ws = gv.init_workspace(root)
    if db_url:
        config = ws.root / "gigavision.toml"
        config.write_text(f'db_url = "{db_url}"\n' + config.read_text())
        ws.close()
        ws = gv.open_workspace(root)
    image = root / "coins.png"
    io.imsave(image, data.coins(), check_contrast=False)
    try:
        (result,) = ws.ingest([image])
        assert result.id is not None
        ws.labels.set(LABEL, "box", actor="bench")
        return result.id
    finally:
        ws.close()


def _client(base: str, image_id: str, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    import httpx

    rng = random.Random(seed)
    mine: list[int] = []
    with httpx.Client(base_url=base, timeout=10.0) as http:
        while not stop.is_set():
            x, y = rng.uniform(0, 300), rng.uniform(0, 250)
            box = [round(x, 2), round(y, 2), round(x + 20, 2), round(y + 20, 2)]
            action = rng.random()
            try:
                if action < 0.5 or not mine:
                    r = http.post(
                        f"/api/v1/images/{image_id}/annotations",
                        json={"annotations": [{"kind": "box", "label": LABEL, "bbox": box}]},
                    )
                    r.raise_for_status()
                    (new,) = r.json()["ids"]
                    with ledger.lock:
                        ledger.added[new] = box
                        ledger.acked[new] = (1, box)
                        ledger.writes += 1
                    mine.append(new)
                elif action < 0.9:
                    target = rng.choice(mine)
                    with ledger.lock:
                        version = ledger.acked[target][0]
                    r = http.patch(f"/api/v1/annotations/{target}", json={"version": version, "changes": {"bbox": box}})
                    if r.status_code == 409:  # an earlier edit of ours committed but its answer was cut
                        with ledger.lock:
                            ledger.conflicts += 1
                        mine.remove(target)
                        continue
                    r.raise_for_status()
                    with ledger.lock:
                        ledger.acked[target] = (int(r.json()["version"]), box)
                        ledger.writes += 1
                else:
                    target = mine.pop(rng.randrange(len(mine)))
                    with ledger.lock:
                        version = ledger.acked[target][0]
                        ledger.unknown_delete.add(target)
                    r = http.delete(f"/api/v1/annotations/{target}", params={"version": version})
                    if r.status_code == 409:
                        with ledger.lock:
                            ledger.conflicts += 1
                            ledger.unknown_delete.discard(target)
                        continue
                    r.raise_for_status()
                    with ledger.lock:
                        ledger.unknown_delete.discard(target)
                        ledger.deleted.add(target)
                        ledger.writes += 1
            except httpx.TransportError:  # the server was killed under this request: its outcome is unknown
                with ledger.lock:
                    ledger.cut += 1
                return


def _round(ws_root: Path, image_id: str, ledger: Ledger, clients: int, rng: random.Random) -> float:
    port = u.free_port()
    server = subprocess.Popen(
        [u.GIGAVISION, "-w", str(ws_root), "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        u.wait_http("/healthz", port, server)
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=_client, args=(f"http://127.0.0.1:{port}", image_id, ledger, stop, rng.randrange(1 << 30))
            )
            for _ in range(clients)
        ]
        for t in threads:
            t.start()
        traffic = rng.uniform(0.2, 1.2)
        time.sleep(traffic)  # a random point in the traffic, not a synchronisation
        server.send_signal(signal.SIGKILL)
        server.wait()
        stop.set()
        for t in threads:
            t.join()
        return traffic
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _check(ws_root: Path, ledger: Ledger) -> dict[str, Any]:
    from sqlalchemy import select, text

    import gigavision as gv
    from gigavision.store.schema import AnnotationEventRow, AnnotationRow

    ws = gv.open_workspace(ws_root)
    try:
        with ws.session() as s:
            rows = {r.id: r for r in s.scalars(select(AnnotationRow))}
            events = list(
                s.execute(
                    select(AnnotationEventRow.annotation_id, AnnotationEventRow.version).order_by(AnnotationEventRow.id)
                )
            )
            integrity = None
            if ws.settings.resolved_db_url().startswith("sqlite"):
                integrity = s.execute(text("PRAGMA integrity_check")).scalar()
        lost: list[str] = []
        for ann_id in ledger.added:
            row = rows.get(ann_id)
            if row is None:
                lost.append(f"{ann_id}: acknowledged add missing")
                continue
            version, box = ledger.acked[ann_id]
            if ann_id in ledger.deleted:
                if not row.deleted:
                    lost.append(f"{ann_id}: acknowledged delete not applied")
                continue
            if row.deleted and ann_id not in ledger.unknown_delete:
                lost.append(f"{ann_id}: deleted without an acknowledged or cut delete")
            if row.version < version:
                lost.append(f"{ann_id}: stored version {row.version} < acknowledged {version}")
            elif row.version == version and not row.deleted:
                stored = [row.x0, row.y0, row.x1, row.y1]
                if any(abs(a - b) > 1e-6 for a, b in zip(stored, box, strict=True)):
                    lost.append(f"{ann_id}: version {version} holds {stored}, acknowledged {box}")
        last: dict[int, int] = {}
        not_increasing = 0
        for ann_id, version in events:
            if version <= last.get(ann_id, 1):  # version 1 lives on the row itself
                not_increasing += 1
            last[ann_id] = version
        return {
            "annotations_stored": len(rows),
            "history_events": len(events),
            "lost": len(lost),
            "lost_examples": lost[:10],
            "history_not_increasing": not_increasing,
            "integrity_check": integrity,
        }
    finally:
        ws.close()


def run_db(kind: str, kills: int, clients: int, seed: int, work: Path) -> dict[str, Any]:
    db_url, dropper = "", None
    if kind == "postgresql":
        import psycopg

        name = f"gv_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        db_url = f"{PG_ADMIN.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"

        def dropper() -> None:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    try:
        root = work / kind
        image_id = _workspace(root, db_url)
        ledger, rng = Ledger(), random.Random(seed)
        t0 = time.perf_counter()
        traffic = []
        for i in range(kills):
            traffic.append(_round(root, image_id, ledger, clients, rng))
            if (i + 1) % 10 == 0:
                u.log(f"{kind}: {i + 1}/{kills} kills, {ledger.writes} acknowledged writes, {ledger.cut} cut")
        checked = _check(root, ledger)
        return {
            "kills": kills,
            "clients": clients,
            "seconds": u.rnd(time.perf_counter() - t0),
            "traffic_s_per_round": {"min": u.rnd(min(traffic)), "max": u.rnd(max(traffic))},
            "acknowledged_writes": ledger.writes,
            "acknowledged_adds": len(ledger.added),
            "acknowledged_deletes": len(ledger.deleted),
            "requests_cut_by_kills": ledger.cut,
            "conflicts_after_cut_answers": ledger.conflicts,
            **checked,
            "ok": checked["lost"] == 0
            and checked["history_not_increasing"] == 0
            and checked["integrity_check"] in (None, "ok"),
        }
    finally:
        if dropper is not None:
            dropper()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 kills per database")
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    kills = 10 if args.quick else args.kills
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gv-write-crashes-", dir=u.BENCH if u.BENCH.exists() else None) as tmp:
        for kind in [d.strip() for d in args.db.split(",") if d.strip()]:
            results[kind] = run_db(kind, kills, args.clients, args.seed, Path(tmp))
    u.emit(
        {
            "benchmark": "write_crashes",
            "machine": u.machine(),
            "what": "SIGKILLs of gigavision serve during concurrent REST annotation writes; acknowledged writes"
            " checked afterwards against the database",
            "results": results,
            "target": {"lost": 0, "history_not_increasing": 0, "integrity_check": "ok"},
            "ok": all(r["ok"] for r in results.values()),
        }
    )


if __name__ == "__main__":
    sys.exit(main())
