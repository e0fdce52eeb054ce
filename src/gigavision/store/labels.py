"""The label schema: classes (kind, colour, parent, allowed attribute values) and their migrations.

Renaming, merging and removing classes never loses an annotation: each change moves the annotations in
the same transaction as the schema, bumps their version (so an edit based on the old label gets 409
instead of silently restoring it) and is recorded in ``label_events`` with how many annotations moved.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from gigavision.annotations import KINDS, PREDICTION_ATTRIBUTES, VOLUME_ATTRIBUTES
from gigavision.errors import Conflict, InvalidInput, NotFound
from gigavision.store.schema import AnnotationRow, LabelClassRow, LabelEventRow, utcnow

if TYPE_CHECKING:
    from gigavision.annotations import Annotations


PALETTE_HUES = (50.0, 280.0)
"""Hues (degrees) of palette colours: yellow through green, cyan and blue to violet. Reds, oranges and pinks
are left out, so no default colour vanishes on red-dominated images (fundus photos, H&E slides)."""


def palette_color(name: str) -> str:
    """The colour of a class that arrives without one (``labels add``, imports, REST): a hash of its name, so
    the same on every machine and different for different classes. Saturated and bright, with a hue from
    ``PALETTE_HUES``: visible on light, dark and red images."""
    return "#" + "".join(f"{v:02x}" for v in palette_rgb(name))


def palette_rgb(name: str) -> tuple[int, int, int]:
    """``palette_color`` as an RGB triple (for drawing with Pillow or NumPy)."""
    import colorsys

    digest = hashlib.sha256(name.encode("utf-8")).digest()
    lo, hi = PALETTE_HUES
    hue = lo + (hi - lo) * int.from_bytes(digest[:2], "big") / 0xFFFF
    saturation = 0.65 + 0.35 * digest[2] / 255
    value = 0.85 + 0.15 * digest[3] / 255
    r, g, b = colorsys.hsv_to_rgb(hue / 360, saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)


KIND_COMPATIBLE: dict[str, frozenset[str]] = {
    "tag": frozenset({"tag"}),
    "box": frozenset({"box"}),
    "point": frozenset({"point"}),
    "polygon": frozenset({"polygon", "mask"}),
    "mask": frozenset({"mask", "polygon"}),
}
"""Annotation kinds a class of each kind takes. Polygons and masks both outline a region (a mask is
vectorised to a polygon and back), so a segmentation class takes either; every other kind only its own."""


def kind_problem(label: str, class_kind: str, kind: str) -> str | None:
    """Why an annotation of ``kind`` cannot carry ``label``, a class of ``class_kind`` (None when it can): the
    kind rule of every write (import, REST, QC, the viewer), through ``LabelSchema.check``."""
    if kind in KIND_COMPATIBLE.get(class_kind, frozenset({class_kind})):
        return None
    takes = " or ".join(sorted(KIND_COMPATIBLE.get(class_kind, {class_kind})))
    return f"label {label!r} is a {class_kind} class: a {kind} cannot be stored under it (it takes a {takes})"


@dataclass(frozen=True, slots=True)
class LabelClass:
    """A class of the label schema; ``as_dict`` is its JSON record (CLI ``--json``, REST, the change log)."""

    name: str
    kind: str
    color: str
    parent: str | None = None
    attributes: dict[str, list[str]] = field(default_factory=dict)  # name -> allowed values (empty: any)

    @classmethod
    def of(cls, row: LabelClassRow) -> LabelClass:
        return cls(row.name, row.kind, row.color, row.parent, {k: list(v) for k, v in dict(row.attributes).items()})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LabelChange:
    """What a rename or merge did: the resulting class and how many annotations it relabelled."""

    label_class: LabelClass
    annotations_changed: int

    def as_dict(self) -> dict[str, Any]:
        return {"class": self.label_class.as_dict(), "annotations_changed": self.annotations_changed}


@dataclass(frozen=True, slots=True)
class LabelEvent:
    """One entry of the schema's change log (``before``/``after``: class records, or None)."""

    action: str
    actor: str
    at: str  # ISO 8601
    before: Any
    after: Any
    annotations_changed: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def class_record(c: LabelClassRow) -> dict[str, Any]:
    return LabelClass.of(c).as_dict()


def _check_name(name: str) -> None:
    if not name or len(name) > 256:
        raise InvalidInput("class name must be 1 to 256 characters")


def _relabel(s: Session, old: str, new: str) -> int:
    """Move every annotation labelled ``old`` (deleted ones too: their history must stay readable) to ``new``."""
    moved = s.execute(
        update(AnnotationRow)
        .where(AnnotationRow.label == old)
        .values(label=new, version=AnnotationRow.version + 1, updated_at=utcnow())
    )
    return int(getattr(moved, "rowcount", 0) or 0)


def _record(s: Session, action: str, actor: str, before: Any, after: Any, changed: int) -> None:
    s.add(
        LabelEventRow(action=action, actor=actor, at=utcnow(), before=before, after=after, annotations_changed=changed)
    )


def _used(s: Session, name: str) -> int:
    """How many live annotations carry label ``name``."""
    n = s.scalar(
        select(func.count()).select_from(AnnotationRow).where(and_(AnnotationRow.label == name, ~AnnotationRow.deleted))
    )
    return int(n or 0)


def fit_kinds(ann: Annotations, classes: dict[str, LabelClass]) -> Annotations:
    """``LabelSchema.fit`` against ``classes`` (name -> class)."""
    import dataclasses

    import shapely

    if not len(ann) or not classes:
        return ann
    class_kind = np.asarray([classes[str(lab)].kind if str(lab) in classes else "" for lab in ann.label], dtype=object)
    to_polygon = (ann.kind == "box") & np.isin(class_kind, ("polygon", "mask"))
    to_box = (ann.kind == "polygon") & (class_kind == "box")
    if not (to_polygon.any() or to_box.any()):
        return ann
    kind, geometry = ann.kind.copy(), ann.geometry.copy()
    kind[to_polygon], kind[to_box] = "polygon", "box"
    rows = np.flatnonzero(to_polygon)
    geometry[rows] = shapely.box(*ann.xyxy[rows].T) if len(rows) else geometry[rows]
    geometry[to_box] = None
    return dataclasses.replace(ann, kind=kind, geometry=geometry)


class LabelSchema:
    """``ws.labels``, the one door to the label schema: list, check against, set, rename, merge and remove
    classes; every change recorded in ``label_events``."""

    def __init__(self, session: sessionmaker[Session]) -> None:
        self.session = session

    def set(
        self,
        name: str,
        kind: str,
        color: str | None = None,
        parent: str | None = None,
        attributes: dict[str, list[str]] | None = None,
        actor: str = "anonymous",
    ) -> LabelClass:
        """Add or replace a class (attributes: name -> allowed values; an empty list allows any value).

        Without a ``color`` the class keeps the one it has, and a new class gets ``palette_color(name)``.

        Changing the kind of a class that annotations use is refused: a box cannot turn into a tag.
        """
        _check_name(name)
        if kind not in KINDS:
            raise InvalidInput(f"class {name!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        attributes = attributes or {}
        if not all(isinstance(k, str) and isinstance(v, list) for k, v in attributes.items()):
            raise InvalidInput(f"class {name!r}: attributes must map names to lists of allowed values")
        with self.session.begin() as s:
            if parent is not None and parent != name and s.get(LabelClassRow, parent) is None:
                raise InvalidInput(f"class {name!r}: parent {parent!r} is not in the schema")
            ancestor, seen = parent, set[str]()
            while ancestor is not None and ancestor not in seen:  # the hierarchy stays a tree
                if ancestor == name:
                    raise InvalidInput(f"class {name!r}: parent {parent!r} would make it its own ancestor")
                seen.add(ancestor)
                up = s.get(LabelClassRow, ancestor)
                ancestor = up.parent if up is not None else None
            old = s.get(LabelClassRow, name)
            before = class_record(old) if old else None
            if color is None:
                color = old.color if old is not None else palette_color(name)
            if old is not None and old.kind != kind and _used(s, name):
                raise Conflict(f"class {name!r} is used by annotations of kind {old.kind!r}; its kind cannot change")
            row = s.merge(LabelClassRow(name=name, kind=kind, color=color, parent=parent, attributes=attributes))
            after = LabelClass.of(row)
            if before != after.as_dict():
                _record(s, "set", actor, before, after.as_dict(), 0)
        return after

    def classes(self) -> list[LabelClass]:
        """All classes, by name."""
        with self.session() as s:
            return [LabelClass.of(c) for c in s.scalars(select(LabelClassRow).order_by(LabelClassRow.name))]

    def by_name(self) -> dict[str, LabelClass]:
        """All classes: name -> class."""
        return {c.name: c for c in self.classes()}

    def check(self, ann: Annotations) -> list[str]:
        """Problems with the labels, kinds and attribute values of ``ann`` against the schema (an empty schema
        takes anything): an unknown label, a kind its class does not take (``kind_problem``), an undeclared
        attribute or value."""
        classes = self.by_name()
        if not classes:
            return []
        problems = []
        unknown = sorted(set(np.unique(ann.label).tolist()) - set(classes)) if len(ann) else []
        for label in unknown:
            first = int(np.nonzero(ann.label == label)[0][0])
            problems.append(f"annotation {first}: label {label!r} is not in the schema")
        pairs = {(str(label), str(kind)) for label, kind in zip(ann.label, ann.kind, strict=True)}
        for label, kind in sorted(pairs):
            cls = classes.get(label)
            problem = kind_problem(label, cls.kind, kind) if cls is not None else None
            if problem:
                first = int(np.nonzero((ann.label == label) & (ann.kind == kind))[0][0])
                problems.append(f"annotation {first}: {problem}")
        for i in np.nonzero([bool(a) for a in ann.attributes])[0]:
            cls = classes.get(str(ann.label[i]))
            if cls is None:
                continue
            for key, value in ann.attributes[i].items():
                allowed = cls.attributes.get(key)
                if allowed is None and key in (*PREDICTION_ATTRIBUTES, *VOLUME_ATTRIBUTES):
                    continue  # a prediction's model id and uncertainty, a volume slice's place: no declaration
                if allowed is None:
                    problems.append(f"annotation {i}: class {cls.name!r} has no attribute {key!r}")
                elif allowed and value not in allowed:
                    problems.append(f"annotation {i}: {key}={value!r} is not one of {allowed}")
        return problems

    def fit(self, ann: Annotations) -> Annotations:
        """``ann`` with each shape in the kind of its class where a producer cannot say it and nothing is lost:
        a box under a polygon or mask class becomes its rectangle polygon (a detector trained on outlined
        objects predicts boxes), a polygon under a box class its bounding box. Other mismatches are left for
        ``check`` to refuse."""
        return fit_kinds(ann, self.by_name())

    def rename(self, old: str, new: str, actor: str) -> LabelChange:
        """Rename class ``old`` to ``new`` (which must not exist) and relabel its annotations."""
        _check_name(new)
        with self.session.begin() as s:
            cls = s.get(LabelClassRow, old)
            if cls is None:
                raise NotFound(f"no class {old!r} in the label schema")
            if s.get(LabelClassRow, new) is not None:
                raise Conflict(f"class {new!r} already exists; merge {old!r} into it instead")
            before = class_record(cls)
            s.add(LabelClassRow(**{**before, "name": new}))
            s.flush()
            s.execute(update(LabelClassRow).where(LabelClassRow.parent == old).values(parent=new))
            s.delete(cls)
            changed = _relabel(s, old, new)
            after = {**before, "name": new}
            _record(s, "rename", actor, before, after, changed)
        return LabelChange(LabelClass(**after), changed)

    def merge(self, sources: Sequence[str], into: str, actor: str) -> LabelChange:
        """Fold classes ``sources`` into ``into``: annotations relabelled, allowed attribute values united.

        ``into`` may be new (it takes the kind, colour and parent of the first source). All sources must
        share one kind, since a box cannot become a tag.
        """
        sources = list(dict.fromkeys(sources))
        _check_name(into)
        if not sources or into in sources:
            raise InvalidInput("merge needs one or more source classes, none of them the target")
        with self.session.begin() as s:
            rows = [s.get(LabelClassRow, name) for name in sources]
            missing = [n for n, r in zip(sources, rows, strict=True) if r is None]
            if missing:
                raise NotFound(f"no class {', '.join(map(repr, missing))} in the label schema")
            found = [r for r in rows if r is not None]
            target = s.get(LabelClassRow, into)
            kinds = {r.kind for r in found} | ({target.kind} if target else set())
            if len(kinds) > 1:
                raise InvalidInput(f"cannot merge classes of different kinds ({', '.join(sorted(kinds))})")
            before = {"sources": [class_record(r) for r in found], "into": class_record(target) if target else None}
            if target is None:
                first = found[0]
                target = LabelClassRow(
                    name=into, kind=first.kind, color=first.color, parent=first.parent, attributes={}
                )
                s.add(target)
            attributes: dict[str, list[str]] = {k: list(v) for k, v in target.attributes.items()}
            for r in found:
                for key, allowed in r.attributes.items():
                    merged = attributes.setdefault(key, [])
                    merged.extend(v for v in allowed if v not in merged)
            target.attributes = attributes
            while target.parent in sources:  # a target under a source moves up to that source's place
                target.parent = next(r.parent for r in found if r.name == target.parent)
            s.flush()
            s.execute(
                update(LabelClassRow)
                .where(LabelClassRow.parent.in_(sources), LabelClassRow.name != into)
                .values(parent=into)
            )
            changed = sum(_relabel(s, name, into) for name in sources)
            for r in found:
                s.delete(r)
            after = LabelClass.of(target)
            _record(s, "merge", actor, before, after.as_dict(), changed)
        return LabelChange(after, changed)

    def remove(self, name: str, actor: str) -> None:
        """Remove an unused class; one still used by live annotations is a ``Conflict`` (merge it instead)."""
        with self.session.begin() as s:
            cls = s.get(LabelClassRow, name)
            if cls is None:
                raise NotFound(f"no class {name!r} in the label schema")
            used = _used(s, name)
            if used:
                raise Conflict(f"class {name!r} is used by {used} annotations; merge it into another class instead")
            s.execute(update(LabelClassRow).where(LabelClassRow.parent == name).values(parent=cls.parent))
            _record(s, "remove", actor, class_record(cls), None, 0)
            s.delete(cls)

    def events(self, limit: int = 100) -> list[LabelEvent]:
        """Schema changes, newest first."""
        with self.session() as s:
            rows = s.scalars(select(LabelEventRow).order_by(LabelEventRow.id.desc()).limit(limit))
            return [
                LabelEvent(e.action, e.actor, e.at.isoformat(), e.before, e.after, e.annotations_changed) for e in rows
            ]
