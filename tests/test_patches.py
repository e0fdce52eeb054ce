"""Annotations.crop / scale per kind, and patch samplers on the real 1-gigapixel slide and a marked photo."""

from __future__ import annotations

import multiprocessing
import pickle
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import shapely
from PIL import Image

import gigavision as gv
from gigavision.annotations import Annotations
from gigavision.datasets import DatasetVersion, create_version
from gigavision.datasets.patches import (
    AnnotationCentredSampler,
    ClassBalancedSampler,
    GridSampler,
    PatchImages,
    PatchSampler,
    RandomSampler,
)
from gigavision.errors import InvalidInput
from gigavision.tiling import GridSpec


# -- Annotations.crop -------------------------------------------------------------------------------------
def test_crop_clips_and_shifts_boxes() -> None:
    ann = Annotations.from_boxes(
        [[100, 100, 300, 200], [210, 160, 260, 190], [500, 500, 600, 600], [0, 0, 200, 150]],
        ["a", "b", "c", "d"],
        score=[0.9, 0.8, 0.7, 0.6],
        id=[11, 12, 13, 14],
        attributes=[{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}],
    )
    out = ann.crop(200, 150, 400, 350)
    # "d" only touches the window's corner (200, 150): no area left, dropped; "c" is outside
    assert out.label.tolist() == ["a", "b"]
    np.testing.assert_array_equal(out.xyxy, [[0, 0, 100, 50], [10, 10, 60, 40]])
    assert out.score.tolist() == [0.9, 0.8] and out.id.tolist() == [11, 12]
    assert [a["n"] for a in out.attributes] == [1, 2]
    # "a" keeps 100 x 50 of its 200 x 100: a quarter
    assert ann.crop(200, 150, 400, 350, min_visible=0.3).label.tolist() == ["b"]
    assert ann.crop(200, 150, 400, 350, min_visible=0.25).label.tolist() == ["a", "b"]
    with pytest.raises(InvalidInput, match="x1 > x0"):
        ann.crop(10, 10, 10, 20)


def test_crop_polygon_with_a_hole_cut_by_the_window_edge() -> None:
    outer = [(0, 0), (100, 0), (100, 100), (0, 100)]
    hole = [(40, 40), (60, 40), (60, 60), (40, 60)]
    ann = Annotations.from_polygons([shapely.Polygon(outer, [hole])], "vessel")

    # the window's left edge runs through the hole: the hole becomes a notch in the outline
    cut = ann.crop(50, 0, 150, 100)
    (g,) = cut.geometry
    assert g.geom_type == "Polygon" and len(g.interiors) == 0
    assert g.area == pytest.approx(50 * 100 - 10 * 20)
    np.testing.assert_allclose(cut.xyxy, [[0, 0, 50, 100]])
    assert not g.contains(shapely.Point(5, 50)) and g.contains(shapely.Point(15, 50))
    assert g.contains(shapely.Point(5, 20))

    # a window holding the whole hole keeps it as a hole
    (kept,) = ann.crop(-10, -10, 150, 150).geometry
    assert len(kept.interiors) == 1 and kept.area == pytest.approx(100 * 100 - 20 * 20)
    assert kept.interiors[0].bounds == (50, 50, 70, 70)

    # a strip through the hole leaves two pieces: one MultiPolygon row
    (strip,) = ann.crop(0, 45, 100, 55).geometry
    assert strip.geom_type == "MultiPolygon" and len(strip.geoms) == 2
    assert strip.area == pytest.approx(2 * 40 * 10)

    # touching only along an edge leaves no area: dropped; min_visible compares areas
    assert len(ann.crop(100, 0, 200, 100)) == 0
    assert ann.area[0] == pytest.approx(9600)  # so the cut keeps 4800 / 9600 = 0.5 of it
    assert len(ann.crop(50, 0, 150, 100, min_visible=0.5)) == 1
    assert len(ann.crop(50, 0, 150, 100, min_visible=0.51)) == 0

    # a self-intersecting drawing (a bow tie) is repaired, not an error: its left lobe remains
    (lobe,) = Annotations.from_polygons([[(0, 0), (10, 10), (10, 0), (0, 10)]], "bow").crop(0, 0, 5, 10).geometry
    assert lobe.area == pytest.approx(25) and lobe.bounds == (0, 0, 5, 10)


def test_crop_points_masks_and_tags() -> None:
    pts = Annotations.from_points([[5, 5], [10, 10], [19.5, 3]], ["p", "q", "r"])
    out = pts.crop(0, 0, 10, 10)  # half-open: (10, 10) belongs to the next window
    assert out.label.tolist() == ["p"]
    assert pts.crop(10, 0, 20, 20).label.tolist() == ["q", "r"]
    (p,) = pts.crop(10, 0, 20, 20).geometry[1:]
    assert (p.x, p.y) == (9.5, 3)

    m = np.zeros((10, 20), dtype=bool)  # h 10, w 20 at level-0 (100, 50)
    m[:, 3:17] = True
    m[4, 10] = False
    masks = Annotations.from_masks([m], [(100, 50)], "blob")
    np.testing.assert_array_equal(masks.xyxy, [[103, 50, 117, 60]])
    cut = masks.crop(110, 0, 200, 55)
    np.testing.assert_array_equal(cut.xyxy, [[0, 50, 7, 55]])
    expected = m[0:5, 10:17]
    np.testing.assert_array_equal(cut.decode_mask(0), expected)
    assert cut.area[0] == expected.sum() == 34
    assert len(masks.crop(110, 0, 200, 55, min_visible=0.3)) == 0  # 34 of 139 pixels left
    assert len(masks.crop(0, 0, 103, 200)) == 0  # only unset columns

    tags = Annotations.from_tags(["tumour", "grade:2"])
    both = Annotations.merge([tags, masks])
    out = both.crop(5000, 5000, 5100, 5100, min_visible=1.0)
    assert out.kind.tolist() == ["tag", "tag"] and np.isnan(out.xyxy).all()


# -- Annotations.scale ------------------------------------------------------------------------------------
def test_scale_per_kind() -> None:
    ann = Annotations.merge(
        [
            Annotations.from_boxes([[100, 200, 300, 400]], "box"),
            Annotations.from_polygons([[(0, 0), (400, 0), (400, 400)]], "tri"),
            Annotations.from_points([[64, 32]], "pt"),
            Annotations.from_tags(["tag"]),
        ]
    )
    out = ann.scale(0.25)
    np.testing.assert_allclose(out.xyxy[:3], [[25, 50, 75, 100], [0, 0, 100, 100], [16, 8, 16, 8]])
    assert out.geometry[1].area == pytest.approx(400 * 400 / 2 / 16)
    assert (out.geometry[2].x, out.geometry[2].y) == (16, 8)
    assert out.kind[3] == "tag" and np.isnan(out.xyxy[3]).all()
    assert ann.xyxy[0].tolist() == [100, 200, 300, 400]  # the original is unchanged


def test_scale_masks_by_nearest_neighbour() -> None:
    rng = np.random.default_rng(1)
    m = rng.random((8, 12)) < 0.6
    m[0, 0] = m[-1, -1] = True  # the tight box stays 8 x 12
    ann = Annotations.from_masks([m], [(16, 32)], "m")
    half = ann.scale(0.5)  # target pixel (i, j) samples source pixel (2i + 1, 2j + 1)
    nearest = m[1::2, 1::2]
    ys, xs = np.nonzero(nearest)
    np.testing.assert_array_equal(half.decode_mask(0), nearest[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    np.testing.assert_array_equal(half.xyxy, [[8 + xs.min(), 16 + ys.min(), 8 + xs.max() + 1, 16 + ys.max() + 1]])

    double = ann.scale(2.0)
    np.testing.assert_array_equal(double.decode_mask(0), np.kron(m, np.ones((2, 2), dtype=bool)))
    np.testing.assert_array_equal(double.xyxy, [[32, 64, 56, 80]])  # 12 x 8 at (16, 32), doubled

    # one pixel at (101, 101) seen at 1/64: kept as the pixel under its centre
    tiny = Annotations.from_masks([np.ones((1, 1), dtype=bool)], [(101, 101)], "dot").scale(1 / 64)
    np.testing.assert_array_equal(tiny.xyxy, [[1, 1, 2, 2]])
    assert tiny.decode_mask(0).tolist() == [[True]]
    with pytest.raises(InvalidInput, match="positive finite"):
        ann.scale(0)


# -- samplers on real images ----------------------------------------------------------------------------
TUMOURS = [[1000, 1000, 1400, 1300], [30_000, 20_000, 30_400, 20_300], [20_000, 5000, 20_200, 5100]]
VESSEL_HOLE = shapely.Polygon(
    [(10_000, 15_000), (10_400, 15_000), (10_400, 15_400), (10_000, 15_400)],
    [[(10_150, 15_150), (10_250, 15_150), (10_250, 15_250), (10_150, 15_250)]],
)
VESSEL_TRI = shapely.Polygon([(35_000, 3000), (35_300, 3000), (35_150, 3260)])
CELLS = [[2000 + 1800 * k, 12_000 + (k % 3) * 3000] for k in range(20)]
MAGENTA, CYAN = (255, 0, 255), (0, 255, 255)
MARKER = (300, 100, 364, 164)  # level-0 box of the magenta square painted into the photo
DISC_CENTRE, DISC_RADIUS = (100, 400), 20


@dataclass
class Planted:
    ws: gv.Workspace
    slide: str
    version: DatasetVersion


@dataclass
class Marked:
    ws: gv.Workspace
    photo: str
    disc: np.ndarray


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory, samples: dict[str, Path]) -> Iterator[Marked]:
    """A real photo with a magenta square and a cyan disc painted in, annotated as a box and a mask (live)."""
    root = tmp_path_factory.mktemp("marked")
    photo = np.asarray(Image.open(samples["astronaut.jpg"]).convert("RGB")).copy()
    x0, y0, x1, y1 = MARKER
    photo[y0:y1, x0:x1] = MAGENTA
    yy, xx = np.mgrid[0:512, 0:512]
    disc = (xx - DISC_CENTRE[0]) ** 2 + (yy - DISC_CENTRE[1]) ** 2 <= DISC_RADIUS**2
    photo[disc] = CYAN
    Image.fromarray(photo).save(root / "marked.png")  # lossless: the colours stay exact
    ws = gv.init_workspace(root / "ws")
    (result,) = ws.ingest([root / "marked.png"])
    assert result.id
    ys, xs = np.nonzero(disc)
    crop = disc[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    marks = Annotations.merge(
        [
            Annotations.from_boxes([MARKER], "marker"),
            Annotations.from_masks([crop], [(int(xs.min()), int(ys.min()))], "blob"),
        ]
    )
    ws.annotations.add(result.id, marks, "ana")  # proposed: live annotations
    yield Marked(ws, result.id, disc)
    ws.close()


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory, gigapixel_tiff: Path) -> Iterator[Planted]:
    """The 1-gigapixel slide with boxes, polygons and points planted far apart, frozen in a dataset version."""
    ws = gv.init_workspace(tmp_path_factory.mktemp("planted") / "ws")
    (result,) = ws.ingest([gigapixel_tiff])
    slide = result.id
    assert slide
    ws.annotations.add(slide, Annotations.from_boxes(TUMOURS, "tumour", status=["accepted"] * 3), "ana")
    ws.annotations.add(
        slide, Annotations.from_polygons([VESSEL_HOLE, VESSEL_TRI], "vessel", status=["accepted"] * 2), "ana"
    )
    ws.annotations.add(slide, Annotations.from_points(CELLS, "cell", status=["accepted"] * 20), "ana")
    ws.annotations.add(slide, Annotations.from_boxes([[0, 0, 10, 10]], "tumour", status=["rejected"]), "bo")
    version = create_version(ws, "slide", split="train=1.0")
    yield Planted(ws, slide, version)
    ws.close()


def slide_images(p: Planted) -> PatchImages:
    return PatchImages.from_version(p.version, "train")


@pytest.mark.slow  # the gigapixel fixture
def test_annotation_centred_patches_hold_their_object_at_the_centre(planted: Planted) -> None:
    images = slide_images(planted)
    assert images.ids == [planted.slide]
    at0 = AnnotationCentredSampler(images, 512, level=0)
    assert len(at0) == 3 + 2 + 20
    labels = Counter()
    for i in range(len(at0)):
        patch = at0[i]
        assert patch.pixels.shape == (512, 512, 3) and patch.pixels.dtype == np.uint8 and patch.level == 0
        ann = patch.annotations
        assert len(ann) == 1  # objects are far apart: each patch sees only its own
        x0, y0, x1, y1 = ann.xyxy[0]
        assert abs((x0 + x1) / 2 - 256) <= 0.5 and abs((y0 + y1) / 2 - 256) <= 0.5
        wx0, wy0, wx1, wy1 = patch.window
        assert (wx1 - wx0, wy1 - wy0) == (512, 512)
        labels[str(ann.label[0])] += 1
    assert labels == {"tumour": 3, "vessel": 2, "cell": 20}

    # the first tumour at level 2 (downsample 4): 100 x 75 patch pixels around the centre
    at2 = AnnotationCentredSampler(images, 512, level=2, classes=["tumour"])
    patch = at2[0]
    # centre (300, 287.5) level-2 px; the window starts on level 2's pixel grid at (44, 32)
    assert patch.window == (176, 128, 176 + 2048, 128 + 2048)
    np.testing.assert_allclose(patch.annotations.xyxy, [[206, 218, 306, 293]])
    source = planted.ws.open_source(planted.slide)
    np.testing.assert_array_equal(patch.pixels, source.read_window(2, 44, 32, 512, 512))

    # the vessel with a hole, at level 1: the hole is inside the patch and stays a hole
    vessels = AnnotationCentredSampler(images, 256, level=1, classes=["vessel"])
    (g,) = vessels[0].annotations.geometry
    assert len(g.interiors) == 1 and g.area == pytest.approx((400 * 400 - 100 * 100) / 4)
    assert g.centroid.x == pytest.approx(128) and g.centroid.y == pytest.approx(128)


def test_patch_pixels_show_the_painted_marks(marked: Marked) -> None:
    images = PatchImages.from_workspace(marked.ws, [marked.photo])
    for level in (0, 1):
        sampler = AnnotationCentredSampler(images, 128, level=level)
        assert len(sampler) == 2
        for i in range(2):
            patch = sampler[i]
            ann = patch.annotations
            if ann.kind[0] == "box":
                x0, y0, x1, y1 = (int(v) for v in ann.xyxy[0])
                assert (x1 - x0, y1 - y0) == (64 >> level, 64 >> level)
                inside = patch.pixels[y0:y1, x0:x1].reshape(-1, 3)
                assert np.abs(inside.astype(int) - MAGENTA).max() <= (0 if level == 0 else 2)
                ring = patch.pixels[y0 - 3 : y1 + 3, x0 - 3 : x1 + 3].reshape(-1, 3)
                assert (np.abs(ring.astype(int) - MAGENTA).max(axis=1) > 60).sum() >= 4 * (64 >> level)
            else:
                m = ann.decode_mask(0)
                mx, my = (int(v) for v in ann.xyxy[0, :2])
                under = patch.pixels[my : my + m.shape[0], mx : mx + m.shape[1]][m]
                # nearest neighbour picks source pixels, so level 1's mask still sits on cyan (bar JPEG-free edges)
                assert (np.abs(under.astype(int) - CYAN).max(axis=1) <= 40).mean() >= 0.9
                assert m.sum() == pytest.approx(marked.disc.sum() / 4**level, rel=0.15)
    # a pickled copy opens its own workspace and reads the same patch
    sampler = RandomSampler(images, 96, num_samples=4, level=0, seed=4, foreground=False)
    copy = pickle.loads(pickle.dumps(sampler))
    assert copy.images._ws is None
    for i in range(4):
        a, b = sampler[i], copy[i]
        assert a.window == b.window and a.annotations.to_records() == b.annotations.to_records()
        np.testing.assert_array_equal(a.pixels, b.pixels)
    assert copy.images.workspace() is not marked.ws
    copy.images.close()
    with pytest.raises(InvalidInput, match="no microns-per-pixel"):
        RandomSampler(images, 64, num_samples=1, mpp=0.5)
    with pytest.raises(InvalidInput, match=r"has levels 0\.\.1, not level 2"):
        RandomSampler(images, 64, num_samples=1, level=2)
    with pytest.raises(InvalidInput, match="not both"):
        RandomSampler(images, 64, num_samples=1, level=1, mpp=1.0)
    with pytest.raises(InvalidInput, match=r"labelled \['nerve'\]"):
        ClassBalancedSampler(images, 64, num_samples=1, classes=["nerve"])


@pytest.mark.slow  # the gigapixel fixture
def test_mpp_picks_the_level_and_resizes_only_when_needed(planted: Planted) -> None:
    images = slide_images(planted)
    exact = AnnotationCentredSampler(images, 512, mpp=1.0, classes=["tumour"])  # 0.25 µm/px * 4: level 2
    assert exact.levels.tolist() == [2] and exact.downsample.tolist() == [4.0]
    near = AnnotationCentredSampler(images, 512, mpp=1.01, classes=["tumour"])  # within 2 %: level 2 as is
    assert near.levels.tolist() == [2] and near.downsample.tolist() == [4.0]
    third = AnnotationCentredSampler(images, 512, mpp=0.75, classes=["tumour"])  # 3x: level 1, resized
    assert third.levels.tolist() == [1] and third.downsample.tolist() == [3.0]
    patch = third[0]
    assert patch.pixels.shape == (512, 512, 3) and patch.level == 1 and patch.downsample == 3.0
    x0, y0, x1, y1 = patch.window
    assert (x1 - x0, y1 - y0) == (1536, 1536)
    np.testing.assert_allclose(patch.annotations.xyxy[0, 2] - patch.annotations.xyxy[0, 0], 400 / 3)
    # the same area read at level 0 and shrunk 3x looks the same (JPEG and filter differences aside)
    full = planted.ws.open_source(planted.slide).read_window(0, x0, y0, 1536, 1536)
    shrunk = np.asarray(Image.fromarray(full).resize((512, 512), Image.Resampling.BOX)).astype(int)
    assert np.abs(shrunk - patch.pixels.astype(int)).mean() < 6


def non_background(pixels: np.ndarray) -> float:
    """Share of pixels that are not the slide's white background."""
    return float((pixels.min(axis=2) < 235).mean())


@pytest.mark.slow  # the gigapixel fixture
def test_grid_sampler_covers_the_tissue(planted: Planted) -> None:
    images = slide_images(planted)
    every = GridSampler(images, GridSpec(size=256), level=4)  # 2500 x 1562 level pixels
    assert len(every) == 10 * 7
    tissue = GridSampler(images, GridSpec(size=256, min_foreground=0.9), level=4)
    assert 0 < len(tissue) < len(every)
    kept = {tuple(w) for w in tissue.windows.tolist()}
    assert kept <= {tuple(w) for w in every.windows.tolist()}
    inside = [non_background(tissue[i].pixels) for i in range(len(tissue))]
    dropped = [i for i in range(len(every)) if tuple(every.windows[i].tolist()) not in kept]
    outside = [non_background(every[i].pixels) for i in dropped[::4]]
    print(f"grid: tissue {np.mean(inside):.3f} (min {min(inside):.3f}), dropped {np.mean(outside):.3f}")
    assert min(inside) > 0.6 and np.mean(inside) > 0.85
    assert np.mean(outside) < np.mean(inside) - 0.3


@pytest.mark.slow  # the gigapixel fixture
def test_random_foreground_patches_are_mostly_tissue(planted: Planted) -> None:
    images = slide_images(planted)
    fg = RandomSampler(images, 256, num_samples=40, level=3, seed=5)
    anywhere = RandomSampler(images, 256, num_samples=40, level=3, seed=5, foreground=False)
    fg_share = [non_background(p.pixels) for p in fg]
    any_share = [non_background(p.pixels) for p in anywhere]
    assert np.mean(fg_share) > 0.75 and np.mean([s > 0.5 for s in fg_share]) >= 0.9
    print(f"random: foreground {np.mean(fg_share):.3f}, anywhere {np.mean(any_share):.3f}")
    assert np.mean(any_share) < np.mean(fg_share) - 0.2
    mask = images.mask(0)
    windows = np.array([fg.window(i).window for i in range(len(fg))])
    assert (mask.fractions(windows) >= 0.5).mean() >= 0.95
    assert (windows[:, 0] >= 0).all() and (windows[:, 2] <= 40_000).all() and (windows[:, 3] <= 25_000).all()
    assert (windows % 8 == 0).all()  # on level 3's pixel grid


@pytest.mark.slow  # the gigapixel fixture
def test_class_balanced_frequencies_are_uniform(planted: Planted) -> None:
    images = slide_images(planted)
    sampler = ClassBalancedSampler(images, 512, num_samples=600, level=0, seed=1)
    assert sampler.classes == ["cell", "tumour", "vessel"]
    everything = images.annotations(0)
    counts: Counter[str] = Counter()
    offsets = set()
    for i in range(len(sampler)):
        x0, y0, x1, y1 = sampler.window(i).window
        assert (x1 - x0, y1 - y0) == (512, 512)
        whole = everything.crop(x0, y0, x1, y1, min_visible=0.999)  # the chosen object is wholly inside
        assert len(whole) == 1
        counts[str(whole.label[0])] += 1
        offsets.add((round(whole.xyxy[0, 0]), round(whole.xyxy[0, 1])))
    # 600 draws, 1/3 each: sd ≈ 11.5; cells are 20 of 25 objects but get a third of the patches
    assert all(150 <= counts[c] <= 250 for c in ("cell", "tumour", "vessel")), counts
    assert len(offsets) > 500  # objects land at random offsets, not always the same place
    patch = sampler[0]
    assert patch.pixels.shape == (512, 512, 3) and len(patch.annotations) == 1


def windows_of(sampler: PatchSampler, n: int) -> list[tuple[int, int, int, int]]:
    return [sampler.window(i).window for i in range(n)]


@pytest.mark.slow  # the gigapixel fixture
def test_samplers_are_deterministic_per_seed_epoch_and_index(planted: Planted) -> None:
    images = slide_images(planted)
    a = RandomSampler(images, 512, num_samples=50, seed=7)
    b = RandomSampler(images, 512, num_samples=50, seed=7)
    assert windows_of(a, 50) == windows_of(b, 50)
    assert [a.window(i).window for i in reversed(range(50))] == windows_of(b, 50)[::-1]  # any order
    assert windows_of(RandomSampler(images, 512, num_samples=50, seed=8), 50) != windows_of(a, 50)
    b.set_epoch(1)
    assert windows_of(b, 50) != windows_of(a, 50)
    assert a.window(-1) == a.window(49)
    with pytest.raises(IndexError):
        a.window(50)
    c1 = ClassBalancedSampler(images, 256, num_samples=30, seed=3)
    c2 = ClassBalancedSampler(images, 256, num_samples=30, seed=3)
    assert windows_of(c1, 30) == windows_of(c2, 30)
    j1 = AnnotationCentredSampler(images, 256, jitter=16, seed=3)
    j2 = AnnotationCentredSampler(images, 256, jitter=16, seed=3)
    assert windows_of(j1, 25) == windows_of(j2, 25) != windows_of(AnnotationCentredSampler(images, 256), 25)
    first, again = a[3], b.__class__(images, 512, num_samples=50, seed=7)[3]
    np.testing.assert_array_equal(first.pixels, again.pixels)


def sample_in_child(blob: bytes, indexes: list[int]) -> list[tuple[tuple[int, int, int, int], int, int]]:
    """Runs in a spawned process: unpickle a sampler, read patches with this process's own readers."""
    sampler = pickle.loads(blob)
    out = []
    for i in indexes:
        patch = sampler[i]
        out.append((patch.window, int(patch.pixels.astype(np.int64).sum()), len(patch.annotations)))
    sampler.images.close()
    return out


@pytest.mark.slow  # the gigapixel fixture
def test_sampler_pickles_into_a_spawn_child(planted: Planted) -> None:
    images = slide_images(planted)
    sampler = ClassBalancedSampler(images, 256, num_samples=20, level=1, seed=11)
    blob = pickle.dumps(sampler)
    assert len(blob) < 100_000  # ids, sizes and object boxes; no handles, no pixels
    expected = sample_in_child(blob, list(range(6)))  # in this process, from a fresh copy
    assert images.workspace() is planted.version.ws
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        got = pool.apply(sample_in_child, (blob, list(range(6))))
    assert [tuple(w) for w, _, _ in got] == [w for w, _, _ in expected]
    assert got == [(tuple(w), s, n) for w, s, n in expected]
    assert all(n >= 1 for _, _, n in got)


PEAK_RSS_CHILD = """
import pickle, sys
def hwm():
    status = open("/proc/self/status").read()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
sampler = pickle.loads(open(sys.argv[1], "rb").read())
sampler.images.workspace()
before = hwm()
shapes = {sampler[i].pixels.shape for i in range(len(sampler))}
assert shapes == {(512, 512, 3)}, shapes
print(f"BASE_KB={before} PEAK_KB={hwm()}")
"""


@pytest.mark.slow
def test_random_patches_from_the_gigapixel_slide_in_bounded_memory(planted: Planted, tmp_path: Path) -> None:
    """200 random 512² level-0 patches of a 1-gigapixel slide (3 GB decoded) in a fresh process: peak RSS."""
    sampler = RandomSampler(slide_images(planted), 512, num_samples=200, level=0, seed=2)
    path = tmp_path / "sampler.pkl"
    path.write_bytes(pickle.dumps(sampler))
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_CHILD, str(path)], capture_output=True, text=True, check=False, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    fields = dict(part.split("=") for part in proc.stdout.split())
    base_mb, peak_mb = int(fields["BASE_KB"]) / 1024, int(fields["PEAK_KB"]) / 1024
    print(f"patch sampling: base {base_mb:.0f} MB, peak {peak_mb:.0f} MB")
    assert peak_mb < 600
