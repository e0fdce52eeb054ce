"""3D volumes (issue 17, first half): DICOM series and NIfTI ingest as one volume each, the read API the 3D
trainer uses, slices of every plane served as IIIF / Deep Zoom tiles, annotations on slices and 3D boxes.

Inputs are written as the tools write them: a CT phantom (tests/volumes.py) saved slice by slice with pydicom
and as NIfTI with nibabel."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import gigavision as gv
from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.images.volumes import Volume
from gigavision.images.volumes.geometry import LPS_TO_RAS
from gigavision.ingest import IngestResult
from gigavision.server.main import create_app
from tests.volumes import phantom, write_nifti, write_series

SHAPE = (20, 48, 56)  # z, y, x: 20 slices of 56 x 48 pixels


@pytest.fixture(scope="module")
def hu() -> np.ndarray:
    return phantom(SHAPE, seed=1)


def _one(results: list[IngestResult]) -> IngestResult:
    assert len(results) == 1, results
    assert results[0].status == "added", results[0]
    return results[0]


def test_a_dicom_series_is_one_volume_in_hu_with_its_spacing(
    workspace: gv.Workspace, tmp_path: Path, hu: np.ndarray
) -> None:
    write_series(tmp_path / "ct", hu, spacing=0.7, step=2.5)
    result = _one(workspace.ingest([tmp_path / "ct"]))  # a folder without --recursive: a DICOM series
    assert (result.width, result.height, result.depth, result.name) == (56, 48, 20, "ct")
    row = workspace.get_image(result.id or "")
    assert row.reader == "volume" and row.modality == "CT" and row.mpp_x == pytest.approx(700.0)
    assert row.meta["depth"] == 20 and row.meta["spacing"] == [0.7, 0.7, 2.5] and row.meta["orientation"] == "LPS"
    assert row.display_window == [-160.0, 240.0]  # WindowCenter 40, WindowWidth 400
    volume = workspace.open_volume(row.id)
    # sorted by position along the normal (file names are random, InstanceNumbers shuffled); HU after rescale
    assert volume.dtype == np.int16 and np.array_equal(volume.voxels, hu)
    lps = np.array([[0.7, 0, 0, -120.0], [0, 0.7, 0, -140.0], [0, 0, 2.5, -300.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(volume.affine, LPS_TO_RAS @ lps, atol=1e-6)
    # the read API: blocks (zero outside), block means, nearest subsampling
    np.testing.assert_array_equal(volume.read_block((3, 9), (10, 30), (5, 45)), hu[3:9, 10:30, 5:45])
    overhang = volume.read_block((18, 22), (0, 4), (0, 4), fill=-1024)
    assert np.array_equal(overhang[:2], hu[18:20, :4, :4]) and (overhang[2:] == -1024).all()
    mean = volume.read_block((0, 8), (0, 16), (0, 16), step=(2, 4, 4))
    expected = hu[:8, :16, :16].astype(np.float32).reshape(4, 2, 4, 4, 4, 4).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(mean, expected, rtol=1e-5)
    assert np.array_equal(volume.read_block(step=3, reduce="nearest"), hu[::3, ::3, ::3])
    # a second ingest of the same series from a zip (another file order) is the same volume
    with zipfile.ZipFile(tmp_path / "ct.zip", "w") as zf:
        for path in sorted((tmp_path / "ct").iterdir(), reverse=True):
            zf.write(path, f"scans/{path.name}")
        zf.writestr("README.txt", "not a slice")
    again = workspace.ingest([tmp_path / "ct.zip"])
    assert [(r.status, r.id) for r in again] == [("duplicate", result.id)]
    assert any("README.txt" in n for n in again[0].notes or [])
    uploaded = workspace.ingest_file(tmp_path / "ct.zip")  # an upload: one file, one series
    assert (uploaded.status, uploaded.id) == ("duplicate", result.id)
    with pytest.raises(InvalidInput, match="belongs to ingest"):  # depth, spacing, affine... are ingest's
        workspace.set_image_meta(row.id, {"spacing": 1.0}, "ana")


def test_a_tilted_series_keeps_its_orientation(sqlite_workspace: gv.Workspace, tmp_path: Path, hu: np.ndarray) -> None:
    a = np.radians(20)
    iop = (1.0, 0.0, 0.0, 0.0, np.cos(a), -np.sin(a))  # rows tilted 20 degrees about the patient's x axis
    write_series(tmp_path / "tilted", hu, orientation=iop, step=2.5)
    volume = sqlite_workspace.open_volume(_one(sqlite_workspace.ingest([tmp_path / "tilted"])).id or "")
    row, col = np.array(iop[:3]), np.array(iop[3:])
    columns = LPS_TO_RAS[:3, :3] @ np.stack([row * 0.7, col * 0.7, np.cross(row, col) * 2.5], axis=1)
    np.testing.assert_allclose(volume.affine[:3, :3], columns, atol=1e-5)
    assert volume.spacing == pytest.approx((0.7, 0.7, 2.5)) and np.array_equal(volume.voxels, hu)


def test_a_folder_of_two_series_is_two_volumes(sqlite_workspace: gv.Workspace, tmp_path: Path, hu: np.ndarray) -> None:
    write_series(tmp_path / "study", hu, series_number=2, description="abdomen")
    write_series(tmp_path / "study", hu[:, ::-1], series_number=3, description="flipped", step=5.0, seed=1)
    results = sqlite_workspace.ingest([tmp_path / "study"])
    assert sorted(r.name for r in results) == ["study-s2-abdomen", "study-s3-flipped"]
    assert all(r.status == "added" and "holds 2 series" in (r.notes or [""])[0] for r in results)
    spacings = {r.name: sqlite_workspace.get_image(r.id or "").meta["spacing"][2] for r in results}
    assert spacings == {"study-s2-abdomen": 2.5, "study-s3-flipped": 5.0}


def test_missing_and_uneven_slices(sqlite_workspace: gv.Workspace, tmp_path: Path, hu: np.ndarray) -> None:
    write_series(tmp_path / "gap", hu, skip=(7, 8))
    gap = sqlite_workspace.ingest([tmp_path / "gap"])
    assert gap[0].status == "rejected" and "2 slice(s) missing" in (gap[0].reason or "")
    assert "between slice 6 (at -285.00 mm) and slice 7 (at -277.50 mm)" in (gap[0].reason or "")
    # positions rounded by a scanner: steps 2.45-2.55 mm are one volume on the mean spacing, with a note
    jitter = [2.5 + (0.05 if k % 2 else -0.05) for k in range(SHAPE[0] - 1)]
    uneven = _one(sqlite_workspace.ingest([write_series(tmp_path / "jitter", hu, steps=jitter)[0].parent]))
    assert "slice spacing varies from 2.450 to 2.550 mm" in (uneven.notes or [""])[0]
    # steps from 2 to 3 mm: not one regular volume
    wild = [2.0 if k % 2 else 3.0 for k in range(SHAPE[0] - 1)]
    refused = sqlite_workspace.ingest([write_series(tmp_path / "wild", hu, steps=wild)[0].parent])
    assert refused[0].status == "rejected" and "inconsistent slice spacing" in (refused[0].reason or "")
    # one slice turned 10 degrees: refused naming it
    paths = write_series(tmp_path / "turned", hu[:4])
    import pydicom

    ds = pydicom.dcmread(paths[0])
    ds.ImageOrientationPatient = [1, 0, 0, 0, np.cos(np.radians(10)), np.sin(np.radians(10))]
    ds.save_as(paths[0])
    turned = sqlite_workspace.ingest([tmp_path / "turned"])
    assert turned[0].status == "rejected" and "inconsistent orientation" in (turned[0].reason or "")
    assert sqlite_workspace.list_images()[1] == 1  # nothing of the refused series was stored


def test_nifti_round_trip_and_bad_affines(sqlite_workspace: gv.Workspace, tmp_path: Path, hu: np.ndarray) -> None:
    data = np.ascontiguousarray(hu.transpose(2, 1, 0))  # (i, j, k)
    ras = np.array([[0.8, 0, 0, -20.0], [0, 0.8, 0, -30.0], [0, 0, 3.0, 10.0], [0, 0, 0, 1]])  # i to R, j to A
    result = _one(sqlite_workspace.ingest([write_nifti(tmp_path / "head.nii.gz", data, ras)]))
    volume = sqlite_workspace.open_volume(result.id or "")
    # stored to L, P, S: x and y reversed; every voxel keeps its value and its place in the world
    assert volume.shape == SHAPE and np.array_equal(volume.voxels, hu[:, ::-1, ::-1])
    for x, y, z in [(0, 0, 0), (55, 47, 19), (3, 40, 7)]:
        i, j, k = SHAPE[2] - 1 - x, SHAPE[1] - 1 - y, z
        np.testing.assert_allclose(volume.affine @ [x, y, z, 1], ras @ [i, j, k, 1], atol=1e-6)
    assert volume.spacing == pytest.approx((0.8, 0.8, 3.0)) and volume.meta["acquired_orientation"] == "RAS"
    for name, affine in [("nan.nii", np.where(np.eye(4) > 0, np.nan, 0.0)), ("zero.nii", np.zeros((4, 4)))]:
        bad = write_nifti(tmp_path / name, data[:8, :8, :4], np.eye(4))
        raw = bytearray(bad.read_bytes())
        raw[280:328] = np.asarray(affine[:3], dtype="<f4").tobytes()  # srow_x/y/z, sform_code stays 2
        raw[252:254] = raw[254:256] = np.int16(2).tobytes()
        bad.write_bytes(bytes(raw))
        refused = sqlite_workspace.ingest([bad])[0]
        assert refused.status == "rejected" and "affine" in (refused.reason or ""), refused


@pytest.fixture
def served(sqlite_workspace: gv.Workspace, tmp_path: Path, hu: np.ndarray) -> tuple[TestClient, str, Volume]:
    write_series(tmp_path / "ct", hu, spacing=0.7, step=2.5)
    image_id = _one(sqlite_workspace.ingest([tmp_path / "ct"])).id or ""
    return TestClient(create_app(sqlite_workspace)), image_id, sqlite_workspace.open_volume(image_id)


def _windowed(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((arr.astype(np.float32) - lo) * (255.0 / (hi - lo)), 0, 255)


def _png(client: TestClient, url: str) -> np.ndarray:
    response = client.get(url)
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)), dtype=np.float32)


def test_slice_tiles_show_the_voxels_of_each_plane(served: tuple[TestClient, str, Volume], hu: np.ndarray) -> None:
    client, image_id, _ = served
    rows = round(SHAPE[0] * 2.5 / 0.7)  # coronal and sagittal: 2.5 mm slices shown on 0.7 mm square pixels
    sizes = {"axial": (56, 48), "coronal": (56, rows), "sagittal": (48, rows)}
    for plane, (w, h) in sizes.items():
        info = client.get(f"/iiif/3/{image_id}:{plane}:5/info.json").json()
        assert (info["width"], info["height"]) == (w, h)
        assert info["id"].endswith(f"/iiif/3/{image_id}:{plane}:5")
    lo, hi = -160.0, 240.0
    axial = _png(client, f"/iiif/3/{image_id}:axial:7/full/max/0/default.png")
    assert np.abs(axial - _windowed(hu[7], lo, hi)).max() <= 1.0
    # coronal slice y = 20: rows z from superior (top) down, each row at its pixel centre between slices
    centres = np.clip((np.arange(rows) + 0.5) * SHAPE[0] / rows - 0.5, 0, SHAPE[0] - 1)
    z = centres[::-1]
    z0 = np.floor(z).astype(int)
    z1 = np.minimum(z0 + 1, SHAPE[0] - 1)
    t = (z - z0)[:, None]
    coronal = hu[z0, 20, :] * (1 - t) + hu[z1, 20, :] * t
    got = _png(client, f"/iiif/3/{image_id}:coronal:20/full/max/0/default.png")
    assert np.abs(got - _windowed(coronal, lo, hi)).max() <= 1.0
    sagittal = hu[z0, :, 30] * (1 - t) + hu[z1, :, 30] * t
    got = _png(client, f"/iiif/3/{image_id}:sagittal:30/full/max/0/default.png")
    assert np.abs(got - _windowed(sagittal, lo, hi)).max() <= 1.0
    # a window in the reference (lung: centre -600, width 1500), and the same slice as Deep Zoom
    lung = _png(client, f"/iiif/3/{image_id}:axial:7:-600,1500/full/max/0/default.png")
    assert np.abs(lung - _windowed(hu[7], -1350, 150)).max() <= 1.0
    dzi = client.get(f"/dzi/{image_id}:coronal:20.dzi").text
    assert f'Width="56" Height="{rows}"' in dzi
    tile = client.get(f"/dzi/{image_id}:coronal:20_files/7/0_0.png")
    assert tile.status_code == 200 and tile.headers["cache-control"].endswith("immutable")
    assert np.abs(np.asarray(Image.open(io.BytesIO(tile.content)), np.float32) - _windowed(coronal, lo, hi)).max() <= 1
    # the plain id is the middle axial slice (2D clients)
    plain = _png(client, f"/iiif/3/{image_id}/full/max/0/default.png")
    assert np.abs(plain - _windowed(hu[10], lo, hi)).max() <= 1.0


@pytest.mark.parametrize(
    ("suffix", "status"),
    [(":oblique:3", 400), (":axial:20", 404), (":sagittal:56", 404), (":axial:x", 400), (":axial:1:40,0", 400)],
)
def test_bad_slices_are_4xx(served: tuple[TestClient, str, Volume], suffix: str, status: int) -> None:
    client, image_id, _ = served
    for url in (f"/iiif/3/{image_id}{suffix}/info.json", f"/iiif/3/{image_id}{suffix}/full/max/0/default.jpg"):
        response = client.get(url)
        assert response.status_code == status, (url, response.text)
        assert response.json()["error"]["message"]


def test_annotations_on_slices_and_3d_boxes(
    served: tuple[TestClient, str, Volume], sqlite_workspace: gv.Workspace
) -> None:
    client, image_id, volume = served
    sqlite_workspace.labels.set("lesion", "box")  # a schema that declares none of the volume attributes
    rows = round(SHAPE[0] * 2.5 / 0.7)
    body = {
        "annotations": [
            # on coronal slice 20, lower than the axial image is tall (48): the canvas is every plane's
            {
                "kind": "box",
                "label": "lesion",
                "bbox": [10, 40, 30, rows - 1],
                "attributes": {"plane": "coronal", "slice": 20},
            },
            {
                "kind": "box",
                "label": "lesion",
                "bbox": [8, 6, 20, 18],
                "attributes": {"plane": "axial", "z0": 4, "z1": 9},
            },
        ],
        "actor": "ana",
    }
    response = client.post(f"/api/v1/images/{image_id}/annotations", json=body)
    assert response.status_code == 201, response.text
    stored = sqlite_workspace.annotations.query(image_id)
    boxes = [volume.grid.voxel_box(stored.xyxy[i], stored.attributes[i]) for i in range(len(stored))]
    k = SHAPE[0] / rows
    assert boxes[0] == pytest.approx((10, 20, SHAPE[0] - (rows - 1) * k, 30, 21, SHAPE[0] - 40 * k))
    assert boxes[1] == pytest.approx((8, 6, 4, 20, 18, 9))
    with pytest.raises(InvalidInput):
        volume.grid.voxel_box([0, 0, 1, 1], {"plane": "axial", "z0": 9, "z1": 4})
    assert isinstance(stored, Annotations)
