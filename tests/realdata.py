"""Real image datasets shipped in wheels (scikit-learn's digits, scikit-image's faces and textures), ingested
into a workspace with tags and frozen as a dataset version. Used by the training tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

import gigavision as gv
from gigavision.datasets.versions import DatasetVersion, create_version

SPLIT = "train=0.7,val=0.15,test=0.15"


def digit_images(scale: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten digits (8×8, 17 grey levels) as uint8 images upscaled ``scale``×."""
    from sklearn.datasets import load_digits

    d = load_digits()
    img = np.clip(d.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    if scale > 1:
        img = np.kron(img, np.ones((scale, scale), dtype=np.uint8))
    return img, d.target.astype(int)


def ingest_tagged(
    ws: gv.Workspace,
    folder: Path,
    images: Sequence[np.ndarray],
    tags: Sequence[Sequence[str]],
    dataset: str,
    *,
    split: str = SPLIT,
    seed: int = 0,
) -> DatasetVersion:
    """Write each image as PNG, ingest, tag it, and create the dataset version ``dataset@N``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, arr in enumerate(images):
        path = folder / f"{dataset}-{i:05d}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    for name in sorted({t for ts in tags for t in ts}):
        ws.labels.set(name, "tag")
    results = ws.ingest(paths)
    for result, ts in zip(results, tags, strict=True):
        assert result.status == "added" and result.id, result
        if ts:
            ws.annotations.add(result.id, gv.Annotations.from_tags(list(ts), status=["accepted"] * len(ts)), "test")
    return create_version(ws, dataset, split=split, seed=seed, dup_distance=None, stratify=True)


def digits_version(ws: gv.Workspace, folder: Path, *, limit: int | None = None, scale: int = 2) -> DatasetVersion:
    images, labels = digit_images(scale)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    # identical digit bitmaps exist in the set: ingest keeps one copy per content hash, so dedupe first
    seen: dict[bytes, int] = {}
    keep = [seen.setdefault(im.tobytes(), i) == i for i, im in enumerate(images)]
    images, labels = images[np.array(keep)], labels[np.array(keep)]
    return ingest_tagged(ws, folder, list(images), [[str(v)] for v in labels], "digits")


def faces_version(ws: gv.Workspace, folder: Path) -> DatasetVersion:
    """scikit-image's ``lfw_subset``: 100 faces and 100 non-faces (25×25 grey), tagged face / non-face."""
    from skimage.data import lfw_subset

    images = np.clip(lfw_subset() * 255.0, 0, 255).astype(np.uint8)
    tags = [["face"] if i < 100 else ["non-face"] for i in range(len(images))]
    return ingest_tagged(ws, folder, list(images), tags, "faces")


def digit_mosaics(n: int, seed: int = 0, scale: int = 2) -> tuple[list[np.ndarray], list[list[str]]]:
    """``n`` 2×2 mosaics of random real digits, each labelled with the set of digits it shows (multi-label)."""
    images, labels = digit_images(scale)
    rng = np.random.default_rng(seed)
    side = images.shape[1]
    out, tags = [], []
    for _ in range(n):
        pick = rng.choice(len(images), 4, replace=False)
        mosaic = np.zeros((2 * side, 2 * side), dtype=np.uint8)
        for k, j in enumerate(pick):
            r, c = divmod(k, 2)
            mosaic[r * side : (r + 1) * side, c * side : (c + 1) * side] = images[j]
        out.append(mosaic)
        tags.append(sorted({str(labels[j]) for j in pick}))
    return out, tags


def mosaics_version(ws: gv.Workspace, folder: Path, n: int = 1200) -> DatasetVersion:
    images, tags = digit_mosaics(n)
    return ingest_tagged(ws, folder, images, tags, "mosaics")
