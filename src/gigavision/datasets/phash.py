"""64-bit perceptual hashes (DCT pHash of the stored thumbnail), cached in ``image_hashes``.

An image never changes (its id is the sha256 of its bytes), so its hash is computed once per workspace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import select

from gigavision.progress import Progress
from gigavision.store.schema import ImageHashRow, utcnow

if TYPE_CHECKING:
    from PIL import Image

    from gigavision.workspace import Workspace

QUERY_CHUNK = 500  # ids per IN (...) query
OVERVIEW_SIDE = 256  # when a thumbnail is missing, hash an overview this size


def _thumbnail(ws: Workspace, image_id: str) -> Image.Image:
    """The image's stored thumbnail, or an overview read from its pyramid when there is none."""
    from PIL import Image

    path = ws.thumbnail_path(image_id)
    if path.is_file():
        with Image.open(path) as im:
            im.load()
            return im.copy()
    from gigavision.images.thumbnail import overview

    arr = overview(ws.open_source(image_id), OVERVIEW_SIDE)
    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr[:, :, :3])


def compute_phash(image: Image.Image) -> int:
    """The 64-bit DCT perceptual hash (``imagehash.phash``) as an unsigned integer."""
    import imagehash

    return int(str(imagehash.phash(image)), 16)


def perceptual_hashes(ws: Workspace, image_ids: Sequence[str], progress: Progress | None = None) -> np.ndarray:
    """``(n,) uint64`` hashes of ``image_ids`` in order; computes and caches those not seen before."""
    known: dict[str, int] = {}
    with ws.session() as s:
        for start in range(0, len(image_ids), QUERY_CHUNK):
            chunk = list(image_ids[start : start + QUERY_CHUNK])
            for row in s.scalars(select(ImageHashRow).where(ImageHashRow.image_id.in_(chunk))):
                known[row.image_id] = int(row.phash, 16)
    missing = [i for i in dict.fromkeys(image_ids) if i not in known]
    fresh: list[dict[str, object]] = []
    for done, image_id in enumerate(missing, 1):
        known[image_id] = compute_phash(_thumbnail(ws, image_id))
        fresh.append({"image_id": image_id, "phash": f"{known[image_id]:016x}", "created_at": utcnow()})
        if progress is not None:
            progress(done, len(missing), "perceptual hashes")
    if fresh:
        _insert_ignoring_existing(ws, fresh)
    return np.array([known[i] for i in image_ids], dtype=np.uint64)


def _insert_ignoring_existing(ws: Workspace, rows: list[dict[str, object]]) -> None:
    """Cache rows; another process may have cached the same image meanwhile (same value): keep either."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    stmt: Any
    if ws.engine.dialect.name == "sqlite":
        stmt = sqlite_insert(ImageHashRow).on_conflict_do_nothing(index_elements=["image_id"])
    else:
        stmt = pg_insert(ImageHashRow).on_conflict_do_nothing(index_elements=["image_id"])
    with ws.session.begin() as s:
        for start in range(0, len(rows), QUERY_CHUNK):
            s.execute(stmt, rows[start : start + QUERY_CHUNK])
