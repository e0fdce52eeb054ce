"""What changed between two dataset versions: images added, removed or moved between splits; annotations
added, removed or changed (by annotation id); label classes; and the spec that made each version."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from gigavision.datasets import freeze
from gigavision.datasets.versions import DatasetVersion, open_version
from gigavision.errors import InvalidInput
from gigavision.store.schema import DatasetImageRow

if TYPE_CHECKING:
    from gigavision.workspace import Workspace

DEFAULT_LIMIT = 1000
MAX_LIMIT = 100_000


def _images(ws: Workspace, version: DatasetVersion) -> dict[str, DatasetImageRow]:
    d = DatasetImageRow
    with ws.session() as s:
        rows = s.scalars(select(d).where(d.version_id == version.id).order_by(d.position)).all()
    return {r.image_id: r for r in rows}


def _listing(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    return {"count": len(items), "items": items[:limit], "truncated": len(items) > limit}


def diff_versions(
    ws: Workspace, a: str | DatasetVersion, b: str | DatasetVersion, *, limit: int = DEFAULT_LIMIT
) -> dict[str, Any]:
    """Differences from ``a`` to ``b`` (refs like ``NAME@N`` or opened versions).

    Counts are exact; the item lists (images, per-image annotation changes) hold at most ``limit`` entries
    each, in (name, id) order, with ``truncated`` set when there were more.
    """
    if not 0 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be 0..{MAX_LIMIT}, got {limit}")
    va = a if isinstance(a, DatasetVersion) else open_version(ws, a)
    vb = b if isinstance(b, DatasetVersion) else open_version(ws, b)
    rows_a, rows_b = _images(ws, va), _images(ws, vb)

    def brief(r: DatasetImageRow) -> dict[str, Any]:
        return {"id": r.image_id, "name": r.name, "split": r.split, "n_annotations": r.n_annotations}

    def order(r: DatasetImageRow) -> tuple[str, str]:
        return (r.name, r.image_id)

    added = [brief(r) for r in sorted((r for i, r in rows_b.items() if i not in rows_a), key=order)]
    removed = [brief(r) for r in sorted((r for i, r in rows_a.items() if i not in rows_b), key=order)]
    both = sorted((r for i, r in rows_b.items() if i in rows_a), key=order)
    moved = [
        {"id": r.image_id, "name": r.name, "from": rows_a[r.image_id].split, "to": r.split}
        for r in both
        if rows_a[r.image_id].split != r.split
    ]
    changed_images: list[dict[str, Any]] = []
    totals = {
        "added": sum(r["n_annotations"] for r in added),
        "removed": sum(r["n_annotations"] for r in removed),
        "changed": 0,
        "unchanged": 0,
    }
    for r in both:
        old = rows_a[r.image_id]
        if old.annotations_sha == r.annotations_sha:
            totals["unchanged"] += r.n_annotations
            continue
        before = {rec["id"]: rec for rec in freeze.read_frozen(ws.blobs, old.annotations_key, old.annotations_sha)}
        after = {rec["id"]: rec for rec in freeze.read_frozen(ws.blobs, r.annotations_key, r.annotations_sha)}
        plus = sorted(set(after) - set(before))
        minus = sorted(set(before) - set(after))
        common = set(after) & set(before)
        edited = sorted(i for i in common if freeze.canonical_json(after[i]) != freeze.canonical_json(before[i]))
        totals["added"] += len(plus)
        totals["removed"] += len(minus)
        totals["changed"] += len(edited)
        totals["unchanged"] += len(common) - len(edited)
        changed_images.append({"id": r.image_id, "name": r.name, "added": plus, "removed": minus, "changed": edited})

    schema_a = {c["name"]: c for c in va.label_schema}
    schema_b = {c["name"]: c for c in vb.label_schema}
    spec_keys = sorted(set(va.spec) | set(vb.spec))
    return {
        "a": va.ref,
        "b": vb.ref,
        "same_content": va.content_hash == vb.content_hash,
        "content_hash": {"a": va.content_hash, "b": vb.content_hash},
        "images": {
            "added": _listing(added, limit),
            "removed": _listing(removed, limit),
            "moved": _listing(moved, limit),
            "unchanged": sum(1 for r in both if rows_a[r.image_id].split == r.split),
        },
        "annotations": {**totals, "images": _listing(changed_images, limit)},
        "classes": {
            "added": sorted(set(schema_b) - set(schema_a)),
            "removed": sorted(set(schema_a) - set(schema_b)),
            "changed": [
                {"name": n, "a": schema_a[n], "b": schema_b[n]}
                for n in sorted(set(schema_a) & set(schema_b))
                if schema_a[n] != schema_b[n]
            ],
        },
        "spec": {k: {"a": va.spec.get(k), "b": vb.spec.get(k)} for k in spec_keys if va.spec.get(k) != vb.spec.get(k)},
        "splits": {
            "a": {s: p["images"] for s, p in va.counts["splits"].items()},
            "b": {s: p["images"] for s, p in vb.counts["splits"].items()},
        },
    }
