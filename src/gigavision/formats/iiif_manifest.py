"""IIIF Presentation 3 documents: an image with its annotations as a Manifest, a dataset version as a Collection.

Mirador, Universal Viewer and other IIIF viewers open ``{docs}/manifest.json`` and show the image, tiled
through our IIIF Image API 3.0 service, with the annotations as W3C Web Annotations. ``docs`` is where one
image's documents live: ``{base}/iiif/3/{id}`` for the live workspace, ``{base}/iiif/3/datasets/{name}/{N}/images/{id}``
in dataset version ``name@N``.

Mapping (one image → one Manifest with one Canvas):
    manifest    ``{docs}/manifest.json``; label: the image name; metadata: id, size, annotation count (and the
                dataset version and split); ``partOf`` the version's Collection; ``seeAlso`` the REST listing
    canvas      ``{docs}/canvas``; width × height = the level-0 size, so annotation coordinates are level-0
                pixels as stored, never scaled
    painting    an Annotation whose body is the Image ``{service}/full/max/0/default.jpg`` with an
                ImageService3 ``{base}/iiif/3/{id}`` (profile level2): viewers ask the service for tiles
    thumbnail   ``{service}/full/W,H/0/default.jpg``, the longer side ``THUMBNAIL`` px (never upscaled)
    annotation  motivation ``commenting``; body: a TextualBody with the label (purpose ``tagging``) and one
                with ``label (kind, status, score S, source; attribute: value, ...)`` (purpose ``describing``);
                target: a SpecificResource of the canvas with these selectors (alternatives, W3C style):
    box         FragmentSelector ``xywh=`` (the whole pixels enclosing the box: media fragments take integers)
                and SvgSelector ``<path>`` with the exact corners
    polygon     SvgSelector ``<path>``: one closed subpath per ring, holes kept (MultiPolygon: every part)
    mask        as a polygon: its exact pixel outline
    point       PointSelector (``x``, ``y`` rounded to whole pixels: IIIF's are integers) and an SvgSelector
                cross centred on the exact point (Mirador draws SVG paths only; the cross is a drawing aid)
    tag         target: the canvas itself (the whole image), no selector
Coordinates are written to 6 decimals (``formats.text.num``); SVG uses ``<path>`` only, the one element
Mirador draws, with ``fill="none"`` (SVG's default fill would paint polygons black elsewhere) and the class
colour as ``stroke``.

Annotation ids: a live annotation is ``{base}/api/v1/annotations/{id}`` (its REST record, its permanent
name); a frozen one (dataset version) is ``{page}#{id}``, the immutable page that holds it.

Paging: annotations come in id order on AnnotationPages of ``PAGE_SIZE`` at ``{docs}/annotations.json``
(``?page=N`` from the second on; each links ``prev``/``next``). Up to ``PAGE_SIZE`` annotations are embedded
in the manifest; more are referenced by page URL (viewers fetch them), the first ``LISTED_PAGES`` pages only:
a viewer never loads more than ``PAGE_SIZE * LISTED_PAGES`` annotations of one image. Beyond that the
manifest's ``summary`` says how many are shown of how many, the later pages are still served (the last
listed page's ``next`` leads on), and the REST listing (``seeAlso``) has them all.

A dataset version is a Collection of its images' manifests (``collection.json``), not one Manifest with a
canvas per image: a viewer fetches a manifest only when it is opened, so a version of 100,000 images costs
the viewer a list of links, not 100,000 canvases and their annotations at once. Collections hold up to
``COLLECTION_PAGE`` manifests; a bigger version's collection lists sub-collections (``collection.json?page=N``)
of that many each.

The documents are plain JSON-ready dicts, not iiif-prezi3's pydantic models: iiif-prezi3 3.1.1 pins
``Pillow<=12.0.0``, which would hold the whole platform's image decoder back, so it is no dependency of
gigavision. It is installed for the tests only (``requirements-nodeps.txt``), and tests/test_iiif_manifest.py
validates every document the routes return with its models, independently of this code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from sqlalchemy import func, select

from gigavision.annotations import Annotations
from gigavision.errors import NotFound
from gigavision.formats.live import DEFAULT_STATUSES, rows_to_annotations
from gigavision.formats.rle import mask_outline
from gigavision.formats.source import ImageEntry
from gigavision.formats.text import num
from gigavision.store.annotations import image_key
from gigavision.store.schema import AnnotationRow

if TYPE_CHECKING:
    from gigavision.datasets.versions import DatasetVersion
    from gigavision.workspace import Workspace

PAGE_SIZE = 1000  # annotations per AnnotationPage (and the most embedded in a manifest)
LISTED_PAGES = 10  # pages a manifest lists: viewers load at most PAGE_SIZE * LISTED_PAGES annotations
COLLECTION_PAGE = 1000  # manifests per Collection
THUMBNAIL = 256  # the thumbnail's longer side, px
MARKER = 200  # a point's cross spans 1/MARKER of the image's longer side (at least 4 px) each way
PRESENTATION_CONTEXT = "http://iiif.io/api/presentation/3/context.json"
SVG_NS = "http://www.w3.org/2000/svg"
MEDIA_FRAGMENTS = "http://www.w3.org/TR/media-frags/"  # what a FragmentSelector's ``xywh=`` conforms to
COLOR = re.compile(r"#[0-9a-fA-F]{3,8}")
Document = dict[str, Any]  # a JSON-ready IIIF resource: ``json.dumps`` gives the document


class AnnotationSource(Protocol):
    """The annotations of one image in a stable order, read a window at a time."""

    def count(self) -> int: ...

    def window(self, start: int, stop: int) -> Annotations: ...


class LiveAnnotations:
    """An image's live annotations as exports read them (not deleted, status not ``rejected``), in id order,
    less ``exclude`` (others' labels of an open QC item). Each window is one SQL page: a page of a
    500,000-annotation slide reads its 1,000 rows, not the image's all."""

    def __init__(self, ws: Workspace, image_id: str, exclude: frozenset[int] = frozenset()) -> None:
        self.ws, self.image_id, self.exclude = ws, image_id, exclude

    def _where(self) -> list[Any]:
        a = AnnotationRow
        where = [a.image_key == image_key(self.image_id), a.image_id == self.image_id, ~a.deleted]
        where.append(a.status.in_(DEFAULT_STATUSES))
        if self.exclude:
            where.append(a.id.not_in(sorted(self.exclude)))
        return where

    def count(self) -> int:
        with self.ws.session() as s:
            return int(s.scalar(select(func.count()).select_from(AnnotationRow).where(*self._where())) or 0)

    def window(self, start: int, stop: int) -> Annotations:
        stmt = select(AnnotationRow).where(*self._where()).order_by(AnnotationRow.id)
        with self.ws.session() as s:
            rows = list(s.scalars(stmt.offset(start).limit(max(0, stop - start))))
        return rows_to_annotations(rows) if rows else Annotations.empty()


class FrozenAnnotations:
    """Annotations already in memory (a dataset version's frozen set), in their stored order."""

    def __init__(self, annotations: Annotations) -> None:
        self.annotations = annotations

    def count(self) -> int:
        return len(self.annotations)

    def window(self, start: int, stop: int) -> Annotations:
        return self.annotations[np.arange(start, min(stop, len(self.annotations)))]


@dataclass(frozen=True, slots=True)
class Place:
    """Where one image's IIIF documents live (URLs without a trailing slash).

    ``base``: the server root (the image service is ``{base}/iiif/3/{id}``); ``docs``: this image's documents;
    ``listing``: the REST listing of the same annotations; ``live``: annotation ids are the live REST records;
    ``collection``: the Collection the manifest is part of; ``context``: extra metadata rows (label, value);
    ``colors``: label -> the class colour (``#rrggbb``), the SVG shapes' stroke.
    """

    base: str
    image_id: str
    docs: str
    listing: str
    live: bool = True
    collection: str | None = None
    context: tuple[tuple[str, str], ...] = ()
    colors: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def service(self) -> str:
        return f"{self.base}/iiif/3/{self.image_id}"

    @property
    def canvas(self) -> str:
        return f"{self.docs}/canvas"

    def page(self, n: int) -> str:
        return f"{self.docs}/annotations.json" + (f"?page={n}" if n > 1 else "")


def live_place(base: str, image_id: str, colors: Mapping[str, str | None]) -> Place:
    """The live workspace's documents of an image: ``{base}/iiif/3/{id}/…``."""
    base = base.rstrip("/")
    listing = f"{base}/api/v1/images/{image_id}/annotations"
    return Place(base, image_id, f"{base}/iiif/3/{image_id}", listing, colors=colors)


def version_place(
    base: str, version: DatasetVersion, entry: ImageEntry, colors: Mapping[str, str | None] | None = None
) -> Place:
    """Dataset version ``name@N``'s documents of one of its images (frozen annotations); ``colors``: the
    version's class colours (read from its schema when not given)."""
    base = base.rstrip("/")
    root = version_root(base, version)
    listing = f"{base}/api/v1/datasets/{version.name}/versions/{version.version}/images/{entry.id}/annotations"
    context = (("Dataset", version.ref), ("Split", entry.split or ""))
    if colors is None:
        colors = {c["name"]: c.get("color") for c in version.classes()}
    docs = f"{root}/images/{entry.id}"
    return Place(base, entry.id, docs, listing, False, f"{root}/collection.json", context, colors)


def version_root(base: str, version: DatasetVersion) -> str:
    return f"{base.rstrip('/')}/iiif/3/datasets/{version.name}/{version.version}"


def version_entry(version: DatasetVersion, image_id: str) -> ImageEntry:
    """An image of the version by its full id (``NotFound`` when it is not in it)."""
    return _entry(version.image(image_id))


def _entry(row: dict[str, Any]) -> ImageEntry:
    return ImageEntry(row["id"], row["name"], int(row["width"]), int(row["height"]), row["split"], row["bands"])


# -- documents --------------------------------------------------------------------------------------------
def manifest(entry: ImageEntry, source: AnnotationSource, place: Place) -> Document:
    """The image's Manifest."""
    total = source.count()
    pages = page_count(total)
    metadata = [
        ("Image id", entry.id),
        ("Size", f"{entry.width} × {entry.height} px"),
        ("Annotations", f"{total:,}"),
        *(row for row in place.context if row[1]),
    ]
    doc = _top(
        f"{place.docs}/manifest.json",
        "Manifest",
        label=_text(entry.name),
        metadata=[{"label": _text(k, "en"), "value": _text(v)} for k, v in metadata],
        thumbnail=[_thumbnail(entry, place)],
        seeAlso=[
            {
                "id": place.listing,
                "type": "Dataset",
                "format": "application/json",
                "label": _text("annotations (REST)", "en"),
            }
        ],
        items=[_canvas(entry, source, place, total)],
    )
    if place.live:
        home = {"id": f"{place.base}/#/image/{entry.id}", "type": "Text", "format": "text/html"}
        doc["homepage"] = [{**home, "label": _text("gigavision", "en")}]
    if place.collection:
        doc["partOf"] = [_ref(place.collection, "Collection")]
    if pages > LISTED_PAGES:
        shown = PAGE_SIZE * LISTED_PAGES
        doc["summary"] = _text(
            f"The canvas lists the first {shown:,} of {total:,} annotations ({LISTED_PAGES} pages of "
            f"{PAGE_SIZE:,}); page {LISTED_PAGES}'s next link leads on, and {place.listing} lists them all.",
            "en",
        )
    return doc


def canvas(entry: ImageEntry, source: AnnotationSource, place: Place) -> Document:
    """The image's Canvas alone (what its id, ``{docs}/canvas``, answers)."""
    return {"@context": PRESENTATION_CONTEXT, **_canvas(entry, source, place, source.count())}


def annotation_page(entry: ImageEntry, source: AnnotationSource, place: Place, page: int) -> Document:
    """Page ``page`` (1-based) of the image's annotations; ``NotFound`` past the last one."""
    total = source.count()
    pages = page_count(total)
    if not 1 <= page <= pages:
        raise NotFound(f"image {entry.id} has {total:,} annotations on {pages} page(s); there is no page {page}")
    start = (page - 1) * PAGE_SIZE
    ann = source.window(start, start + PAGE_SIZE)
    doc = _top(
        place.page(page),
        "AnnotationPage",
        label=_text(f"annotations {start + 1:,}–{start + len(ann):,} of {total:,}" if total else "no annotations"),
        items=list(_annotations(ann, entry, place, place.page(page))),
    )
    if page > 1:
        doc["prev"] = _ref(place.page(page - 1), "AnnotationPage")
    if page < pages:
        doc["next"] = _ref(place.page(page + 1), "AnnotationPage")
    return doc


def page_count(total: int) -> int:
    """Annotation pages of an image with ``total`` annotations (one, empty, when it has none)."""
    return max(1, math.ceil(total / PAGE_SIZE))


def version_collection(version: DatasetVersion, base: str, page: int | None = None) -> Document:
    """The version's Collection: its images' manifests in the version's order (by name, id); a version of
    more than ``COLLECTION_PAGE`` images lists sub-collections of that many (``page``: one of them)."""
    root = version_root(base, version)
    top = f"{root}/collection.json"
    total = len(version)
    pages = max(1, math.ceil(total / COLLECTION_PAGE))
    label = f"{version.ref} ({total:,} images)"
    if page is None and pages > 1:
        parts = []
        for n in range(1, pages + 1):
            first, last = (n - 1) * COLLECTION_PAGE + 1, min(n * COLLECTION_PAGE, total)
            parts.append({**_ref(f"{top}?page={n}", "Collection"), "label": _text(f"images {first}–{last}")})
        return _top(top, "Collection", label=_text(label), items=parts)
    n = page or 1
    if not 1 <= n <= pages:
        raise NotFound(f"{version.ref} has {total:,} images on {pages} collection page(s); there is no page {n}")
    start = (n - 1) * COLLECTION_PAGE
    items = []
    rows, _ = version.page(None, start, COLLECTION_PAGE)
    for row in rows:
        entry = _entry(row)
        place = version_place(base, version, entry, colors={})  # a reference draws no shapes
        ref = _ref(f"{place.docs}/manifest.json", "Manifest")
        items.append({**ref, "label": _text(entry.name), "thumbnail": [_thumbnail(entry, place)]})
    if page is None:
        return _top(top, "Collection", label=_text(label), items=items)
    return _top(
        f"{top}?page={n}",
        "Collection",
        label=_text(f"{version.ref}: images {start + 1}–{start + len(items)}"),
        partOf=[_ref(top, "Collection")],
        items=items,
    )


# -- parts ------------------------------------------------------------------------------------------------
def _top(ident: str, kind: str, **fields: Any) -> Document:
    """A document that is served on its own: only it carries ``@context`` (embedded resources inherit it)."""
    return {"@context": PRESENTATION_CONTEXT, "id": ident, "type": kind, **fields}


def _ref(ident: str, kind: str) -> Document:
    """A reference a viewer follows: id and type only. Mirador fetches an AnnotationPage only when it has no
    ``items``, so a page reference must not carry an empty list."""
    return {"id": ident, "type": kind}


def _canvas(entry: ImageEntry, source: AnnotationSource, place: Place, total: int) -> Document:
    body = {
        "id": f"{place.service}/full/max/0/default.jpg",
        "type": "Image",
        "format": "image/jpeg",
        "width": entry.width,
        "height": entry.height,
        "service": [_service(place)],
    }
    painting = _annotation(f"{place.canvas}#painting", "painting", body, place.canvas)
    if total <= PAGE_SIZE:
        embedded = list(_annotations(source.window(0, PAGE_SIZE), entry, place, place.page(1)))
        pages = [{**_ref(place.page(1), "AnnotationPage"), "items": embedded}]
    else:
        pages = [_ref(place.page(n), "AnnotationPage") for n in range(1, min(page_count(total), LISTED_PAGES) + 1)]
    return {
        "id": place.canvas,
        "type": "Canvas",
        "label": _text(entry.name),
        "width": entry.width,
        "height": entry.height,
        "thumbnail": [_thumbnail(entry, place)],
        "items": [{**_ref(f"{place.canvas}#page", "AnnotationPage"), "items": [painting]}],
        "annotations": pages,
    }


def _annotation(ident: str, motivation: str, body: Any, target: Any) -> Document:
    return {"id": ident, "type": "Annotation", "motivation": motivation, "body": body, "target": target}


def _service(place: Place) -> Document:
    return {"id": place.service, "type": "ImageService3", "profile": "level2"}


def _thumbnail(entry: ImageEntry, place: Place) -> Document:
    scale = min(1.0, THUMBNAIL / max(entry.width, entry.height))
    w, h = max(1, round(entry.width * scale)), max(1, round(entry.height * scale))
    return {
        "id": f"{place.service}/full/{w},{h}/0/default.jpg",
        "type": "Image",
        "format": "image/jpeg",
        "width": w,
        "height": h,
        "service": [_service(place)],
    }


def _annotations(ann: Annotations, entry: ImageEntry, place: Place, page: str) -> Iterator[Document]:
    for i in range(len(ann)):
        label = str(ann.label[i])
        stored = int(ann.id[i]) if len(ann.id) else -1
        if place.live and stored >= 0:
            ident = f"{place.base}/api/v1/annotations/{stored}"
        else:
            ident = f"{page}#{stored if stored >= 0 else f'i{i}'}"
        body = [_textual(label, "tagging"), _textual(_describe(ann, i), "describing")]
        selectors = _selectors(ann, i, entry, _stroke(place.colors.get(label)))
        target: str | Document = place.canvas
        if selectors:
            target = {"type": "SpecificResource", "source": place.canvas, "selector": selectors}
        yield _annotation(ident, "commenting", body, target)


def _textual(value: str, purpose: str) -> Document:
    return {"type": "TextualBody", "value": value, "purpose": purpose, "format": "text/plain"}


def _describe(ann: Annotations, i: int) -> str:
    parts = [str(ann.kind[i]), str(ann.status[i])]
    score = float(ann.score[i])
    if not math.isnan(score):
        parts.append(f"score {num(score, 4)}")
    parts.append(str(ann.source[i]))
    text = f"{ann.label[i]} ({', '.join(parts)})"
    attributes = ann.attributes[i] or {}
    if attributes:
        text += "; " + ", ".join(f"{k}: {attributes[k]}" for k in sorted(attributes))
    return text


def _selectors(ann: Annotations, i: int, entry: ImageEntry, stroke: str) -> list[Document]:
    kind = str(ann.kind[i])
    if kind == "tag":
        return []
    if kind == "point":
        x, y = (float(v) for v in ann.xyxy[i][:2])
        r = max(4.0, max(entry.width, entry.height) / MARKER)
        cross = f"M{num(x - r)},{num(y)} L{num(x + r)},{num(y)} M{num(x)},{num(y - r)} L{num(x)},{num(y + r)}"
        return [{"type": "PointSelector", "x": round(x), "y": round(y)}, _svg(cross, stroke)]
    if kind == "box":
        x0, y0, x1, y1 = (float(v) for v in ann.xyxy[i])
        fx, fy = math.floor(x0), math.floor(y0)
        xywh = f"xywh={fx},{fy},{math.ceil(x1) - fx},{math.ceil(y1) - fy}"
        path = _ring([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
        return [{"type": "FragmentSelector", "conformsTo": MEDIA_FRAGMENTS, "value": xywh}, _svg(path, stroke)]
    geom = ann.geometry[i] if kind == "polygon" else mask_outline(ann.mask[i], ann.xyxy[i])
    return [_svg(_polygon_path(geom), stroke)]


def _polygon_path(geom: Any) -> str:
    import shapely

    rings = [r for poly in shapely.get_parts(geom) for r in (poly.exterior, *poly.interiors)]
    return " ".join(_ring(np.asarray(r.coords)[:-1, :2].tolist()) for r in rings)


def _ring(points: Sequence[Sequence[float]]) -> str:
    head, *rest = points
    return f"M{num(head[0])},{num(head[1])} " + " ".join(f"L{num(x)},{num(y)}" for x, y in rest) + " Z"


def _stroke(color: str | None) -> str:
    """`` stroke="#rrggbb"`` for a class colour; nothing for a missing or odd one (it goes into SVG markup)."""
    return f' stroke="{color}"' if color and COLOR.fullmatch(color) else ""


def _svg(path: str, stroke: str) -> Document:
    """An SvgSelector drawing ``path``."""
    return {"type": "SvgSelector", "value": f'<svg xmlns="{SVG_NS}"><path d="{path}" fill="none"{stroke}/></svg>'}


def _text(value: str, language: str = "none") -> dict[str, list[str]]:
    """A IIIF language map; ``none``: text in no particular language (names, numbers)."""
    return {language: [value]}
