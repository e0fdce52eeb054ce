"""Build an embedding index and add images to it: a vector per image, or per foreground region.

**Image mode**: each image is read as whole-image prediction reads it (``models.predict.read_for``: the
coarsest pyramid level still the model's input across) and embedded letterboxed.

**Region mode** (``--regions tile=256,level=1`` or ``mpp=…``): a grid of non-overlapping ``tile``-pixel windows
at that resolution (``active.regions.region_windows``; defaults: the model's input side, at the resolution
tiled inference would run it), without the windows that have less than ``min_foreground`` of the foreground
mask ingest stored, read a row band at a time (``infer.reading.read_bands``: never the whole image) and
embedded at the network's side (``models.features.fit_window``). A query region goes through the same two
functions, so it is compared at the scale the index saw.

Vectors are computed an image at a time and the index is written once at the end (``search.store.save``),
so a failed or cancelled build leaves no index and a failed ``add`` leaves the previous one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.errors import Conflict, InvalidInput
from gigavision.progress import Progress, no_progress
from gigavision.search import store, vectors

if TYPE_CHECKING:
    from gigavision.images.resolution import Resolution
    from gigavision.images.source import ImageSource
    from gigavision.models.features import FeatureExtractor
    from gigavision.workspace import Workspace

MIN_FOREGROUND = 0.5  # a region needs this much tissue / non-background to be indexed
REGION_KEYS = ("tile", "level", "mpp", "min_foreground")


@dataclass(frozen=True)
class RegionSpec:
    """How images are cut into regions: ``tile`` pixels at ``level`` or ``mpp`` (None: the model's)."""

    tile: int | None = None
    level: int | None = None
    mpp: float | None = None
    min_foreground: float = MIN_FOREGROUND

    @classmethod
    def parse(cls, text: str) -> RegionSpec:
        """``tile=256,level=1`` / ``tile=224,mpp=0.5,min_foreground=0.3`` (every key optional)."""
        values: dict[str, str] = {}
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            key, sep, value = part.partition("=")
            if not sep or key.strip() not in REGION_KEYS:
                raise InvalidInput(f"--regions {text!r}: expected key=value pairs with keys {', '.join(REGION_KEYS)}")
            values[key.strip()] = value.strip()
        try:
            spec = cls(
                tile=int(values["tile"]) if "tile" in values else None,
                level=int(values["level"]) if "level" in values else None,
                mpp=float(values["mpp"]) if "mpp" in values else None,
                min_foreground=float(values.get("min_foreground", MIN_FOREGROUND)),
            )
        except ValueError as exc:
            raise InvalidInput(f"--regions {text!r}: {exc}") from None
        return spec.checked()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegionSpec:
        return cls(data.get("tile"), data.get("level"), data.get("mpp"), float(data.get("min_foreground", 0.5)))

    def checked(self) -> RegionSpec:
        if self.level is not None and self.mpp is not None:
            raise InvalidInput("--regions: give level or mpp, not both")
        if self.tile is not None and not 8 <= self.tile <= 8192:
            raise InvalidInput(f"--regions: tile must be 8 to 8192 pixels, got {self.tile}")
        if self.level is not None and self.level < 0:
            raise InvalidInput(f"--regions: level must be 0 or more, got {self.level}")
        if not 0.0 <= self.min_foreground <= 1.0:
            raise InvalidInput(f"--regions: min_foreground must be in [0, 1], got {self.min_foreground}")
        return self

    def as_dict(self) -> dict[str, Any]:
        return {"tile": self.tile, "level": self.level, "mpp": self.mpp, "min_foreground": self.min_foreground}


def extractor_for(ws: Workspace, model_ref: str, runtime: str = "auto") -> FeatureExtractor:
    """The loaded feature extractor of a model (an alias, id or prefix), kept per process."""
    from gigavision.infer.predictors import loaded_predictor
    from gigavision.infer.request import resolve_runtime
    from gigavision.models.aliases import resolve
    from gigavision.models.features import FeatureExtractor, check_feature_task
    from gigavision.models.store import get_model

    info = get_model(ws, resolve(ws, model_ref))
    check_feature_task(info.id, info.task)
    if info.task == "embed":  # its output is the vector: prediction's own runtime choice (auto: ONNX when it can)
        runtime = resolve_runtime(info, runtime)
    elif runtime == "auto":  # a backbone's features are read from the checkpoint (FeatureExtractor checks)
        runtime = "torch"
    return FeatureExtractor(loaded_predictor(info, runtime))


def resolution(extractor: FeatureExtractor, source: ImageSource, spec: RegionSpec) -> tuple[Resolution, int]:
    """(resolution, tile) of a region grid: the spec's, else the model's (as tiled inference chooses it)."""
    from gigavision.infer.engine import InferOptions, model_resolution

    res = model_resolution(extractor.predictor, source, InferOptions(level=spec.level, mpp=spec.mpp))
    return res, int(spec.tile or extractor.size)


def image_regions(
    ws: Workspace, image_id: str, source: ImageSource, res: Resolution, tile: int, min_foreground: float
) -> np.ndarray:
    """Level-0 boxes ``(N, 4)`` of an image's foreground windows (clipped to the image)."""
    from gigavision.active.regions import foreground, region_windows
    from gigavision.infer.run import foreground as foreground_mask

    windows = region_windows(source.width, source.height, tile, res.downsample)
    fractions = foreground(windows, foreground_mask(ws, image_id, source), source.width, source.height)
    keep = fractions >= min_foreground if min_foreground > 0 else fractions > 0
    return np.ascontiguousarray(windows[keep])


def region_vectors(
    extractor: FeatureExtractor, source: ImageSource, res: Resolution, tile: int, boxes: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(entry rows, vectors) of ``boxes`` (a row-major grid's windows), a batch at a time."""
    from gigavision.infer.reading import read_bands
    from gigavision.models.features import fit_window

    if not len(boxes):
        return
    for cut in read_bands(source, res, boxes, tile, batch=extractor.predictor.batch):
        if cut.failed:
            k, why = cut.failed[0]
            raise InvalidInput(f"{source.path.name}: the region {boxes[k].tolist()} could not be read ({why})")
        pixels = (
            np.stack([fit_window(p, tile, extractor.size) for p in cut.pixels])
            if tile != extractor.size
            else cut.pixels
        )
        yield cut.indices, extractor.windows(pixels)


def image_vector(extractor: FeatureExtractor, source: ImageSource, name: str) -> np.ndarray:
    """The ``(1, D)`` vector of a whole image (read as whole-image prediction reads it)."""
    from gigavision.models.predict import read_for

    return extractor.images([read_for(extractor.predictor, source, name)], [name])


def embed_image(
    ws: Workspace, extractor: FeatureExtractor, card: store.IndexCard, image_id: str
) -> tuple[np.ndarray, np.ndarray]:
    """(level-0 boxes, vectors) of one workspace image for the index ``card`` describes."""
    source = ws.open_source(image_id)
    if card.mode == "image":
        whole = np.array([[0, 0, source.width, source.height]], dtype=np.int64)
        return whole, image_vector(extractor, source, image_id)
    spec = RegionSpec.from_dict(card.regions or {})
    res, tile = resolution(extractor, source, spec)
    boxes = image_regions(ws, image_id, source, res, tile, spec.min_foreground)
    out: np.ndarray | None = None
    for rows, vecs in region_vectors(extractor, source, res, tile, boxes):
        if out is None:
            out = np.zeros((len(boxes), vecs.shape[1]), dtype=np.float32)
        out[rows] = vecs
    return boxes, out if out is not None else np.zeros((0, card.dim), dtype=np.float32)


def select_images(ws: Workspace, filters: Sequence[str], dataset: str | None) -> list[str]:
    """Ids of the images an index covers: a dataset version's, or those passing the image filters."""
    from gigavision.datasets.freeze import select_images as select
    from gigavision.datasets.spec import parse_filters

    parsed = parse_filters(list(filters))
    if parsed.label or parsed.source or parsed.kind or parsed.has_annotations or parsed.status:
        raise InvalidInput(
            "--images takes image filters (image=GLOB, image_id=…, meta:KEY=…); use --dataset for labels"
        )
    if dataset:
        from gigavision.datasets.versions import open_version

        ids = [e.id for e in open_version(ws, dataset).images()]
        if not filters:
            return ids
        passing = {c.id for c in select(ws, parsed)}
        return [i for i in ids if i in passing]
    return [c.id for c in select(ws, parsed)]


def _grow(
    ws: Workspace,
    extractor: FeatureExtractor,
    card: store.IndexCard,
    index: Any,
    entries: store.Entries,
    image_ids: Sequence[str],
    progress: Progress,
    dask: str | None = None,
) -> tuple[Any, store.Entries, list[dict[str, str]]]:
    """``index`` and ``entries`` with ``image_ids`` embedded and appended; images that fail are skipped and
    named (one unreadable file does not sink an index of thousands). ``dask``: embed on that cluster
    (``search.distributed``; there an image that fails fails the build)."""
    failed: list[dict[str, str]] = []
    pending: list[np.ndarray] = []
    added: list[tuple[str, np.ndarray]] = []
    for image_id, boxes, vecs in _embedded(ws, extractor, card, image_ids, progress, dask, failed):
        if card.dim == 0 and len(vecs):
            card.dim = int(vecs.shape[1])
        added.append((image_id, boxes))  # kept with no region too: add does not embed it again
        if len(vecs):
            pending.append(vecs)
    entries = entries.extend(added)
    progress(len(image_ids), len(image_ids), "indexing")
    if card.dim == 0:  # nothing embedded yet: the caller learns the dimension from the model
        return index, entries, failed
    new = np.concatenate(pending) if pending else np.zeros((0, card.dim), np.float32)
    if index is None:
        index, card.params = vectors.build(new, card.dim)
    else:
        index, card.params = vectors.add(index, card.params, new)
    return index, entries, failed


def _embedded(
    ws: Workspace,
    extractor: FeatureExtractor,
    card: store.IndexCard,
    image_ids: Sequence[str],
    progress: Progress,
    dask: str | None,
    failed: list[dict[str, str]],
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(image id, boxes, vectors) of each image that could be embedded, here or on a Dask cluster."""
    if dask:
        from gigavision.search.distributed import embed_on_cluster

        yield from embed_on_cluster(ws, extractor, card, image_ids, dask, progress)
        return
    for done, image_id in enumerate(image_ids):
        progress(done, len(image_ids), f"embedding {image_id[:12]}")
        try:
            boxes, vecs = embed_image(ws, extractor, card, image_id)
        except (InvalidInput, OSError, ValueError) as exc:
            failed.append({"image": image_id, "error": str(exc)})
            continue
        yield image_id, boxes, vecs


def build_index(
    ws: Workspace,
    name: str,
    model: str,
    *,
    images: Sequence[str] = (),
    dataset: str | None = None,
    regions: RegionSpec | None = None,
    follow: bool = False,
    runtime: str = "auto",
    dask: str | None = None,
    actor: str = "anonymous",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Embed the selected images (or their foreground regions) with ``model`` into a new index ``name``.
    ``dask``: a Dask cluster (``tcp://host:port``, ``local[:N]``) computes the vectors; default: the
    workspace's ``dask`` setting, else this process."""
    store.check_index_name(name)
    store.create_folder(ws, name)
    extractor = extractor_for(ws, model, runtime)
    info = extractor.predictor.info
    ids = select_images(ws, images, dataset)
    card = store.IndexCard(
        name=name,
        model=info.id,
        model_task=info.task,
        dim=0,
        mode="regions" if regions is not None else "image",
        regions=regions.checked().as_dict() if regions is not None else None,
        images_filter=list(images),
        dataset=dataset,
        follow=follow,
        params=vectors.IndexParams(),
        count=0,
        n_images=0,
        generation=0,
        created_at=store.now(),
        updated_at="",
        created_by=actor,
    )
    with store.locked(ws, name) as folder:
        store.create_folder(ws, name)  # again under the lock: two builds of one name, one wins
        try:
            cluster = dask if dask is not None else ws.settings.dask
            report = progress or no_progress
            index, entries, failed = _grow(ws, extractor, card, None, store.Entries.empty(), ids, report, cluster)
            if card.dim == 0:  # nothing embedded: the model's dimension from one blank input
                card.dim = int(extractor.windows(np.zeros((1, extractor.size, extractor.size, 3), np.uint8)).shape[1])
                index, card.params = vectors.build(np.zeros((0, card.dim), np.float32), card.dim)
            card = store.save(folder, card, index, entries)
        except BaseException:
            if not (folder / store.CARD).exists():
                import shutil

                shutil.rmtree(folder, ignore_errors=True)
            raise
    return {**card.as_dict(), "added_images": len(ids) - len(failed), "failed": failed}


def add_images(
    ws: Workspace,
    name: str,
    image_ids: Sequence[str] | None = None,
    *,
    model: str | None = None,
    runtime: str = "auto",
    dask: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Embed images not yet in index ``name`` (default: every image its filters or dataset now select) and
    append them. ``model``, when given, must be the index's model (Conflict otherwise)."""
    card = store.get_card(ws, name)
    if model is not None:
        check_same_model(ws, card, model)
    with store.locked(ws, name) as folder:
        loaded = store.load(ws, name)
        card = loaded.card
        wanted = list(image_ids) if image_ids is not None else select_images(ws, card.images_filter, card.dataset)
        present = set(loaded.entries.image_ids)
        new = [i for i in dict.fromkeys(wanted) if i not in present]
        if not new:
            return {**card.as_dict(), "added_images": 0, "failed": []}
        extractor = extractor_for(ws, card.model, runtime)
        # a private copy to grow: the cached one serves searches until the new generation is in force
        index = vectors.read(folder / f"vectors-{card.generation}.faiss")
        cluster = dask if dask is not None else ws.settings.dask
        report = progress or no_progress
        index, entries, failed = _grow(ws, extractor, card, index, loaded.entries, new, report, cluster)
        card = store.save(folder, card, index, entries)
    return {**card.as_dict(), "added_images": len(new) - len(failed), "failed": failed}


def check_same_model(ws: Workspace, card: store.IndexCard, model: str) -> None:
    """Refuse vectors of another model than the index's (they live in another space): 409 naming both."""
    from gigavision.models.aliases import resolve

    model_id = resolve(ws, model)
    if model_id != card.model:
        raise Conflict(
            f"index {card.name!r} holds vectors of model {card.model}; model {model_id} embeds into another space"
            f" (query with {card.model}, or build an index with {model_id})"
        )
