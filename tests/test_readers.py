"""Every reader on real pixels: sizes, levels, physical metadata, and read_region against the source array."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

import gigavision as gv
from gigavision.errors import InvalidInput
from gigavision.images import list_readers
from gigavision.images.cache import TileCache
from tests import formats

SCENE = formats.ihc_scene(3000, 2000)


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int32) - b.astype(np.int32)).mean())


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("formats")
    return {
        "ome": formats.write_ome_tiff(d / "scene.ome.tif", SCENE, mpp=0.5),
        "geo": formats.write_geotiff(d / "scene_geo.tif", SCENE, (500_000.0, 4_100_000.0), 10.0, 32633),
        "svs": formats.write_svs(d / "scene.svs", formats.ihc_scene(5000, 4000), mpp=0.499),
        "dicom": formats.write_dicom_gray(d / "moon.dcm", data.moon().astype(np.uint16) * 100, 0.2, 1.0, -1024.0),
        "dicom_wsi": formats.write_dicom_wsi(d / "wsi.dcm", SCENE, 256, mpp=0.5),
    }


def test_ome_tiff_pyramid_and_mpp(files: dict[str, Path]) -> None:
    with gv.open_image(files["ome"]) as src:
        assert src.name == "tiff" and src.info.format == "ome-tiff"
        assert (src.width, src.height) == (3000, 2000)
        assert [lv.width for lv in src.levels] == [3000, 1500, 750, 375]
        assert src.info.mpp_x == pytest.approx(0.5)
        # lossless (zlib) file: exact pixels at level 0 and on the subsampled level 1
        assert np.array_equal(src.read_region(gv.Region(1234, 567, 400, 300)), SCENE[567:867, 1234:1634])
        assert np.array_equal(src.read_window(1, 100, 100, 50, 40), SCENE[::2, ::2][100:140, 100:150])


def test_geotiff_keeps_crs_and_affine(files: dict[str, Path]) -> None:
    with gv.open_image(files["geo"]) as src:
        assert src.info.format == "geotiff"
        assert src.info.crs == "EPSG:32633"
        assert src.info.transform == (10.0, 0.0, 500_000.0, 0.0, -10.0, 4_100_000.0)
        assert np.array_equal(src.read_region(gv.Region(2900, 1900, 100, 100)), SCENE[1900:2000, 2900:3000])


def test_vendor_slide_through_openslide(files: dict[str, Path]) -> None:
    with gv.open_image(files["svs"]) as src:
        assert src.name == "openslide" and src.info.format == "aperio"
        assert src.info.mpp_x == pytest.approx(0.499)
        assert len(src.levels) == 3 and src.levels[1].downsample == pytest.approx(4.0)
        ref = formats.ihc_scene(5000, 4000)
        assert _mean_abs(src.read_region(gv.Region(1000, 1000, 600, 500)), ref[1000:1500, 1000:1600]) < 4


def test_dicom_single_frame_applies_rescale(files: dict[str, Path]) -> None:
    with gv.open_image(files["dicom"]) as src:
        assert src.name == "dicom" and src.info.modality == "OT"
        assert src.info.mpp_x == pytest.approx(200.0)  # 0.2 mm pixel spacing
        arr = src.read_region(gv.Region(0, 0, 512, 512))
        assert arr.dtype == np.float32
        expected = data.moon().astype(np.float32) * 100 - 1024
        assert np.array_equal(arr[:, :, 0], expected)


def test_dicom_tiled_wsi_frames_are_tiles(files: dict[str, Path]) -> None:
    with gv.open_image(files["dicom_wsi"]) as src:
        assert src.info.tiled and src.levels[0].tile_width == 256
        assert (src.width, src.height, src.info.mpp_x) == (3000, 2000, pytest.approx(0.5))
        assert np.array_equal(src.read_region(gv.Region(700, 300, 500, 600)), SCENE[300:900, 700:1200])


def test_pillow_reader_and_halving_levels(samples: dict[str, Path]) -> None:
    with gv.open_image(samples["retina.jpg"]) as src:
        assert src.name == "pillow" and (src.width, src.height) == (1411, 1411)
        assert [lv.width for lv in src.levels] == [1411, 706, 353, 177]
        full = src.read_region(gv.Region(0, 0, 1411, 1411))
        assert _mean_abs(full, data.retina()) < 3  # JPEG round trip of the real retina
        half = src.read_window(1, 0, 0, 706, 706)
        assert _mean_abs(half[:700, :700], full[::2, ::2][:700, :700]) < 6


def test_format_is_detected_by_content_not_extension(samples: dict[str, Path], tmp_path: Path) -> None:
    disguised = tmp_path / "really_a_png.tif"
    disguised.write_bytes(samples["coins.png"].read_bytes())
    with gv.open_image(disguised) as src:
        assert src.name == "pillow" and src.info.format == "png"
        assert np.array_equal(src.read_region(gv.Region(0, 0, 384, 303))[:, :, 0], data.coins())


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    photo = data.astronaut()[:, :400]  # 512 high, 400 wide
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    Image.fromarray(photo).save(path, quality=95, exif=exif)
    with gv.open_image(path) as src:
        assert (src.width, src.height) == (512, 400)
        arr = src.read_region(gv.Region(0, 0, 512, 400))
        assert _mean_abs(arr, np.rot90(photo, -1)) < 4


def test_png_header_probe_decodes_no_pixel_and_keeps_its_exif_orientation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import PngImagePlugin

    photo = data.astronaut()[:, :400]
    plain, turned = tmp_path / "plain.png", tmp_path / "turned.png"
    Image.fromarray(photo).save(plain)
    exif = Image.Exif()
    exif[0x0112] = 6  # Pillow writes the eXIf chunk before the image data, as the PNG 1.5 extension asks
    Image.fromarray(photo).save(turned, exif=exif)

    def no_decode(self: object) -> None:
        raise AssertionError("a header probe decoded the pixels")

    with monkeypatch.context() as m:  # Pillow's getexif() on a PNG without an early eXIf decodes the image
        m.setattr(PngImagePlugin.PngImageFile, "load", no_decode)
        with gv.open_image(plain) as src:
            assert (src.width, src.height) == (400, 512)
        with gv.open_image(turned) as src:
            assert (src.width, src.height) == (512, 400)
    with gv.open_image(turned) as src:
        assert _mean_abs(src.read_region(gv.Region(0, 0, 512, 400)), np.rot90(photo, -1)) < 1


def test_16bit_tiff_keeps_dtype(samples: dict[str, Path]) -> None:
    with gv.open_image(samples["moon_16bit.tif"]) as src:
        assert src.info.dtype == "uint16" and src.info.bands == 1
        assert np.array_equal(src.read_region(gv.Region(0, 0, 512, 512))[:, :, 0], data.moon().astype(np.uint16) * 257)


def test_large_untiled_jpeg_opens_through_libvips(tmp_path: Path) -> None:
    import pyvips

    big = pyvips.Image.new_from_array(SCENE).replicate(3, 5)  # 9000 x 10000, above Pillow's whole-decode size
    path = tmp_path / "big.jpg"
    big.jpegsave(str(path), Q=95)
    with gv.open_image(path) as src:
        assert src.name == "pyvips" and (src.width, src.height) == (9000, 10000)
        assert _mean_abs(src.read_region(gv.Region(3100, 2100, 300, 200)), SCENE[100:300, 100:400]) < 4


def test_read_outside_is_zero_and_bad_level_is_rejected(files: dict[str, Path]) -> None:
    with gv.open_image(files["ome"]) as src:
        edge = src.read_window(0, 2900, 1950, 200, 100)
        assert np.array_equal(edge[:50, :100], SCENE[1950:2000, 2900:3000])
        assert not edge[50:].any() and not edge[:, 100:].any()
        with pytest.raises(InvalidInput, match="level 9 does not exist"):
            src.read_window(9, 0, 0, 10, 10)


def test_tile_cache_hits_and_thread_safety(files: dict[str, Path]) -> None:
    cache = TileCache(64 * 1024 * 1024)
    with gv.open_image(files["ome"], cache=cache) as src:
        regions = [gv.Region(x, y, 300, 300) for x in range(0, 2700, 450) for y in range(0, 1700, 350)]
        serial = [src.read_region(r).copy() for r in regions]
        hits_before = cache.hits
        with ThreadPoolExecutor(8) as pool:
            parallel = list(pool.map(src.read_region, regions * 3))
        assert cache.hits > hits_before
        for i, arr in enumerate(parallel):
            assert np.array_equal(arr, serial[i % len(regions)])
    assert cache.nbytes <= cache.max_bytes


def test_cache_is_bounded() -> None:
    cache = TileCache(1000)
    for i in range(10):
        cache.put(i, np.zeros(300, dtype=np.uint8))
    assert cache.nbytes <= 1000 and cache.get(0) is None and cache.get(9) is not None


def test_registry_lists_builtin_readers_and_accepts_new_ones(tmp_path: Path) -> None:
    from gigavision.images import register_reader
    from gigavision.images.source import ImageInfo, ImageSource, Level

    names = [e.name for e in list_readers()]
    assert {"dicom", "openslide", "tiff", "pillow", "pyvips"} <= set(names)
    assert names.index("dicom") < names.index("tiff")  # DICOM files may also look like TIFF/JPEG to others

    @register_reader("npy", sniff=lambda path, head: head.startswith(b"\x93NUMPY"), priority=5)
    class NpySource(ImageSource):
        def _probe(self) -> ImageInfo:
            self._arr = np.load(self.path)
            h, w = self._arr.shape[:2]
            return ImageInfo(w, h, [Level(w, h, 1.0, w, h)], 1, str(self._arr.dtype), "npy", "npy")

        def _read_tile(self, level: int, tx: int, ty: int) -> np.ndarray:
            return self._arr

    try:
        path = tmp_path / "coins.npy"
        np.save(path, data.coins())
        with gv.open_image(path) as src:
            assert src.name == "npy"
            assert np.array_equal(src.read_region(gv.Region(10, 10, 5, 5))[:, :, 0], data.coins()[10:15, 10:15])
    finally:
        from gigavision.images.registry import _READERS

        _READERS.discard("npy")


def test_concurrent_first_decode_happens_once(samples: dict[str, Path]) -> None:
    calls = []
    src = gv.open_image(samples["astronaut.jpg"], cache=TileCache(64 * 1024 * 1024))
    original = src._decode  # type: ignore[attr-defined]

    def counting() -> np.ndarray:
        calls.append(threading.get_ident())
        return original()

    src._decode = counting  # type: ignore[attr-defined]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: src.read_region(gv.Region(0, 0, 64, 64)), range(12)))
    assert len(calls) == 1
