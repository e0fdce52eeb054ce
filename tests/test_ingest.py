"""Ingest on SQLite and PostgreSQL: ids, dedupe, pyramids for big/untiled input, thumbnails, masks, memory."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

import gigavision as gv
from gigavision.demo import make_slide
from tests import formats


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_ingest_real_images_and_dedupe(workspace: gv.Workspace, samples: dict[str, Path]) -> None:
    names = ["retina.jpg", "immunohistochemistry.png", "coins.png", "coffee.webp", "moon_16bit.tif"]
    results = workspace.ingest([samples[n] for n in names])
    assert [r.status for r in results] == ["added"] * 5
    for name, r in zip(names, results, strict=True):
        assert r.id == hashlib.sha256(samples[name].read_bytes()).hexdigest()
    retina = next(r for r in results if r.name == "retina.jpg")
    assert (retina.width, retina.height, retina.levels) == (1411, 1411, 4)

    rows, total = workspace.list_images()
    assert total == 5 and {r.name for r in rows} == set(names)
    blobs = _files(workspace.root / "blobs")
    assert len(blobs) == 5
    for r in results:
        thumb = workspace.thumbnail_path(r.id)
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and max(im.size) <= 512
        assert workspace.mask_path(r.id).is_file()
    # the same bytes under another name: reported, not stored twice
    copy = workspace.root.parent / "retina_copy.jpg"
    copy.write_bytes(samples["retina.jpg"].read_bytes())
    again = workspace.ingest([copy, samples["coins.png"]])
    assert [r.status for r in again] == ["duplicate", "duplicate"]
    assert again[0].id == retina.id
    assert len(_files(workspace.root / "blobs")) == 5
    assert workspace.list_images()[1] == 5


def test_16bit_small_image_keeps_its_values(workspace: gv.Workspace, samples: dict[str, Path]) -> None:
    (r,) = workspace.ingest([samples["moon_16bit.tif"]])
    row = workspace.get_image(r.id)
    assert row.dtype == "uint16" and row.display_window is not None
    arr = workspace.open_source(r.id).read_region(gv.Region(0, 0, 512, 512))
    assert np.array_equal(arr[:, :, 0], data.moon().astype(np.uint16) * 257)


def test_big_untiled_jpeg_becomes_a_jpeg_pyramid(workspace: gv.Workspace, samples: dict[str, Path]) -> None:
    (r,) = workspace.ingest([samples["chelsea_mosaic.jpg"]])
    row = workspace.get_image(r.id)
    assert row.pyramid is not None and (workspace.root / row.pyramid).is_file()
    assert [lv["width"] for lv in row.levels][:3] == [12000, 6000, 3000] and len(row.levels) >= 6
    src = workspace.open_source(r.id)
    assert src.levels[0].tile_width == 256 and src.info.metadata["compression"] == 7  # JPEG tiles
    with gv.open_image(samples["chelsea_mosaic.jpg"]) as original:
        region = gv.Region(5000, 3000, 700, 500)
        diff = np.abs(src.read_region(region).astype(int) - original.read_region(region).astype(int))
        assert diff.mean() < 3
    # the original is kept as uploaded, by hash
    assert hashlib.sha256(workspace.blobs.local_path(row.blob_key).read_bytes()).hexdigest() == r.id


def test_big_16bit_and_label_masks_get_lossless_pyramids(sqlite_workspace: gv.Workspace, tmp_path: Path) -> None:
    import tifffile

    moon16 = np.tile(data.moon().astype(np.uint16) * 257, (10, 10))  # 5120 x 5120, strips, 16-bit
    tifffile.imwrite(tmp_path / "moon16.tif", moon16)
    labels = (data.coins() > 110).astype(np.uint8) * 3  # a 2-class label mask
    Image.fromarray(np.tile(labels, (14, 12))).save(tmp_path / "labels.png")  # 4608 x 4242
    r16, rlab = sqlite_workspace.ingest([tmp_path / "moon16.tif", tmp_path / "labels.png"])
    assert r16.status == rlab.status == "added"
    for r, expected in ((r16, moon16), (rlab, np.tile(labels, (14, 12)))):
        row = sqlite_workspace.get_image(r.id)
        assert row.pyramid is not None and row.meta["pyramid"]["compression"] == "deflate"
        arr = sqlite_workspace.open_source(r.id).read_region(gv.Region(1000, 900, 800, 600))
        assert np.array_equal(arr[:, :, 0], expected[900:1500, 1000:1800])


def test_physical_metadata_survives_ingest(sqlite_workspace: gv.Workspace, tmp_path: Path) -> None:
    scene = formats.ihc_scene(3000, 2000)
    geo = formats.write_geotiff(tmp_path / "scene_geo.tif", scene, (500_000.0, 4_100_000.0), 10.0, 32633)
    svs = formats.write_svs(tmp_path / "slide.svs", formats.ihc_scene(5000, 4000), mpp=0.499)
    rgeo, rsvs = sqlite_workspace.ingest([geo, svs])
    g = sqlite_workspace.get_image(rgeo.id)
    assert g.crs == "EPSG:32633" and g.transform == [10.0, 0.0, 500_000.0, 0.0, -10.0, 4_100_000.0]
    s = sqlite_workspace.get_image(rsvs.id)
    assert s.reader == "openslide" and s.mpp_x == pytest.approx(0.499) and s.pyramid is None
    assert s.blob_key.endswith(".svs")  # vendor readers need the extension


def test_foreground_mask_finds_the_tissue(sqlite_workspace: gv.Workspace, tmp_path: Path) -> None:
    slide = make_slide(tmp_path / "slide.tif", 8000, 6000, mpp=0.5, seed=3)
    (r,) = sqlite_workspace.ingest([slide])
    row = sqlite_workspace.get_image(r.id)
    with Image.open(sqlite_workspace.mask_path(r.id)) as im:
        mask = np.asarray(im) > 0
    # ground truth: where the slide is not the white background, at mask resolution
    src = sqlite_workspace.open_source(r.id)
    lvl = next(i for i, lv in enumerate(src.levels) if lv.width <= 1024)
    overview = src.read_window(lvl, 0, 0, src.levels[lvl].width, src.levels[lvl].height)
    tissue = np.asarray(Image.fromarray((overview.min(axis=2) < 230).astype(np.uint8) * 255).resize(im.size)) > 127
    assert 0.05 < row.foreground_fraction < 0.95
    agreement = (mask == tissue).mean()
    assert agreement > 0.9, f"mask agrees with the tissue on only {agreement:.1%} of pixels"


def test_concurrent_ingest_of_the_same_file_stores_it_once(
    sqlite_workspace: gv.Workspace, samples: dict[str, Path]
) -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: sqlite_workspace.ingest_file(samples["astronaut.jpg"]), range(4)))
    statuses = sorted(r.status for r in results)
    assert statuses.count("added") == 1 and statuses.count("duplicate") == 3
    assert len(_files(sqlite_workspace.root / "blobs")) == 1
    assert [p.name for p in (sqlite_workspace.root / "pyramids").iterdir() if p.name.startswith(".tmp")] == []
    image_id = results[0].id
    assert image_id is not None  # the committed image kept its derived files (a loser must not delete them)
    assert sqlite_workspace.thumbnail_path(image_id).is_file() and sqlite_workspace.mask_path(image_id).is_file()


def test_folder_ingest_recursive_and_symlinks(
    sqlite_workspace: gv.Workspace, samples: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "coins.png").write_bytes(samples["coins.png"].read_bytes())
    (folder / "astro.jpg").write_bytes(samples["astronaut.jpg"].read_bytes())
    (folder / ".DS_Store").write_bytes(b"junk")
    (folder / "inside_link.jpg").symlink_to(folder / "astro.jpg")
    (folder / "outside_link.png").symlink_to(samples["immunohistochemistry.png"])
    flat = sqlite_workspace.ingest([folder])
    assert [(r.status, "--recursive" in (r.reason or "")) for r in flat] == [("rejected", True)]
    results = {r.name: r for r in sqlite_workspace.ingest([folder], recursive=True)}
    assert set(results) == {"astro.jpg", "inside_link.jpg", "outside_link.png", "sub/coins.png"}
    assert results["astro.jpg"].status == "added" and results["sub/coins.png"].status == "added"
    assert results["inside_link.jpg"].status == "duplicate"
    assert results["outside_link.png"].status == "rejected" and "--follow-symlinks" in (
        results["outside_link.png"].reason or ""
    )
    followed = sqlite_workspace.ingest([folder], recursive=True, follow_symlinks=True)
    assert {r.name: r.status for r in followed}["outside_link.png"] == "added"


@pytest.mark.slow
def test_gigapixel_slide_ingests_without_conversion(sqlite_workspace: gv.Workspace, gigapixel_tiff: Path) -> None:
    (r,) = sqlite_workspace.ingest([gigapixel_tiff])
    row = sqlite_workspace.get_image(r.id)
    assert (row.width, row.height) == (40_000, 25_000) and row.pyramid is None
    assert len(row.levels) >= 8 and row.mpp_x == pytest.approx(0.25)
    assert 0.05 < (row.foreground_fraction or 0) < 0.95


PEAK_RSS_CHILD = """
import sys
from gigavision.cli.main import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read()
peak_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
print(f"PEAK_KB={peak_kb}", file=sys.stderr)
sys.exit(code)
"""


def run_cli_peak_rss(args: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the CLI in a fresh interpreter; its own peak RSS in MB (VmHWM, reset at exec, unlike ru_maxrss)."""
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_CHILD, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    peak = [line for line in proc.stderr.splitlines() if line.startswith("PEAK_KB=")]
    assert peak, proc.stderr
    return proc, int(peak[-1].split("=")[1]) / 1024


@pytest.mark.slow
def test_big_jpeg_ingest_memory_is_bounded(tmp_path: Path, gigapixel_tiff: Path) -> None:
    """A 192-megapixel untiled JPEG (576 MB decoded) is converted in far less memory than a full decode."""
    import pyvips

    src = tmp_path / "scan.jpg"
    pyvips.Image.new_from_file(str(gigapixel_tiff)).crop(8000, 4000, 16_000, 12_000).jpegsave(str(src), Q=85)
    gv.init_workspace(tmp_path / "ws").close()
    proc, peak_mb = run_cli_peak_rss(["-w", str(tmp_path / "ws"), "ingest", str(src), "--json"])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["images"][0]["status"] == "added" and report["images"][0]["levels"] >= 7
    assert peak_mb < 400, f"peak RSS {peak_mb:.0f} MB for a 576 MB image: it was decoded whole"


@pytest.mark.slow
def test_gigapixel_tiles_read_in_bounded_memory(tmp_path: Path, gigapixel_tiff: Path) -> None:
    """Ingest of the 1-gigapixel slide (3 GB decoded) stays small: only the overview level is decoded."""
    gv.init_workspace(tmp_path / "ws").close()
    proc, peak_mb = run_cli_peak_rss(["-w", str(tmp_path / "ws"), "ingest", str(gigapixel_tiff), "--json"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["images"][0]["width"] == 40_000
    assert peak_mb < 400, f"peak RSS {peak_mb:.0f} MB"


def test_big_untiled_label_mask_stays_lossless(sqlite_workspace: gv.Workspace, tmp_path: Path) -> None:
    """A 9,000 × 8,000 label PNG (above the whole-decode size, so read by libvips) keeps every label value."""
    labels = np.zeros((8000, 9000), dtype=np.uint8)
    coins = (data.coins() > 110).astype(np.uint8)
    labels[:303, :384] = coins * 2
    labels[4000:4303, 5000:5384] = coins * 7
    Image.fromarray(labels).save(tmp_path / "labels.png")
    (r,) = sqlite_workspace.ingest([tmp_path / "labels.png"])
    row = sqlite_workspace.get_image(r.id)
    assert row.reader == "pyvips" and row.meta["pyramid"]["compression"] == "deflate"
    arr = sqlite_workspace.open_source(r.id).read_region(gv.Region(4900, 3900, 600, 500))
    assert np.array_equal(arr[:, :, 0], labels[3900:4400, 4900:5500])
