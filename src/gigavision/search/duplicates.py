"""Near-duplicate images of a dataset version, and the leakage they cause when they straddle splits.

Two detectors, each catching what the other misses:

- the **perceptual hash** (64-bit DCT pHash of the thumbnail, ``datasets.phash``): re-encoded and resized
  copies, at almost no cost; blind to a crop or a shift (the DCT of a cropped image is another one);
- **embedding cosine** (an image index's vectors, or a model's): crops, colour changes, re-encodes, as far
  as the model learned to ignore them.

A pair is reported when either says so (cosine ≥ ``threshold`` or Hamming distance ≤ ``hash_distance``), with
both numbers. Pairs whose images sit in different splits are **leaks**: the test split then scores what the
model saw in training. ``embedding_pairs`` is also what ``dataset create --dedupe embed:INDEX`` joins into one
group (``datasets.versions``, through ``DEDUPE_PAIRS``), so such pairs never straddle splits again.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.errors import InvalidInput
from gigavision.progress import Progress, no_progress
from gigavision.search import build, store, vectors

if TYPE_CHECKING:
    from gigavision.workspace import Workspace

DEFAULT_THRESHOLD = 0.95
NEIGHBOURS = 20  # nearest neighbours looked at per image: a cluster of more copies is still joined by its chain
MAX_PAGE_PAIRS = 500  # pairs shown (with thumbnails) in the HTML page; the JSON lists them all


def image_vectors(
    ws: Workspace, image_ids: Sequence[str], *, index: str, progress: Progress = no_progress
) -> np.ndarray:
    """``(n, D)`` unit vectors of ``image_ids``: the image index's own, and for images it lacks, computed now
    with its model (the same vectors an ``index add`` would store)."""
    loaded = store.load(ws, index)
    if loaded.card.mode != "image":
        raise InvalidInput(
            f"index {index!r} holds regions of images; near-duplicate images need an index of whole images"
            " (gigavision index build NAME --model MODEL, without --regions)"
        )
    row_of = {loaded.entries.image_ids[int(img)]: r for r, img in enumerate(loaded.entries.image.tolist())}
    stored = vectors.vectors_of(loaded.index) if row_of else np.zeros((0, loaded.card.dim), np.float32)
    out = np.zeros((len(image_ids), loaded.card.dim), dtype=np.float32)
    missing = [k for k, i in enumerate(image_ids) if i not in row_of]
    for k, i in enumerate(image_ids):
        if i in row_of:
            out[k] = stored[row_of[i]]
    if missing:
        extractor = build.extractor_for(ws, loaded.card.model)
        for done, k in enumerate(missing):
            progress(done, len(missing), "embedding images the index lacks")
            out[k] = build.image_vector(extractor, ws.open_source(image_ids[k]), image_ids[k])[0]
    return out


def cosine_pairs(vecs: np.ndarray, threshold: float, neighbours: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(k, 2)`` (``i < j``) of unit vectors with cosine ≥ ``threshold`` among each one's ``neighbours``
    nearest (exact search), and their cosines."""
    n = len(vecs)
    if n < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    x = vectors.as_matrix(vecs)
    index, params = vectors.build(x, x.shape[1], flat_max=max(n, vectors.FLAT_MAX))  # exact: every pair counts
    scores, ids = vectors.search(index, params, x, min(n, neighbours + 1))
    i = np.repeat(np.arange(n), ids.shape[1])
    j, s = ids.reshape(-1), scores.reshape(-1)
    keep = (j >= 0) & (j != i) & (s >= threshold)
    pairs = np.sort(np.stack([i[keep], j[keep]], axis=1), axis=1)
    pairs, first = np.unique(pairs, axis=0, return_index=True)
    return pairs.astype(np.int64), s[keep][first].astype(np.float32)


def parse_dedupe(text: str) -> tuple[str, float]:
    """``embed:INDEX`` or ``embed:INDEX@0.97`` → (index name, cosine threshold)."""
    kind, sep, rest = text.partition(":")
    name, at, value = rest.partition("@")
    if kind != "embed" or not sep or not name:
        raise InvalidInput(f"--dedupe {text!r} must be embed:INDEX or embed:INDEX@THRESHOLD (cosine, e.g. 0.95)")
    try:
        threshold = float(value) if at else DEFAULT_THRESHOLD
    except ValueError:
        raise InvalidInput(f"--dedupe {text!r}: the threshold must be a number") from None
    if not 0.0 < threshold <= 1.0:
        raise InvalidInput(f"--dedupe {text!r}: the threshold must be in (0, 1], got {threshold}")
    store.check_index_name(name)
    return name, threshold


def embedding_pairs(ws: Workspace, spec: str, image_ids: Sequence[str], progress: Progress | None = None) -> np.ndarray:
    """Index pairs ``(k, 2)`` into ``image_ids`` that ``spec`` (``embed:INDEX[@THRESHOLD]``) calls near-duplicates:
    what dataset creation joins into one group (``datasets.versions.DEDUPE_PAIRS`` names this function)."""
    name, threshold = parse_dedupe(spec)
    vecs = image_vectors(ws, image_ids, index=name, progress=progress or no_progress)
    return cosine_pairs(vecs, threshold)[0]


@dataclass
class DuplicatePair:
    a: dict[str, Any]  # id, name, split
    b: dict[str, Any]
    cosine: float | None
    hash_distance: int

    @property
    def leak(self) -> bool:
        return bool(self.a["split"] != self.b["split"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "cosine": None if self.cosine is None else round(self.cosine, 5),
            "hash_distance": self.hash_distance,
            "leak": self.leak,
        }


@dataclass
class DuplicateReport:
    dataset: str
    index: str | None
    threshold: float | None
    hash_distance: int | None
    images: int
    pairs: list[DuplicatePair] = field(default_factory=list)
    html: str | None = None

    def as_dict(self) -> dict[str, Any]:
        leaks = [p for p in self.pairs if p.leak]
        by_splits: dict[str, int] = {}
        for p in leaks:
            key = "/".join(sorted((str(p.a["split"]), str(p.b["split"]))))
            by_splits[key] = by_splits.get(key, 0) + 1
        return {
            "dataset": self.dataset,
            "index": self.index,
            "threshold": self.threshold,
            "hash_distance": self.hash_distance,
            "images": self.images,
            "pairs": len(self.pairs),
            "within_split": len(self.pairs) - len(leaks),
            "across_splits": len(leaks),
            "across_by_splits": by_splits,
            "images_in_pairs": len({p.a["id"] for p in self.pairs} | {p.b["id"] for p in self.pairs}),
            "html": self.html,
            "duplicates": [p.as_dict() for p in self.pairs],
        }


def check_version(
    ws: Workspace,
    ref: str,
    *,
    index: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    hash_distance: int | None = 4,
    html: Path | None = None,
    progress: Progress | None = None,
) -> DuplicateReport:
    """Near-duplicate pairs of dataset version ``ref`` by perceptual hash (``hash_distance`` bits; None: off)
    and, with an image ``index``, by embedding cosine ≥ ``threshold``; leaks are the pairs across splits."""
    from gigavision.datasets.phash import perceptual_hashes
    from gigavision.datasets.spec import parse_dup_distance
    from gigavision.datasets.splits import near_duplicate_pairs
    from gigavision.datasets.versions import open_version

    report = progress or no_progress
    if index is None and hash_distance is None:
        raise InvalidInput("nothing to compare with: give an image --index, a --hash-distance, or both")
    if not 0.0 < threshold <= 1.0:
        raise InvalidInput(f"--threshold is a cosine similarity in (0, 1], got {threshold}")
    distance = parse_dup_distance(hash_distance) if hash_distance is not None else None
    version = open_version(ws, ref)
    entries = list(version.images())
    ids = [e.id for e in entries]
    hashes = perceptual_hashes(ws, ids, report)
    found: dict[tuple[int, int], float | None] = {}
    if distance is not None:
        for i, j in near_duplicate_pairs(hashes, distance).tolist():
            found[(i, j)] = None
    if index is not None:
        pairs, cosines = cosine_pairs(image_vectors(ws, ids, index=index, progress=report), threshold)
        for (i, j), c in zip(pairs.tolist(), cosines.tolist(), strict=True):
            found[(i, j)] = float(c)
    about = [{"id": e.id, "name": e.name, "split": e.split} for e in entries]
    out = [
        DuplicatePair(about[i], about[j], c, int(np.bitwise_count(hashes[i] ^ hashes[j])))
        for (i, j), c in found.items()
    ]
    out.sort(key=lambda p: (not p.leak, -(p.cosine or 0.0), p.hash_distance, p.a["name"], p.b["name"]))
    result = DuplicateReport(version.ref, index, threshold if index else None, distance, len(entries), out)
    if html is not None:
        result.html = str(write_page(ws, result, html))
    return result


def _thumbnail(ws: Workspace, image_id: str) -> bytes:
    from PIL import Image

    path = ws.thumbnail_path(image_id)
    if path.is_file():
        return path.read_bytes()
    from gigavision.images.thumbnail import overview

    arr = overview(ws.open_source(image_id), 256)
    buf = io.BytesIO()
    Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr[:, :, :3]).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def write_page(ws: Workspace, report: DuplicateReport, path: Path) -> Path:
    """A self-contained HTML page of the pairs side by side (leaks first), thumbnails inline."""
    from gigavision.metrics.report import write_pairs_page

    doc = report.as_dict()
    summary = {k: doc[k] for k in ("dataset", "images", "pairs", "within_split", "across_splits", "threshold")}
    summary["hash_distance"] = doc["hash_distance"]
    summary.update({f"across {k}": v for k, v in doc["across_by_splits"].items()})
    rows = []
    for p in report.pairs[:MAX_PAGE_PAIRS]:
        how = [f"cosine {p.cosine:.3f}" if p.cosine is not None else "", f"hash distance {p.hash_distance}"]
        note = ("LEAK " if p.leak else "") + ", ".join(h for h in how if h)
        rows.append(
            (
                _thumbnail(ws, p.a["id"]),
                f"{p.a['name']} ({p.a['split']})",
                _thumbnail(ws, p.b["id"]),
                f"{p.b['name']} ({p.b['split']})",
                note,
            )
        )
    title = f"Near-duplicates of {report.dataset}"
    return write_pairs_page(path, title, summary, rows, omitted=max(0, len(report.pairs) - MAX_PAGE_PAIRS))
