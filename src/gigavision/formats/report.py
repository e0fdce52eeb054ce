"""Options of an import or export, and what each one reports back (printed by the CLI, returned by jobs)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gigavision.annotations import STATUSES
from gigavision.errors import InvalidInput

"""``progress(done, total, message)``; a job's version raises ``JobCancelled`` to stop the work."""

IMAGE_MODES = ("copy", "link", "none")
YOLO_TASKS = ("detect", "segment", "obb")
YOLO_LAYOUTS = ("ultralytics", "darknet")
CRS_MODES = ("image", "map")
MAX_LISTED = 10_000  # rejections listed one by one in a report; the count is always exact


def _from_mapping(cls: Any, values: Mapping[str, Any], what: str) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidInput(f"unknown {what} option(s) {unknown}; known: {', '.join(sorted(known))}")
    return dict(values)


@dataclass(frozen=True)
class ExportOptions:
    """How to write an export.

    images       copy | link | none: put the image files next to the annotations (``link`` = hard link,
                 symbolic link across file systems); None = the format's default (YOLO, ImageFolder: copy)
    task         YOLO only: detect (``class cx cy w h``), segment (``class x1 y1 x2 y2 ...``) or obb (oriented
                 boxes, ``class x1 y1 x2 y2 x3 y3 x4 y4``)
    layout       YOLO only: ultralytics (``data.yaml``, ``images/<split>``, ``labels/<split>``) or darknet (YOLO
                 1.1: ``obj.names``, ``obj.data``, ``train.txt``, ``obj_train_data/``)
    crs          GeoJSON / GeoParquet: image (level-0 pixels) or map (the coordinates of a georeferenced
                 image's CRS; images without one are refused)
    """

    images: str | None = None
    task: str = "detect"
    layout: str = "ultralytics"
    crs: str = "image"

    def __post_init__(self) -> None:
        if self.images is not None and (not isinstance(self.images, str) or self.images not in IMAGE_MODES):
            raise InvalidInput(f"images must be one of {', '.join(IMAGE_MODES)}, got {self.images!r}")
        for name, allowed in (("task", YOLO_TASKS), ("layout", YOLO_LAYOUTS), ("crs", CRS_MODES)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in allowed:
                raise InvalidInput(f"{name} must be one of {', '.join(allowed)}, got {value!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> ExportOptions:
        return cls(**_from_mapping(cls, values or {}, "export"))


@dataclass(frozen=True)
class ImportOptions:
    """How to read an import.

    images_dir     folder where image references (file names or relative paths) are looked up; files found
                   there that are not in the workspace yet are ingested
    status         status of the imported annotations (ground truth from another tool: accepted)
    source         recorded as each annotation's source; None = ``import:<format>``
    strict_labels  reject annotations whose label is not in the schema instead of adding the class
    labels         import only these labels (empty: all)
    ingest         ingest image files that are found but not in the workspace yet
    max_vertices   largest geometry accepted (vertices), against memory exhaustion by one feature
    default_label  label of GeoJSON features without a classification
    image          GeoJSON: the image (id or name) a single file belongs to, instead of matching its name
    """

    images_dir: Path | None = None
    status: str = "accepted"
    source: str | None = None
    strict_labels: bool = False
    labels: tuple[str, ...] = ()
    ingest: bool = True
    max_vertices: int = 1_000_000
    default_label: str = "unclassified"
    image: str | None = None

    def __post_init__(self) -> None:
        types = {
            "status": (str,),
            "source": (str, type(None)),
            "strict_labels": (bool,),
            "labels": (tuple, list),
            "ingest": (bool,),
            "max_vertices": (int,),
            "default_label": (str,),
            "image": (str, type(None)),
        }
        for name, allowed in types.items():
            value = getattr(self, name)
            if not isinstance(value, allowed) or (name == "max_vertices" and isinstance(value, bool)):
                raise InvalidInput(f"import option {name} has the wrong type: {value!r}")
        if not all(isinstance(v, str) for v in self.labels):
            raise InvalidInput("import option labels must be text values")
        if self.status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if not 4 <= self.max_vertices <= 100_000_000:
            raise InvalidInput(f"max_vertices must be 4..100000000, got {self.max_vertices}")
        if self.source is not None and not 1 <= len(self.source) <= 256:
            raise InvalidInput("source must be 1 to 256 characters")
        if not self.default_label:
            raise InvalidInput("default_label must not be empty")
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.images_dir is not None:
            object.__setattr__(self, "images_dir", Path(self.images_dir))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> ImportOptions:
        return cls(**_from_mapping(cls, values or {}, "import"))


@dataclass(frozen=True, slots=True)
class Rejection:
    """One thing that was not imported: which file, which item in it, and why."""

    file: str
    item: str
    reason: str


@dataclass(frozen=True, slots=True)
class Unmatched:
    """An image reference that matched no file under the images folder and no image in the workspace."""

    file: str
    ref: str
    reason: str
    annotations: int = 0


@dataclass
class ImportReport:
    """What an import did. ``ok`` is False when anything was rejected or left unmatched (CLI exit code 1)."""

    format: str
    source: str
    files: int = 0
    images_matched: int = 0
    images_ingested: int = 0
    annotations: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    classes_added: list[str] = field(default_factory=list)
    attributes_added: list[str] = field(default_factory=list)
    rejected_count: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    unmatched: list[Unmatched] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def reject(self, file: str, item: str, reason: str) -> None:
        self.rejected_count += 1
        if len(self.rejected) < MAX_LISTED:
            self.rejected.append(Rejection(file, item, reason))

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    @property
    def ok(self) -> bool:
        return self.rejected_count == 0 and not self.unmatched

    def summary(self) -> str:
        """One line for a job's message: ``imported 10 annotations`` plus ``, rejected 2, unmatched 1`` when not ok."""
        line = f"imported {self.annotations} annotations"
        if self.ok:
            return line
        return f"{line}, rejected {self.rejected_count}, unmatched {len(self.unmatched)} (not ok: see the report)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "source": self.source,
            "ok": self.ok,
            "files": self.files,
            "images_matched": self.images_matched,
            "images_ingested": self.images_ingested,
            "annotations": self.annotations,
            "by_kind": dict(sorted(self.by_kind.items())),
            "classes_added": self.classes_added,
            "attributes_added": self.attributes_added,
            "rejected_count": self.rejected_count,
            "rejected": [asdict(r) for r in self.rejected],
            "rejected_truncated": self.rejected_count > len(self.rejected),
            "unmatched_count": len(self.unmatched),
            "unmatched": [asdict(u) for u in self.unmatched],
            "notes": self.notes,
        }


@dataclass
class ExportResult:
    """What an export wrote: counts, the files, and what the format could not hold (``skipped``)."""

    format: str
    out: str
    images: int = 0
    annotations: int = 0
    files: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    converted: Counter[str] = field(default_factory=Counter)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "out": self.out,
            "images": self.images,
            "annotations": self.annotations,
            "files": self.files,
            "skipped": dict(sorted(self.skipped.items())),
            "converted": dict(sorted(self.converted.items())),
        }
