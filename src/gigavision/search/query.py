"""Search an index: "what looks like this image / this region?", optionally within a dataset version, the
images holding a label, or those with a metadata value.

The query is embedded by the index's own model through the functions the index was built with
(``search.build``: whole-image reads, or a region read at the index's resolution and fitted like an indexed
window), so query and entries are vectors of one space. Filters become the set of entry ids FAISS may
return, so ``k`` results are the best ``k`` allowed ones. A query naming a workspace image leaves that image's
own entries out unless asked (``include_self``): the nearest region of a region is otherwise itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.errors import InvalidInput
from gigavision.search import build, store, vectors

if TYPE_CHECKING:
    from gigavision.images.source import ImageSource
    from gigavision.workspace import Workspace

MAX_K = 1000
THUMBNAIL_SIDE = 256


@dataclass
class Hit:
    """One result: the entry's image and level-0 box, its cosine similarity to the query and its rank."""

    rank: int
    score: float
    image_id: str
    name: str
    box: tuple[int, int, int, int]
    entry: int

    def as_dict(self) -> dict[str, Any]:
        x0, y0, x1, y1 = self.box
        side = min(THUMBNAIL_SIDE, max(x1 - x0, y1 - y0))  # IIIF 3's !w,h never upscales a small region
        return {
            "rank": self.rank,
            "score": round(self.score, 6),
            "image_id": self.image_id,
            "name": self.name,
            "region": [x0, y0, x1, y1],
            "entry": self.entry,
            # a IIIF request for the region at most THUMBNAIL_SIDE across (the tile server caches it)
            "thumbnail_url": f"/iiif/3/{self.image_id}/{x0},{y0},{x1 - x0},{y1 - y0}/!{side},{side}/0/default.jpg",
            "viewer_url": f"/#/image/{self.image_id}?region={x0},{y0},{x1},{y1}",
        }


@dataclass
class SearchResult:
    index: str
    model: str
    query: dict[str, Any]
    hits: list[Hit] = field(default_factory=list)
    searched: int = 0  # entries the filters allowed (all of the index without filters)

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "model": self.model,
            "query": self.query,
            "searched": self.searched,
            "results": [h.as_dict() for h in self.hits],
        }


def parse_region(text: str | Sequence[float] | None) -> tuple[int, int, int, int] | None:
    """``x0,y0,x1,y1`` level-0 pixels (a text or four numbers) → a box; None when not given."""
    if text is None or text == "":
        return None
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        x0, y0, x1, y1 = (round(float(p)) for p in parts)
    except (TypeError, ValueError):
        raise InvalidInput(f"region {text!r} must be x0,y0,x1,y1 in level-0 pixels") from None
    if x1 <= x0 or y1 <= y0:
        raise InvalidInput(f"region {text!r}: x1 must exceed x0 and y1 exceed y0")
    return x0, y0, x1, y1


def _check_inside(region: tuple[int, int, int, int], source: ImageSource, name: str) -> None:
    x0, y0, x1, y1 = region
    if x0 < 0 or y0 < 0 or x1 > source.width or y1 > source.height:
        raise InvalidInput(
            f"region {x0},{y0},{x1},{y1} is outside {name} ({source.width}×{source.height} level-0 pixels)"
        )


def query_vector(
    ws: Workspace,
    card: store.IndexCard,
    source: ImageSource,
    name: str,
    region: tuple[int, int, int, int] | None,
    runtime: str = "auto",
    *,
    excerpt: bool = False,
) -> np.ndarray:
    """The ``(1, D)`` vector of an image (or a region of it) as index ``card`` embeds.

    ``excerpt``: the image is a picture taken at the index's scale (an uploaded crop of a slide), not a
    workspace image whose pyramid the index's resolution applies to: against a region index its level-0
    pixels are the region.
    """
    from gigavision.geometry import Region
    from gigavision.images.resolution import Resolution
    from gigavision.models.features import fit_window

    extractor = build.extractor_for(ws, card.model, runtime)
    if region is not None:
        _check_inside(region, source, name)
    if card.mode == "image":
        if region is None:
            return build.image_vector(extractor, source, name)
        x0, y0, x1, y1 = region  # a crop against whole images: read at the size it is letterboxed to
        scale = min(1.0, extractor.size / max(x1 - x0, y1 - y0))
        size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
        return extractor.images([source.read_region(Region(x0, y0, x1 - x0, y1 - y0), size=size)], [name])
    spec = build.RegionSpec.from_dict(card.regions or {})
    res, tile = build.resolution(extractor, source, spec) if not excerpt else (Resolution(0, 1.0), spec.tile)
    tile = tile or extractor.size
    x0, y0, x1, y1 = region if region is not None else (0, 0, source.width, source.height)
    pixels = source.read_region(Region(x0, y0, x1 - x0, y1 - y0), res.level, downsample=res.downsample)
    return extractor.windows(fit_window(pixels, tile, extractor.size)[None])


def allowed_entries(
    ws: Workspace,
    loaded: store.LoadedIndex,
    *,
    labels: Sequence[str] = (),
    dataset: str | None = None,
    meta: Mapping[str, str] | None = None,
    exclude_image: str | None = None,
) -> np.ndarray | None:
    """Entry ids passing the filters (None: every entry). ``labels``: images holding an annotation of one of
    them; ``dataset``: images of that version (``NAME@N``); ``meta``: images whose metadata has those values."""
    ids: set[str] | None = None
    if dataset:
        from gigavision.datasets.versions import open_version

        ids = {e.id for e in open_version(ws, dataset).images()}
    if labels:
        from sqlalchemy import select

        from gigavision.store.schema import AnnotationRow

        with ws.session() as s:
            having = set(
                s.scalars(select(AnnotationRow.image_id).where(AnnotationRow.label.in_(list(labels))).distinct())
            )
        ids = having if ids is None else ids & having
    if meta:
        from gigavision.datasets.freeze import select_images
        from gigavision.datasets.spec import parse_filters

        matching = {c.id for c in select_images(ws, parse_filters({f"meta:{k}": v for k, v in meta.items()}))}
        ids = matching if ids is None else ids & matching
    if ids is None and exclude_image is None:
        return None
    wanted = set(loaded.entries.image_ids) if ids is None else ids
    wanted.discard(exclude_image or "")
    return loaded.entries.rows_of(wanted)


def search_vector(
    ws: Workspace,
    loaded: store.LoadedIndex,
    vector: np.ndarray,
    k: int,
    allowed: np.ndarray | None,
) -> list[Hit]:
    """The ``k`` nearest allowed entries of one ``(1, D)`` vector."""
    scores, ids = vectors.search(loaded.index, loaded.card.params, vector, k, allowed)
    names: dict[str, str] = {}
    hits: list[Hit] = []
    for score, entry in zip(scores[0].tolist(), ids[0].tolist(), strict=True):
        if entry < 0:
            continue
        image_id = loaded.entries.image_ids[int(loaded.entries.image[entry])]
        if image_id not in names:
            names[image_id] = _name(ws, image_id)
        box = tuple(int(v) for v in loaded.entries.boxes[entry])
        hits.append(
            Hit(len(hits) + 1, float(score), image_id, names[image_id], (box[0], box[1], box[2], box[3]), int(entry))
        )
    return hits


def _name(ws: Workspace, image_id: str) -> str:
    from gigavision.errors import NotFound

    try:
        return str(ws.get_image(image_id).name)
    except NotFound:  # removed from the workspace since it was indexed
        return ""


def search(
    ws: Workspace,
    name: str,
    *,
    image: str | None = None,
    upload: Path | None = None,
    region: str | Sequence[float] | None = None,
    k: int = 20,
    labels: Sequence[str] = (),
    dataset: str | None = None,
    meta: Mapping[str, str] | None = None,
    model: str | None = None,
    include_self: bool = False,
    runtime: str = "auto",
) -> SearchResult:
    """The ``k`` entries of index ``name`` nearest to a workspace image / image file (``image``: an id, prefix,
    name or path) or an uploaded file (``upload``), or a ``region`` of it (``x0,y0,x1,y1``)."""
    from gigavision.models.predict import open_input

    if not 1 <= int(k) <= MAX_K:
        raise InvalidInput(f"k must be 1 to {MAX_K}, got {k}")
    if (image is None) == (upload is None):
        raise InvalidInput("search by one image: a workspace image (id, prefix or name), or an image file")
    card = store.get_card(ws, name)
    if model is not None:
        build.check_same_model(ws, card, model)
    box = parse_region(region)
    ref = str(upload if upload is not None else image)
    if upload is not None:  # a file the caller sent: opened under the workspace's limits, never looked up
        from gigavision.images.registry import open_image

        source, image_id, owned = open_image(upload, limits=ws.settings.limits), None, True
    else:
        source, image_id, owned = open_input(ws, ref)
    loaded = store.load(ws, name)
    query: dict[str, Any] = {"image_id": image_id, "input": None if image_id else Path(ref).name}
    if box is not None:
        query["region"] = list(box)
    try:
        if box is not None:
            _check_inside(box, source, str(query["image_id"] or query["input"]))
        allowed = allowed_entries(
            ws, loaded, labels=labels, dataset=dataset, meta=meta, exclude_image=None if include_self else image_id
        )
        searched = len(loaded.entries) if allowed is None else len(allowed)
        if loaded.index.ntotal == 0 or searched == 0:  # nothing to find: the model need not run
            return SearchResult(card.name, card.model, query, [], 0)
        shown = image_id or Path(ref).name
        vector = query_vector(ws, card, source, shown, box, runtime, excerpt=image_id is None)
    finally:
        if owned:
            source.close()
    return SearchResult(card.name, card.model, query, search_vector(ws, loaded, vector, k, allowed), searched)
