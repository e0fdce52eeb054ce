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
