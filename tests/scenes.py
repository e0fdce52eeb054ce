"""Scenes of real objects on real textures, for the detection and segmentation tests.

Objects: scikit-learn's handwritten digits (``"digit"``), coins cut from ``skimage.data.coins()`` (``"coin"``)
and the ``skimage.data.horse()`` silhouette filled with a real texture (``"horse"``), pasted at random scales
and positions, never overlapping, onto crops of ``skimage.data.grass()``, ``gravel()`` or ``brick()``. Every
scene is a pure function of its seed, so tests get the same pixels on every machine without a download.

Masks are exact and polygons trace mask pixel edges, so rasterising a polygon at pixel centres gives back the
mask (what a segmentation target test needs); boxes are the tight pixel-edge boxes of the masks.

    scene = make_scene(np.random.default_rng(0), size=128)      # one Scene
    version = scenes_version(ws, tmp_path / "src", n=60, size=96, seed=0, name="scenes")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import gigavision as gv
from gigavision.datasets.versions import DatasetVersion, create_version

CLASSES = ("digit", "coin", "horse")
SPLIT = "train=0.7,val=0.15,test=0.15"
TEXTURES = ("grass", "gravel", "brick")

# object size as a fraction of the scene side, per class (longest side of the object)
SIZES = {"digit": (0.22, 0.36), "coin": (0.18, 0.30), "horse": (0.30, 0.48)}


@dataclass(frozen=True)
class Scene:
    """One generated image and its objects (all in the image's pixels, x right, y down)."""

    pixels: np.ndarray  # (H, W, 3) uint8
    boxes: np.ndarray  # (N, 4) float64 xyxy, tight pixel-edge boxes of the masks
    masks: list[np.ndarray]  # N (H, W) bool instance masks
    polygons: list[Any]  # N shapely Polygon/MultiPolygon tracing the mask pixel edges (holes kept)
    labels: list[str]  # N class names from CLASSES

    def annotations(self, status: str = "accepted", source: str = "user:scenes") -> gv.Annotations:
        """The objects as polygon ``Annotations`` (what a human annotator would have drawn)."""
        n = len(self.labels)
        if n == 0:
            return gv.Annotations.empty()
        return gv.Annotations.from_polygons(self.polygons, self.labels, status=[status] * n, source=[source] * n)


# -- real sources (computed once per process) ------------------------------------------------------------
@cache
def _digits() -> np.ndarray:
    """The 1,797 8×8 digits as floats in 0..1."""
    from sklearn.datasets import load_digits

    return np.asarray(load_digits().images, dtype=np.float64) / 16.0


@cache
def _coins() -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """The coins photograph and its 24 coins as (cx, cy, r), found with a circular Hough transform."""
    from skimage.data import coins
    from skimage.feature import canny
    from skimage.transform import hough_circle, hough_circle_peaks

    img = coins()
    radii = np.arange(14, 36)
    acc = hough_circle(canny(img, sigma=3, low_threshold=10, high_threshold=50), radii)
    score, xs, ys, rs = hough_circle_peaks(acc, radii, min_xdistance=25, min_ydistance=25, total_num_peaks=30)
    found = [(int(x), int(y), int(r)) for s, x, y, r in zip(score, xs, ys, rs, strict=True) if s >= 0.4]
    return img, [(x, y, r) for x, y, r in found if r <= x < img.shape[1] - r and r <= y < img.shape[0] - r]


@cache
def _horse() -> np.ndarray:
    """The horse silhouette (True on the horse), cropped to its box."""
    from skimage.data import horse

    m = ~np.asarray(horse(), dtype=bool)
    ys, xs = np.nonzero(m)
    return m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


@cache
def _texture(name: str) -> np.ndarray:
    import skimage.data

    return np.asarray(getattr(skimage.data, name)(), dtype=np.float64) / 255.0


def _resize(a: np.ndarray, h: int, w: int, order: int = 1) -> np.ndarray:
    from skimage.transform import resize

    return np.asarray(resize(a.astype(np.float64), (h, w), order=order, anti_aliasing=order > 0, mode="edge"))


def _texture_crop(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random crop of a random texture (grey, 0..1), resampled to ``(h, w)``."""
    tex = _texture(TEXTURES[int(rng.integers(len(TEXTURES)))])
    n = tex.shape[0]
    side = int(rng.integers(min(max(h, w), n), n + 1))  # zoomed out up to the whole texture
    y0 = int(rng.integers(0, tex.shape[0] - side + 1))
    x0 = int(rng.integers(0, tex.shape[1] - side + 1))
    return _resize(tex[y0 : y0 + side, x0 : x0 + side], h, w)


# -- objects ----------------------------------------------------------------------------------------------
def _object(rng: np.random.Generator, label: str, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB float 0..1 (h, w, 3), bool mask (h, w)) of one object whose longest side is about ``side``."""
    if label == "digit":
        digits = _digits()
        a = _resize(digits[int(rng.integers(len(digits)))], side, side)
        mask = a > 0.4
        ink = rng.uniform(0.0, 1.0, 3)
        ink[int(rng.integers(3))] = rng.choice([0.05, 0.95])  # a saturated ink colour
        rgb = ink[None, None, :] * (0.7 + 0.3 * a[:, :, None])
        return rgb, mask
    if label == "coin":
        img, coins = _coins()
        cx, cy, r = coins[int(rng.integers(len(coins)))]
        crop = img[cy - r : cy + r + 1, cx - r : cx + r + 1].astype(np.float64) / 255.0
        grey = _resize(crop, side, side)
        yy, xx = np.mgrid[:side, :side]
        c = (side - 1) / 2
        mask = (yy - c) ** 2 + (xx - c) ** 2 <= (side / 2) ** 2
        tint = np.array([1.0, 0.8, 0.45]) if rng.random() < 0.5 else np.array([0.9, 0.92, 1.0])  # copper, silver
        return np.clip(grey[:, :, None] * tint * 1.3, 0, 1), mask
    if label == "horse":
        sil = _horse()
        if rng.random() < 0.5:
            sil = sil[:, ::-1]
        h, w = sil.shape
        f = side / max(h, w)
        nh, nw = max(2, round(h * f)), max(2, round(w * f))
        mask = _resize(sil, nh, nw) > 0.5
        coat = np.array([0.45, 0.28, 0.12]) * rng.uniform(0.6, 1.4)
        tex = _texture_crop(rng, nh, nw)
        return np.clip(coat[None, None, :] * (0.6 + 0.8 * tex[:, :, None]), 0, 1), mask
    raise ValueError(f"unknown scene class {label!r}; known: {', '.join(CLASSES)}")


def _outline(mask: np.ndarray, label: str) -> Any:
    """The mask's pixel-edge outline as a shapely geometry (vertices only at corners)."""
    import shapely

    shape = gv.Annotations.from_masks([mask], [(0, 0)], label).shapes()[0]
    return shapely.simplify(shape, 0.0)


def make_scene(
    rng: np.random.Generator,
    size: int | tuple[int, int] = 128,
    *,
    classes: Sequence[str] = CLASSES,
    max_objects: int = 3,
) -> Scene:
    """One scene: a tinted texture with 1..``max_objects`` non-overlapping objects of ``classes``.

    ``size``: the side of a square image, or ``(height, width)``. Objects that find no free place after a
    few tries are left out (the first one always fits).
    """
    h, w = (size, size) if isinstance(size, int) else size
    tint = rng.uniform(0.5, 1.0, 3)
    canvas = _texture_crop(rng, h, w)[:, :, None] * tint[None, None, :]
    taken = np.zeros((h, w), dtype=bool)
    masks, polygons, labels, boxes = [], [], [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = str(classes[int(rng.integers(len(classes)))])
        lo, hi = SIZES[label]
        side = max(4, round(rng.uniform(lo, hi) * min(h, w)))
        rgb, m = _object(rng, label, side)
        oh, ow = m.shape
        for _try in range(20):
            y0, x0 = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
            window = taken[y0 : y0 + oh, x0 : x0 + ow]
            if not (window & _grow(m)).any():
                break
        else:
            continue
        full = np.zeros((h, w), dtype=bool)
        full[y0 : y0 + oh, x0 : x0 + ow] = m
        canvas[full] = rgb[m]
        taken |= full
        ys, xs = np.nonzero(full)
        masks.append(full)
        polygons.append(_outline(full, label))
        labels.append(label)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    pixels = np.clip(np.rint(canvas * 255.0), 0, 255).astype(np.uint8)
    return Scene(pixels, np.asarray(boxes, dtype=np.float64).reshape(-1, 4), masks, polygons, labels)


def _grow(m: np.ndarray) -> np.ndarray:
    """The mask grown by one pixel (objects keep a background gap between them)."""
    g = m.copy()
    g[1:] |= m[:-1]
    g[:-1] |= m[1:]
    g[:, 1:] |= m[:, :-1]
    g[:, :-1] |= m[:, 1:]
    return g


def make_scenes(n: int, size: int | tuple[int, int] = 128, seed: int = 0, **options: Any) -> list[Scene]:
    """``n`` scenes; scene ``i`` depends only on ``(seed, i)`` (so a longer list starts with a shorter one)."""
    return [make_scene(np.random.default_rng([seed, i]), size, **options) for i in range(n)]


def scenes_version(
    ws: gv.Workspace,
    folder: Path,
    n: int = 60,
    size: int | tuple[int, int] = 128,
    seed: int = 0,
    name: str = "scenes",
    *,
    split: str = SPLIT,
    **options: Any,
) -> DatasetVersion:
    """Write ``n`` scenes as PNGs in ``folder``, ingest them with accepted polygon annotations (classes
    registered as kind ``polygon``) and create the dataset version ``name@N``."""
    folder.mkdir(parents=True, exist_ok=True)
    scenes = make_scenes(n, size, seed, **options)
    paths = []
    for i, scene in enumerate(scenes):
        path = folder / f"{name}-{seed}-{i:05d}.png"
        Image.fromarray(scene.pixels).save(path)
        paths.append(path)
    for label in sorted({lab for s in scenes for lab in s.labels}):
        ws.labels.set(label, "polygon")
    for result, scene in zip(ws.ingest(paths), scenes, strict=True):
        assert result.status == "added" and result.id, result
        ws.annotations.add(result.id, scene.annotations(), "test")
    return create_version(ws, name, split=split, seed=seed, dup_distance=None, stratify=True)
