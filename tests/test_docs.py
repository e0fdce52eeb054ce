"""The README and docs/*.md are tested: every command block runs, in order, as a tutorial (tests/docblocks.py).

Each file gets a temporary home with the real files its examples name (scikit-image's bundled images in
``~/scans``, scikit-learn's handwritten digits as class folders, a small pyramidal slide, a labels file, a
clinical CSV, ...), made here in ``prepare_*``. Run: ``CI=true .venv/bin/pytest tests/test_docs.py -q``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gigavision as gv
from gigavision.demo import make_slide
from tests.conftest import building
from tests.docblocks import REPO, Tutorial, fork_server, parse_blocks

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MAX_SKIPPED = 4  # blocks opted out with <!-- doctest: skip — reason --> over all files


@pytest.fixture(scope="module")
def doc_files(fixture_cache: Path, samples: dict[str, Path]) -> dict[str, Path]:
    """Real files the docs name, made once: the bundled images and a 12,000 × 10,000 pyramidal slide."""
    with building(fixture_cache):
        slide = make_slide(fixture_cache / "doc_slide_12000x10000.tif", 12_000, 10_000, mpp=0.25, seed=3)
    return {**samples, "slide.tif": slide}


def write_digits(folder: Path, start: int, stop: int) -> None:
    """scikit-learn's handwritten digits ``start:stop`` as ImageFolder class folders:
    ``folder/<digit>/digit-NNNN.png`` (2× upscaled; identical bitmaps written once)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    seen: set[bytes] = set()
    for i in range(stop):
        arr = np.kron(np.clip(d.images[i] * 16, 0, 255).astype(np.uint8), np.ones((2, 2), dtype=np.uint8))
        if arr.tobytes() in seen:
            continue
        seen.add(arr.tobytes())
        if i >= start:
            (folder / str(d.target[i])).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(folder / str(d.target[i]) / f"digit-{i:04d}.png")


def prepare_common(files: dict[str, Path], home: Path, cwd: Path) -> None:
    gv.init_workspace(home / "workspace")  # GIGAVISION_WORKSPACE of files that do not `gigavision init` one
    scans = home / "scans"
    scans.mkdir()
    for name, src in files.items():
        if name != "slide.tif":
            shutil.copyfile(src, scans / name)
    shutil.copyfile(files["slide.tif"], cwd / "slide.tif")
    shutil.copyfile(files["coins.png"], cwd / "photo.png")
    write_digits(home / "digits", 0, 100)
    write_digits(home / "more-digits", 100, 160)


def prepare_readme(files: dict[str, Path], home: Path, cwd: Path) -> None:
    prepare_common(files, home, cwd)
    # a polygon "roof" with an attribute, as `annotations add` reads it
    roofs = [
        {
            "kind": "polygon",
            "label": "roof",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[100, 100], [300, 120], [280, 260], [90, 240], [100, 100]]],
            },
            "attributes": {"overhang": "low"},
            "source": "user:ana",
            "status": "proposed",
        },
        {  # "roof" is a polygon class: a second roof is a polygon too (class kinds are enforced)
            "kind": "polygon",
            "label": "roof",
            "geometry": {"type": "Polygon", "coordinates": [[[320, 40], [480, 40], [480, 150], [320, 150], [320, 40]]]},
            "source": "user:ana",
            "status": "proposed",
        },
    ]
    (cwd / "roofs.json").write_text(json.dumps(roofs, indent=1))
    # lesion boxes as ana and bo would submit them to a QC item over retina.jpg
    (cwd / "labels.json").write_text(
        json.dumps([{"kind": "box", "label": "lesion", "bbox": [600, 600, 700, 690]}], indent=1)
    )
    # a COCO file with its photo, as another tool exports it
    from skimage import data

    (home / "coco" / "photos").mkdir(parents=True)
    Image.fromarray(data.rocket()).save(home / "coco" / "photos" / "rocket.jpg")
    coco = {
        "images": [{"id": 1, "file_name": "rocket.jpg", "width": 640, "height": 427}],
        "categories": [{"id": 1, "name": "rocket"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [290, 20, 60, 390], "iscrowd": 0}],
    }
    (home / "coco" / "instances.json").write_text(json.dumps(coco))
    # the same rocket as CVAT's "CVAT for images 1.1" export writes it (its image is in the workspace by then)
    (home / "cvat-task").mkdir()
    (home / "cvat-task" / "annotations.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><task><labels><label>'
        "<name>rocket</name><color>#fa3253</color><type>rectangle</type><attributes/></label></labels></task>"
        '</meta><image id="0" name="rocket.jpg" width="640" height="427"><box label="rocket" occluded="1" '
        'source="manual" xtl="290" ytl="20" xbr="350" ybr="410" z_order="0"></box></image></annotations>\n'
    )
    # QuPath annotation objects (cells) on slide.tif, in level-0 pixels
    cells = [
        {
            "type": "Feature",
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[x, y], [x + 40, y], [x + 40, y + 30], [x, y + 30], [x, y]]],
            },
            "properties": {"objectType": "annotation", "classification": {"name": "cell", "color": [200, 0, 0]}},
        }
        for x, y in ((4000, 3000), (4100, 3050), (6200, 5100))
    ]
    (cwd / "slide.tif.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": cells}))
    Image.fromarray(data.camera()).save(cwd / "scan.tif")
    (cwd / "clinical.csv").write_text("image,patient,age,md\nretina.jpg,p017,61,-3.25\nastronaut.jpg,p018,45,-1.5\n")


def digits_datasets(home: Path, folders: tuple[str, ...] = ("digits", "more-digits")) -> gv.Workspace:
    """``digits@1`` (``~/digits``) and ``digits@2`` (+ ``~/more-digits``) in the tutorial's workspace, as the
    README's tour makes them with `gigavision import imagefolder` and `gigavision dataset create`."""
    from gigavision.datasets.versions import create_version
    from gigavision.formats.api import import_annotations

    ws = gv.open_workspace(home / "workspace")
    for folder in folders:
        import_annotations(ws, "imagefolder", home / folder)
        create_version(
            ws,
            "digits",
            filters=["image=digit-*", "has=annotations"],
            split="train=0.7,val=0.15,test=0.15",
            stratify=True,
        )
    return ws


def prepare_training(files: dict[str, Path], home: Path, cwd: Path) -> None:
    from gigavision.datasets.versions import create_version
    from tests.scenes import make_scenes

    prepare_common(files, home, cwd)
    ws = digits_datasets(home)
    # scenes@1: photographs with coins, digits and a horse outlined as polygons, what patch training learns from
    scenes = make_scenes(16, 96, 0)
    (home / "scenes").mkdir()
    paths = [home / "scenes" / f"scene-{i:02d}.png" for i in range(len(scenes))]
    for path, scene in zip(paths, scenes, strict=True):
        Image.fromarray(scene.pixels).save(path)
    for label in sorted({label for scene in scenes for label in scene.labels}):
        ws.labels.set(label, "polygon")
    for result, scene in zip(ws.ingest(paths), scenes, strict=True):
        assert result.id is not None, result
        ws.annotations.add(result.id, scene.annotations(source="user:ana"), "ana")
    create_version(ws, "scenes", filters=["image=scene-*"], split="train=0.7,val=0.15,test=0.15", stratify=True)
    ws.close()


def prepare_inference(files: dict[str, Path], home: Path, cwd: Path) -> None:
    prepare_common(files, home, cwd)
    digits_datasets(home, ("digits",)).close()  # digits@1, which the file's first block trains on


def prepare_volumes(files: dict[str, Path], home: Path, cwd: Path) -> None:
    """A CT series (16 slices of 64 x 64, one DICOM file each) and a NIfTI head, as scanners and nibabel write
    them (tests/volumes.py); no 2D samples: the page needs none."""
    from tests.volumes import phantom, write_nifti, write_series

    gv.init_workspace(home / "workspace").close()
    hu = phantom((16, 64, 64), seed=5)
    write_series(cwd / "ct-series", hu, spacing=0.7, step=2.5)
    ras = np.array([[1.0, 0, 0, -32], [0, 1.0, 0, -32], [0, 0, 2.0, -16], [0, 0, 0, 1]])
    write_nifti(cwd / "head.nii.gz", np.ascontiguousarray(hu[:, ::-1].transpose(2, 1, 0)), ras)


PREPARE = {
    "README.md": prepare_readme,
    "docs/training.md": prepare_training,
    "docs/inference.md": prepare_inference,
    "docs/volumes.md": prepare_volumes,
}
# seconds a slow file may take (set-up included): 3x its time under `-n 2` on a 2-core machine that was also
# running the training tests (README 127 s, training.md 57 s, inference.md 56 s; with the fork server)
TIMEOUTS = {"README.md": 400, "docs/training.md": 180, "docs/inference.md": 180}


def _params() -> list[object]:
    out = []
    for path in DOCS:
        rel = str(path.relative_to(REPO))
        marks = [pytest.mark.slow, pytest.mark.timeout(TIMEOUTS[rel])] if rel in TIMEOUTS else []
        out.append(pytest.param(path, id=rel, marks=marks))
    return out


@pytest.fixture(scope="session")
def gigavision_fork_server() -> Iterator[Path | None]:
    """One fork server per test process: the docs' `gigavision` commands start in ~0.1 s instead of 1-9 s."""
    folder = Path(tempfile.mkdtemp(prefix="gvfork-"))  # short: a Unix socket path has at most 107 bytes
    try:
        with fork_server(folder) as sock:
            yield sock
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("path", _params())
def test_doc_commands_run(
    path: Path, doc_files: dict[str, Path], tmp_path: Path, gigavision_fork_server: Path | None
) -> None:
    rel = str(path.relative_to(REPO))
    prepare = PREPARE.get(rel, prepare_common)
    tutorial = Tutorial(path, tmp_path, lambda home, cwd: prepare(doc_files, home, cwd), gigavision_fork_server)
    failures = tutorial.run()
    slowest = sorted(tutorial.seconds.items(), key=lambda kv: -kv[1])[:5]  # shown with -rP or on failure
    if slowest:
        print(f"{rel}: slowest blocks: " + ", ".join(f"line {line} {s:.1f} s" for line, s in slowest))
    assert not failures, f"{len(failures)} failing doc block(s) in {rel}:\n\n" + "\n\n".join(map(str, failures))


def test_skips_are_few_and_explained() -> None:
    skipped = [b for path in DOCS for b in parse_blocks(path) if b.skip is not None]
    for block in skipped:
        assert len(block.skip or "") >= 10, f"{block.where}: a skipped block needs a reason"
    assert len(skipped) <= MAX_SKIPPED, "too many skipped doc blocks: " + ", ".join(b.where for b in skipped)


def test_docs_name_no_path_outside_the_repo() -> None:
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for bad in ("../shared", "DESIGN.md", "/work/"):
            assert bad not in text, f"{path.relative_to(REPO)} names {bad!r}, which users do not have"
