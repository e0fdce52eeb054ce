"""The label schema: classes (kind, colour, parent, allowed attribute values) and their migrations.

Renaming, merging and removing classes never loses an annotation: each change moves the annotations in
the same transaction as the schema, bumps their version (so an edit based on the old label gets 409
instead of silently restoring it) and is recorded in ``label_events`` with how many annotations moved.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from gigavision.annotations import KINDS
from gigavision.errors import Conflict, InvalidInput, NotFound
from gigavision.store.schema import AnnotationRow, LabelClassRow, LabelEventRow, utcnow


def palette_color(name: str) -> str:
    """The colour of a class that arrives without one (``labels add``, imports): a hash of its name, so the
    same on every machine and different for different classes; channels 64..223 keep it visible on light and
    dark images."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return "#" + "".join(f"{64 + b % 160:02x}" for b in digest[:3])


def class_record(c: LabelClassRow) -> dict[str, Any]:
    return {"name": c.name, "kind": c.kind, "color": c.color, "parent": c.parent, "attributes": dict(c.attributes)}


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


class LabelSchema:
    """``ws.labels``: set, rename, merge and remove classes; every change recorded in ``label_events``."""

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
    ) -> dict[str, Any]:
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
            after = class_record(row)
            if before != after:
                _record(s, "set", actor, before, after, 0)
        return after

    def classes(self) -> list[dict[str, Any]]:
        """All classes, by name."""
        with self.session() as s:
            return [class_record(c) for c in s.scalars(select(LabelClassRow).order_by(LabelClassRow.name))]

    def rename(self, old: str, new: str, actor: str) -> dict[str, Any]:
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
        return {"class": after, "annotations_changed": changed}

    def merge(self, sources: Sequence[str], into: str, actor: str) -> dict[str, Any]:
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
            after = class_record(target)
            _record(s, "merge", actor, before, after, changed)
        return {"class": after, "annotations_changed": changed}

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

    def events(self, limit: int = 100) -> list[dict[str, Any]]:
        """Schema changes, newest first."""
        with self.session() as s:
            rows = s.scalars(select(LabelEventRow).order_by(LabelEventRow.id.desc()).limit(limit))
            return [
                {
                    "action": e.action,
                    "actor": e.actor,
                    "at": e.at.isoformat(),
                    "before": e.before,
                    "after": e.after,
                    "annotations_changed": e.annotations_changed,
                }
                for e in rows
            ]
