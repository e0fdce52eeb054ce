"""The import side shared by every format: image references, validation, the label schema, commits.

A format's ``parse(path, session)`` reads its files and, image by image, calls ``session.resolve`` (image
reference → workspace image, ingesting files found under the images folder) and ``session.add`` with
``Row``s in file order. The session validates each row against the image (finite, non-negative, inside
the image, valid polygon, vertex cap), applies the label schema (unknown labels become classes unless
``strict_labels``), and commits each image's valid rows in one transaction. What it refuses goes into the
report with the file, the item and the reason; nothing already stored is modified.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.annotations import PREDICTION_ATTRIBUTES, Annotations, Canvas, shape_problem
from gigavision.errors import GigavisionError, InvalidInput
from gigavision.formats.report import ImportOptions, ImportReport, Unmatched
from gigavision.formats.rle import encode_window
from gigavision.images.metadata import SPLIT_HINT, split_hint
from gigavision.progress import Progress, no_progress
from gigavision.store.blobs import sha256_file
from gigavision.store.catalog import NamedImage
from gigavision.store.labels import kind_problem, palette_color

if TYPE_CHECKING:
    from gigavision.workspace import Workspace

IMAGE_SUFFIXES = (
    ".jpg",
    ".jpeg",
    ".png",
    ".tif",
    ".tiff",
    ".bmp",
    ".webp",
    ".gif",
    ".svs",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".vms",
    ".bif",
    ".dcm",
    ".jp2",
)


@dataclass(frozen=True, slots=True)
class Target:
    """A workspace image that annotations are imported into (level-0 size)."""

    id: str
    name: str
    width: int
    height: int


def _fitted(row: Row, class_kind: str) -> Row:
    """``row`` in the kind of its class where a format cannot say it and nothing is lost: a box class takes
    a polygon's bounding box (GeoJSON writes boxes as polygons), a polygon class a box as its rectangle (VOC
    has boxes only). Anything else is left for ``kind_problem`` to refuse."""
    import shapely

    if class_kind == "box" and row.kind == "polygon" and row.geometry is not None:
        x0, y0, x1, y1 = (float(v) for v in row.geometry.bounds)
        return replace(row, kind="box", box=(x0, y0, x1, y1), geometry=None)
    if class_kind == "polygon" and row.kind == "box" and row.box is not None:
        return replace(row, kind="polygon", geometry=shapely.box(*row.box))
    return row


@dataclass(slots=True)
class Row:
    """One annotation as a format read it, in level-0 pixels of its image, before validation.

    box (x0, y0, x1, y1) for boxes; geometry (shapely Polygon/MultiPolygon/Point) for polygons and points;
    window + offset (boolean array at level-0 (x0, y0)) for masks; nothing for tags. status / source: what
    the file records (GeoParquet), instead of the import's ``status`` / ``import:<format>``; a ``source``
    option still wins.
    """

    item: str
    label: str
    kind: str
    box: tuple[float, float, float, float] | None = None
    geometry: Any = None
    window: np.ndarray | None = None
    offset: tuple[int, int] = (0, 0)
    score: float = math.nan
    attributes: dict[str, Any] = field(default_factory=dict)
    status: str | None = None
    source: str | None = None


@dataclass
class _Class:
    kind: str
    color: str | None = None
    parent: str | None = None
    attributes: dict[str, list[str]] = field(default_factory=dict)


def validate_row(row: Row, width: int, height: int, max_vertices: int) -> str | None:
    """Why ``row`` cannot be stored on a ``width × height`` image (None when it can): ``shape_problem``, the
    check REST writes share, on the row's box, geometry or decoded mask window."""
    canvas = Canvas(width, height, max_vertices)
    if row.kind == "mask":
        if row.window is None or not row.window.any():
            return "empty mask"
        h, w = row.window.shape
        x0, y0 = row.offset
        return shape_problem("mask", (x0, y0, x0 + w, y0 + h), None, (h, w), canvas)
    return shape_problem(row.kind, row.box, row.geometry, None, canvas)


class ImportSession:
    """One import into one workspace: resolves images, validates and commits rows, fills the report."""

    def __init__(
        self, ws: Workspace, fmt: str, options: ImportOptions, actor: str, progress: Progress | None = None
    ) -> None:
        self.ws = ws
        self.format = fmt
        self.options = options
        self.actor = actor
        self.source = options.source or f"import:{fmt}"
        self.report = ImportReport(format=fmt, source=self.source)
        self.progress: Progress = progress or no_progress
        self._declared: dict[str, _Class] = {}
        self._schema: dict[str, _Class] = {
            name: _Class(c.kind, c.color, c.parent, dict(c.attributes)) for name, c in ws.labels.by_name().items()
        }
        self._resolved: dict[tuple[str, str], Target | None] = {}
        self._named: dict[str, list[NamedImage]] = {}  # prefetched workspace images by file name
        self._foldered: dict[str, list[NamedImage]] | None = None  # images named "sub/x.jpg", by file name "x.jpg"
        self._refused: dict[str, str] = {}  # labels the schema would not take, and why
        self._seen_images: set[str] = set()
        self._filtered = 0
        self._applied = 0  # declared classes already put in the schema
        self.images_dir = self._checked_dir(options.images_dir)
        self._index: dict[str, list[Path]] | None = None  # image files under --images by file name
        self._split_hints: dict[str, str] = {}  # image id -> the split the layout puts it in

    @staticmethod
    def _checked_dir(path: Path | None) -> Path | None:
        if path is None:
            return None
        path = Path(path).expanduser()
        if not path.is_dir():
            raise InvalidInput(f"images folder {path} does not exist or is not a folder")
        return path.resolve()

    # -- schema ---------------------------------------------------------------------------------------
    def declare_class(
        self,
        name: str,
        kind: str,
        color: str | None = None,
        parent: str | None = None,
        attributes: dict[str, list[str]] | None = None,
    ) -> None:
        """A class the file declares (COCO categories, YOLO names): created even when no row uses it."""
        if name and name not in self._declared:
            self._declared[name] = _Class(kind, color, parent, dict(attributes or {}))

    def _wanted(self, label: str) -> bool:
        return not self.options.labels or label in self.options.labels

    def _create_class(self, name: str, spec: _Class, chain: tuple[str, ...] = ()) -> None:
        if name in self._schema or self.options.strict_labels or not self._wanted(name):
            return
        parent = spec.parent if spec.parent and spec.parent != name else None
        if parent is not None and parent not in self._schema:
            declared = self._declared.get(parent)
            if declared is not None and parent not in chain:
                self._create_class(parent, declared, (*chain, name))
            if parent not in self._schema:
                parent = None
        color = spec.color or palette_color(name)
        if name in self._refused:
            return
        try:
            self.ws.labels.set(name, spec.kind, color, parent, spec.attributes)
        except InvalidInput as exc:  # e.g. a name over 256 characters: its annotations are rejected with this
            self._refused[name] = f"label cannot join the schema: {exc}"
            self.reject("schema", f"class {name[:80]!r}", str(exc))
            return
        self._schema[name] = _Class(spec.kind, color, parent, dict(spec.attributes))
        self.report.classes_added.append(name)

    def _apply_declared(self) -> None:
        if len(self._declared) == self._applied:
            return
        for name, spec in list(self._declared.items()):
            self._create_class(name, spec)
        self._applied = len(self._declared)

    # -- images -----------------------------------------------------------------------------------------
    def resolve(
        self,
        ref: str,
        file: str,
        *,
        path: Path | None = None,
        search: Iterable[Path] = (),
        stems: bool = False,
        size: tuple[int, int] | None = None,
        annotations: int = 0,
    ) -> Target | None:
        """The workspace image that ``ref`` names, or None (reported as unmatched).

        ``path``: the image file itself (ImageFolder, YOLO). Otherwise ``ref`` (a file name or a path relative
        to the images folder) is looked up under ``--images`` and then ``search`` (folders of the import
        itself), then among workspace images by file name; ``stems`` also accepts any image file whose name
        without extension equals ``ref``. A file found but not in the workspace is ingested. ``size`` (from
        the file) must equal the image's size.
        """
        key = (ref, str(path) if path else "")
        if key in self._resolved:
            target = self._resolved[key]
            if target is None:
                self._count_unmatched(file, ref, annotations)
            return self._size_ok(target, size, file, ref, annotations)
        target, reason = self._find(ref, path, search, stems)
        self._resolved[key] = target
        if target is None:
            self.report.unmatched.append(Unmatched(file, ref, reason, annotations))
            return None
        return self._size_ok(target, size, file, ref, annotations)

    def _count_unmatched(self, file: str, ref: str, annotations: int) -> None:
        for i, u in enumerate(self.report.unmatched):
            if u.ref == ref and u.file == file:
                self.report.unmatched[i] = Unmatched(u.file, u.ref, u.reason, u.annotations + annotations)
                return
        reason = next((u.reason for u in self.report.unmatched if u.ref == ref), "not found")
        self.report.unmatched.append(Unmatched(file, ref, reason, annotations))

    def _size_ok(
        self, target: Target | None, size: tuple[int, int] | None, file: str, ref: str, annotations: int
    ) -> Target | None:
        if target is None or size is None or size == (target.width, target.height):
            return target
        self.report.reject(
            file,
            f"image {ref}",
            f"the file gives the image size {size[0]}x{size[1]}, the image {target.name} is "
            f"{target.width}x{target.height}; its {annotations} annotation(s) were not imported",
        )
        return None

    def _find(self, ref: str, path: Path | None, search: Iterable[Path], stems: bool) -> tuple[Target | None, str]:
        if path is not None:
            return self._from_file(path, path.name)
        if not ref or "\x00" in ref:
            return None, "empty image reference" if not ref else "image reference contains a NUL byte"
        clean = ref.replace("\\", "/")
        rel = PurePosixPath(clean)
        escapes = rel.is_absolute() or bool(re.match(r"^[A-Za-z]:", clean)) or ".." in rel.parts
        if escapes:  # never followed: only its file name is looked up, inside the folders
            rel = PurePosixPath(rel.name)
            clean = rel.name
        name = rel.name
        folders = [d for d in (self.images_dir, *search) if d is not None]
        for folder in folders:
            root = folder.resolve()
            for candidate in (root / rel, root / name):
                found = candidate.resolve()
                if found.is_relative_to(root) and found.is_file():
                    return self._from_file(found, name)
            if stems:
                for suffix in IMAGE_SUFFIXES:
                    for candidate in (root / f"{clean}{suffix}", root / f"{name}{suffix}"):
                        found = candidate.resolve()
                        if found.is_relative_to(root) and found.is_file():
                            return self._from_file(found, found.name)
        if self.images_dir is not None:  # anywhere under --images, by file name: one file, never a guess
            matches = self._images_index().get(name, [])
            if len(matches) == 1:
                return self._from_file(matches[0], name)
            if len(matches) > 1:
                shown = ", ".join(m.relative_to(self.images_dir).as_posix() for m in matches[:3])
                return None, (
                    f"{len(matches)} files under {self.images_dir} are named {name} ({shown}"
                    f"{', …' if len(matches) > 3 else ''}); refer to one by its path, or pass its folder as --images"
                )
        target, reason = self._by_name(name, stems, path=clean)
        if target is None and escapes:
            reason += " (the reference is an absolute path or contains '..': only its file name was looked up)"
        return target, reason

    def _images_index(self) -> dict[str, list[Path]]:
        """Every image file under ``--images`` (recursively) by file name, built once per import."""
        if self._index is None:
            self._index = {}
            assert self.images_dir is not None
            for path in sorted(self.images_dir.rglob("*")):
                if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                    self._index.setdefault(path.name, []).append(path)
        return self._index

    def _from_file(self, file: Path, name: str) -> tuple[Target | None, str]:
        if not self.options.ingest:
            row = self.ws.catalog.lookup(sha256_file(file))
            if row is None:
                return None, f"{name} is not in the workspace (ingest is off)"
            return self._target(row.id, row.name, row.width, row.height, ingested=False), ""
        result = self.ws.ingest_file(file, name=name)
        if result.status == "rejected" or result.id is None:
            return None, f"{name} could not be ingested: {result.reason}"
        assert result.width is not None and result.height is not None
        return self._target(result.id, name, result.width, result.height, ingested=result.status == "added"), ""

    def prefetch(self, refs: Iterable[str]) -> None:
        """Look up the workspace images of many references by file name at once (a query per chunk of names)."""
        names = sorted({PurePosixPath(r.replace("\\", "/")).name for r in refs if r} - set(self._named))
        self._named.update(self.ws.catalog.named(names))

    def _by_name(self, name: str, stems: bool, path: str = "") -> tuple[Target | None, str]:
        """The workspace image named ``name`` (a file name); ``path``: the reference as given (``sub/x.jpg``).

        Lookup order: the stored name equal to ``name``, then to ``path``, then (``stems``) a stored name whose
        stem is ``name``; then a stored name with folders whose file name is ``name`` (images ingested with
        ``--recursive`` are named ``sub/x.jpg`` and exported as ``x.jpg``). Several images that fit are
        reported, never guessed between.
        """
        catalog = self.ws.catalog
        rows = self._named[name] if name in self._named else catalog.named([name])[name]
        if not rows and path and path != name:
            rows = catalog.named([path])[path]
        if not rows and stems:
            like = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ".%"
            rows = [r for r in catalog.named_like(like, escape="\\", limit=50) if PurePosixPath(r.name).stem == name]
        where = f" under {self.images_dir}" if self.images_dir else " (no --images folder given)"
        if not rows:
            rows = self._in_folders(name, stems)
            if len(rows) > 1:
                shown = ", ".join(sorted(r.name for r in rows)[:5]) + (", …" if len(rows) > 5 else "")
                return None, (
                    f"{len(rows)} workspace images in different folders have the file name {name} ({shown}); "
                    "refer to one by its stored name, or pass the files with --images"
                )
        if not rows:
            return None, f"no file {name}{where} and no image named {name} in the workspace"
        if len(rows) > 1:
            return None, f"{len(rows)} workspace images are named {name}; pass the files with --images"
        r = rows[0]
        return self._target(r.id, r.name, r.width, r.height, ingested=False), ""

    def _in_folders(self, name: str, stems: bool) -> list[NamedImage]:
        """Workspace images stored with folders in their name (``sub/x.jpg``) whose file name is ``name``
        (``stems``: whose file name's stem is). The names with a ``/`` are read once per import."""
        if self._foldered is None:
            self._foldered = {}
            for row in self.ws.catalog.named_like("%/%"):
                self._foldered.setdefault(PurePosixPath(row.name).name, []).append(row)
        rows = list(self._foldered.get(name, []))
        if not rows and stems:
            rows = [r for base, found in self._foldered.items() if PurePosixPath(base).stem == name for r in found]
        return rows

    def hint_split(self, target: Target | None, split: str | None) -> None:
        """The split the import's layout puts ``target`` in (a COCO file's name, a YOLO folder, a CVAT
        ``subset``): stored as the image's metadata ``split`` at the end, where ``dataset create`` keeps it."""
        if target is not None and split and split_hint(split):
            self._split_hints[target.id] = split_hint(split)

    def _store_split_hints(self) -> None:
        try:
            self.ws.set_images_meta({i: {SPLIT_HINT: s} for i, s in self._split_hints.items()}, actor=self.actor)
        except GigavisionError as exc:
            self.report.note(f"the split the layout gives was not stored as image metadata: {exc}")
            return
        counts = Counter(self._split_hints.values())
        shown = ", ".join(f"{split} {n}" for split, n in sorted(counts.items()))
        self.report.note(f"splits from the layout: {shown} (image metadata '{SPLIT_HINT}'; dataset create keeps them)")

    def image(self, image_id: str) -> Target:
        """A workspace image by id (``NotFound`` when there is none)."""
        row = self.ws.get_image(image_id)
        return self._target(row.id, row.name, row.width, row.height, ingested=False)

    def _target(self, image_id: str, name: str, width: int, height: int, *, ingested: bool) -> Target:
        if image_id not in self._seen_images:
            self._seen_images.add(image_id)
            if ingested:
                self.report.images_ingested += 1
            else:
                self.report.images_matched += 1
        return Target(image_id, name, int(width), int(height))

    # -- rows -------------------------------------------------------------------------------------------
    def reject(self, file: str, item: str, reason: str) -> None:
        self.report.reject(file, item, reason)

    def add(self, target: Target, file: str, rows: Sequence[Row]) -> int:
        """Validate ``rows`` for ``target`` and store the valid ones in one transaction; returns how many."""
        self._apply_declared()
        kept: list[Row] = []
        for row in rows:
            if not self._wanted(row.label):
                self._filtered += 1
                continue
            problem = validate_row(row, target.width, target.height, self.options.max_vertices)
            if problem is None:
                problem = self._schema_problem(row)
            if problem:
                self.reject(file, row.item, problem)
            else:
                cls = self._schema.get(row.label)
                kept.append(_fitted(row, cls.kind) if cls is not None else row)
        if not kept:
            return 0
        ann = self._annotations(kept)
        try:
            self.ws.annotations.add(target.id, ann, actor=self.actor)
        except GigavisionError as exc:
            for row in kept:
                self.reject(file, row.item, str(exc))
            return 0
        self.report.annotations += len(kept)
        for row in kept:
            self.report.by_kind[row.kind] += 1
        return len(kept)

    def _schema_problem(self, row: Row) -> str | None:
        cls = self._schema.get(row.label)
        if cls is None:
            if self.options.strict_labels:
                return f"label {row.label!r} is not in the schema (strict labels)"
            if row.label in self._refused:
                return self._refused[row.label]
            declared = self._declared.get(row.label)
            spec = _Class(row.kind, None, None, {k: [] for k in sorted(row.attributes)})
            if declared is not None:
                merged = {**spec.attributes, **declared.attributes}
                spec = _Class(declared.kind, declared.color, declared.parent, merged)
            self._create_class(row.label, spec)
            if row.label not in self._schema:
                return self._refused.get(row.label, f"label {row.label!r} could not be added to the schema")
            cls = self._schema[row.label]
        wrong_kind = kind_problem(row.label, cls.kind, _fitted(row, cls.kind).kind)
        if wrong_kind:
            return wrong_kind
        missing = sorted(set(row.attributes) - set(cls.attributes) - set(PREDICTION_ATTRIBUTES))
        if missing and self.options.strict_labels:
            return f"class {row.label!r} has no attribute {missing[0]!r} in the schema (strict labels)"
        if missing:  # like an unknown label: the attribute joins the schema, any value allowed
            cls.attributes.update({k: [] for k in missing})
            self.ws.labels.set(row.label, cls.kind, cls.color or palette_color(row.label), cls.parent, cls.attributes)
            self.report.attributes_added += [f"{row.label}.{k}" for k in missing]
        for key, value in row.attributes.items():  # the same rule as LabelSchema.check
            allowed = cls.attributes.get(key)
            if allowed and value not in allowed:
                return f"{key}={value!r} is not one of {allowed}"
        return None

    def _annotations(self, rows: Sequence[Row]) -> Annotations:
        """Rows to ``Annotations`` in file order (the order is what makes re-exports identical)."""
        import shapely

        n = len(rows)
        xyxy = np.full((n, 4), math.nan)
        geometry = np.empty(n, dtype=object)
        masks = np.empty(n, dtype=object)
        attributes = np.empty(n, dtype=object)
        for i, r in enumerate(rows):
            attributes[i] = r.attributes
            if r.kind == "box":
                assert r.box is not None
                xyxy[i] = r.box
            elif r.kind in ("polygon", "point"):
                geometry[i] = r.geometry
                xyxy[i] = shapely.bounds(r.geometry)
            elif r.kind == "mask":
                assert r.window is not None
                ys, xs = np.nonzero(r.window)
                y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
                masks[i] = encode_window(r.window[y0:y1, x0:x1])
                ox, oy = r.offset
                xyxy[i] = (ox + x0, oy + y0, ox + x1, oy + y1)
        return Annotations(
            kind=np.array([r.kind for r in rows], dtype=object),
            label=np.array([r.label for r in rows], dtype=object),
            xyxy=xyxy,
            geometry=geometry,
            mask=masks,
            score=np.array([r.score for r in rows], dtype=np.float64),
            source=np.array([self.options.source or r.source or self.source for r in rows], dtype=object),
            status=np.array([r.status or self.options.status for r in rows], dtype=object),
            attributes=attributes,
        )

    def finish(self) -> ImportReport:
        self._apply_declared()
        if self._split_hints:
            self._store_split_hints()
        if self._filtered:
            self.report.note(f"{self._filtered} annotation(s) with labels outside --label were skipped")
        return self.report
