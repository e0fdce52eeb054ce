"""The command line: init, ingest --json, images list/show, info, errors as one line and an exit code."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from gigavision.cli.main import main
from gigavision.store.labels import palette_color
from tests import formats


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_init_ingest_list_show(tmp_path: Path, samples: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    ws = str(tmp_path / "ws")
    code, out, _ = run(capsys, "init", ws, "--json")
    assert code == 0 and json.loads(out)["workspace"] == ws
    code, out, _ = run(capsys, "-w", ws, "ingest", str(samples["retina.jpg"]), str(samples["coins.png"]), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["summary"] == {"added": 2, "duplicate": 0, "rejected": 0}
    retina = report["images"][0]
    assert (retina["name"], retina["width"], retina["height"], retina["status"]) == (
        "retina.jpg",
        1411,
        1411,
        "added",
    )
    assert set(retina) >= {"id", "name", "width", "height", "levels", "mpp", "crs", "status", "reason"}
    code, out, _ = run(capsys, "-w", ws, "ingest", str(samples["retina.jpg"]), "--json")
    assert code == 0 and json.loads(out)["images"][0]["status"] == "duplicate"
    code, out, _ = run(capsys, "-w", ws, "images", "list", "--json")
    listing = json.loads(out)
    assert listing["total"] == 2 and [i["name"] for i in listing["items"]] == ["retina.jpg", "coins.png"]
    code, out, _ = run(capsys, "-w", ws, "images", "show", retina["id"], "--json")
    assert code == 0 and json.loads(out)["levels"][0] == {"width": 1411, "height": 1411, "downsample": 1.0}
    code, out, _ = run(capsys, "-w", ws, "images", "list")
    assert "retina.jpg" in out and "1,411x1,411" in out


def test_workspace_from_environment(
    tmp_path: Path,
    samples: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run(capsys, "init", str(tmp_path / "ws"))
    monkeypatch.setenv("GIGAVISION_WORKSPACE", str(tmp_path / "ws"))
    code, out, _ = run(capsys, "ingest", str(samples["coins.png"]), "--json")
    assert code == 0 and json.loads(out)["summary"]["added"] == 1


def test_info_reports_crs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    geo = formats.write_geotiff(tmp_path / "g.tif", formats.ihc_scene(600, 400), (500_000.0, 4_100_000.0), 10.0, 32633)
    code, out, _ = run(capsys, "info", str(geo), "--json")
    info = json.loads(out)
    assert code == 0 and info["crs"] == "EPSG:32633" and info["transform"][2] == 500_000.0


def test_errors_are_one_line_with_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-w", str(tmp_path / "nope"), "images", "list")
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "not a gigavision workspace" in err and "Traceback" not in err
    (tmp_path / "text.tif").write_text("hello")
    code, _, err = run(capsys, "info", str(tmp_path / "text.tif"))
    assert code == 2 and "text.tif" in err and "not a supported image" in err
    run(capsys, "init", str(tmp_path / "ws"))
    code, _, err = run(capsys, "-w", str(tmp_path / "ws"), "serve", "--host", "0.0.0.0")
    assert code == 2 and "loopback" in err
    code, _, err = run(capsys, "-w", str(tmp_path / "ws"), "images", "show", "deadbeef")
    assert code == 2 and "no image with id" in err
    # bad parameters are usage errors, not tracebacks (typer raises its own copy of click's exceptions)
    code, _, err = run(capsys, "-w", str(tmp_path / "ws"), "images", "list", "--limit", "abc")
    assert code == 2 and "Invalid value for '--limit'" in err and "Traceback" not in err


def test_all_rejected_exits_non_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "init", str(tmp_path / "ws"))
    (tmp_path / "empty.jpg").write_bytes(b"")
    code, out, _ = run(capsys, "-w", str(tmp_path / "ws"), "ingest", str(tmp_path / "empty.jpg"), "--json")
    assert code == 1 and json.loads(out)["images"][0]["reason"].endswith("empty file (0 bytes)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_over_http(
    tmp_path: Path, samples: dict[str, Path], capsys: pytest.CaptureFixture[str], workers: int
) -> None:
    ws = str(tmp_path / "ws")
    run(capsys, "init", ws)
    _, out, _ = run(capsys, "-w", ws, "ingest", str(samples["astronaut.jpg"]), "--json")
    image_id = json.loads(out)["images"][0]["id"]
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gigavision.cli.main",
            "-w",
            ws,
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 60
            while True:  # readiness poll: the server answers /healthz once it accepts connections
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"server did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
                    time.sleep(0.05)
            tile = client.get(f"/iiif/3/{image_id}/0,0,256,256/max/0/default.jpg")
            assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
            assert tile.headers["x-content-type-options"] == "nosniff"
            missing = client.get("/api/v1/images/" + "f" * 64)
            assert missing.status_code == 404 and "default-src 'self'" in missing.headers["content-security-policy"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_labels_and_annotations_commands(
    tmp_path: Path, samples: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ws = str(tmp_path / "ws")
    run(capsys, "init", ws)
    _, out, _ = run(capsys, "-w", ws, "ingest", str(samples["coins.png"]), "--json")
    image_id = json.loads(out)["images"][0]["id"]
    code, _, _ = run(capsys, "-w", ws, "labels", "add", "coin", "--kind", "box", "-a", "metal=copper,silver")
    assert code == 0
    code, out, _ = run(capsys, "-w", ws, "labels", "list", "--json")
    colour = palette_color("coin")  # no --color: the palette imports use, not one red for every class
    assert json.loads(out) == {
        "coin": {"kind": "box", "color": colour, "parent": None, "attributes": {"metal": ["copper", "silver"]}}
    }
    records = [
        {"kind": "box", "label": "coin", "bbox": [10, 10, 60, 60], "attributes": {"metal": "silver"}},
        {"kind": "box", "label": "coin", "bbox": [200, 100, 250, 150]},
    ]
    (tmp_path / "coins.json").write_text(json.dumps(records))
    code, out, _ = run(capsys, "-w", ws, "annotations", "add", image_id, str(tmp_path / "coins.json"), "--json")
    assert code == 0 and json.loads(out)["count"] == 2
    code, out, _ = run(capsys, "-w", ws, "annotations", "list", image_id, "--bbox", "0,0,100,100", "--json")
    found = json.loads(out)["items"]
    assert [r["bbox"] for r in found] == [[10, 10, 60, 60]]
    code, out, _ = run(capsys, "-w", ws, "annotations", "history", str(found[0]["id"]), "--json")
    assert [e["action"] for e in json.loads(out)] == ["create"]
    (tmp_path / "bad.json").write_text(json.dumps([{"kind": "box", "label": "cat", "bbox": [0, 0, 1, 1]}]))
    code, _, err = run(capsys, "-w", ws, "annotations", "add", image_id, str(tmp_path / "bad.json"))
    assert code == 2 and "not in the schema" in err


def test_user_text_prints_verbatim_not_as_rich_markup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Labels, names and reasons are user text: "[bold]" or "[x, y, w, h]" must print as written."""
    run(capsys, "init", str(tmp_path / "ws"))
    ws = str(tmp_path / "ws")
    code, _, err = run(capsys, "-w", ws, "labels", "add", "[bold]cell[/]", "--kind", "box")
    assert code == 0 and "[bold]cell[/]" in err
    code, out, _ = run(capsys, "-w", ws, "labels", "list")
    assert code == 0 and "[bold]cell[/]" in out
    coco = tmp_path / "bad.json"
    coco.write_text(
        json.dumps(
            {
                "images": [],
                "categories": [{"id": 1, "name": "[red]nucleus"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2]}],
            }
        )
    )
    code, _, err = run(capsys, "-w", ws, "import", "coco", str(coco))
    assert code == 1 and "classes added: [red]nucleus" in err
