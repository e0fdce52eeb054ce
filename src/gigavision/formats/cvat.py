"""CVAT for images 1.1 XML (``annotations.xml``, images in ``images/``), as CVAT exports and imports it.

Export mapping (one ``annotations.xml``, written image by image; images in ``images/[<split>/]``):
    meta         ``<meta><task>`` with ``<labels>``: per class name, colour, ``<type>`` (box ``rectangle``,
                 polygon ``polygon``, mask ``mask``, point ``points``, tag ``tag``) and its attributes:
                 allowed values as ``select`` (``<values>`` one a line), any value as ``text``; no timestamps
    image        ``<image id name [subset] width height>``: ids 0..N-1 in source order, ``subset`` = split
    box          ``<box xtl ytl xbr ybr>``
    polygon      ``<polygon points="x,y;x,y;...">`` (ring not closed); a polygon with holes or several
                 parts cannot be one CVAT polygon: it is rasterized and written as a ``<mask>`` (``converted``)
    mask         ``<mask rle left top width height>``: CVAT's RLE, alternating runs of 0 and 1 (zeros first)
                 over the ``width × height`` window at ``left, top``, row by row
    point        ``<points points="x,y">``, one element per point
    tag          ``<tag>``
    attributes   ``occluded`` → ``occluded="1"`` (else ``"0"``), ``z_order`` → ``z_order`` (else 0), ``source``
                 → ``source`` (else ``manual``, or ``auto`` for a scored annotation), ``group_id`` →
                 ``group_id``; the others as ``<attribute name="...">value</attribute>``, sorted by name
    score        ``<attribute name="score">`` (CVAT XML has no confidence field)
    numbers      coordinates rounded to 6 decimals, shortest form (CVAT writes 2; its reader takes any)

Import reads the same, with the labels under ``<meta><task>``, ``<meta><project>`` or ``<meta><job>``.
Kinds: box → box; a box with a ``rotation`` (other than 0 or 180°) → polygon of its turned corners (refused
under a box class: a box cannot turn); polygon → polygon; a closed polyline (first point = last) → polygon,
an open one is rejected (no line kind); points → one point annotation per point; mask → mask; tag → tag;
ellipses, cuboids, skeletons and video ``<track>``s are counted in the notes. A label's ``<type>`` sets its
class kind; ``any`` and ``polyline`` labels take the kind of their first imported shape. The fields
``occluded`` 1, ``z_order`` and ``group_id`` other than 0 and a ``source`` other than the export's default
become attributes of those names; ``<attribute>`` children become text attributes (a numeric ``score``
becomes the score). An image's ``subset`` (other than ``default``) is its split hint (image metadata
``split``) and adds ``images/<subset>/`` to the image lookup.
The XML is parsed with defusedxml (a DTD or entity declaration refuses the file) twice, streaming: a
well-formedness pass before anything is stored, then one ``<image>`` at a time, each dropped once imported.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.formats.exporting import ExportContext
from gigavision.formats.importing import ImportSession, Row, Target
from gigavision.formats.rle import decode_window, rasterize_polygon
from gigavision.formats.source import AnnotatedImages, ImageEntry
from gigavision.formats.text import dumps, num

DEFAULT_IMAGES = "none"
MAX_XML_BYTES = 8 * 1024**3
MAX_PREFETCH = 200_000  # image names looked up in the workspace in bulk before the import (an optimisation)

TYPE_OF_KIND = {"box": "rectangle", "polygon": "polygon", "mask": "mask", "point": "points", "tag": "tag"}
KIND_OF_TYPE = {
    "rectangle": "box",
    "bbox": "box",
    "polygon": "polygon",
    "mask": "mask",
    "points": "point",
    "tag": "tag",
}
NOT_REPRESENTABLE = {"ellipse": "an ellipse", "cuboid": "a cuboid", "skeleton": "a skeleton"}
BUILTIN = ("occluded", "z_order", "source", "group_id", "score")  # shape fields, not label attributes
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTR_ESCAPES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


# -- export ------------------------------------------------------------------------------------------------
class _Writer:
    """``annotations.xml`` written as CVAT's XMLGenerator lays it out (two-space indent, open/close pairs)."""

    def __init__(self, ctx: ExportContext) -> None:
        self.ctx = ctx

    def text(self, value: str) -> str:
        """``value`` without the characters XML 1.0 cannot hold (counted in ``converted``)."""
        if _NOT_XML.search(value):
            self.ctx.result.converted["text with characters XML 1.0 cannot hold written without them"] += 1
            return _NOT_XML.sub("", value)
        return value

    def attr(self, value: str) -> str:
        return '"' + escape(self.text(value), _ATTR_ESCAPES) + '"'

    def body(self, value: str) -> str:
        return escape(self.text(value), {"\r": "&#13;"})

    def open(self, indent: int, tag: str, attrs: list[tuple[str, str]]) -> str:
        return "  " * indent + f"<{tag}" + "".join(f" {k}={self.attr(v)}" for k, v in attrs) + ">"


def export(source: AnnotatedImages, ctx: ExportContext) -> None:
    classes = source.classes()
    known = {c["name"] for c in classes}
    total = len(source)
    with ctx.open_text("annotations.xml").open("w", encoding="utf-8", newline="\n") as out:
        w = _Writer(ctx)
        out.write('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n  <meta>\n')
        out.write(f"    <task>\n      <name>gigavision export</name>\n      <size>{total}</size>\n")
        out.write("      <mode>annotation</mode>\n      <overlap>0</overlap>\n      <labels>\n")
        for c in classes:
            out.write("\n".join(_label(w, c)) + "\n")
        out.write("      </labels>\n    </task>\n  </meta>\n")
        for done, entry in enumerate(source.images()):
            file_name = ctx.file_name(entry)
            ctx.place_image(entry, f"images/{entry.split}/{file_name}" if entry.split else f"images/{file_name}")
            out.write("\n".join(_image(w, done, entry, file_name, source.annotations(entry.id), known)) + "\n")
            ctx.result.images += 1
            ctx.progress(done + 1, total, file_name)
        out.write("</annotations>\n")


def _label(w: _Writer, c: dict[str, Any]) -> list[str]:
    lines = [
        "        <label>",
        f"          <name>{w.body(c['name'])}</name>",
        f"          <color>{w.body(c.get('color') or '')}</color>",
        f"          <type>{TYPE_OF_KIND.get(c['kind'], 'any')}</type>",
        "          <attributes>",
    ]
    for name, allowed in sorted((c.get("attributes") or {}).items()):
        if name in BUILTIN:
            continue
        values = [str(v) for v in allowed if "\n" not in str(v)]
        if len(values) < len(allowed):  # CVAT lists the values one a line
            w.ctx.result.converted["attribute values with a line break left out of their label's list"] += 1
        lines += [
            "            <attribute>",
            f"              <name>{w.body(name)}</name>",
            "              <mutable>False</mutable>",
            f"              <input_type>{'select' if values else 'text'}</input_type>",
            f"              <default_value>{w.body(values[0] if values else '')}</default_value>",
            f"              <values>{w.body(chr(10).join(values))}</values>",
            "            </attribute>",
        ]
    return [*lines, "          </attributes>", "        </label>"]


def _image(w: _Writer, index: int, entry: ImageEntry, file_name: str, ann: Annotations, known: set[str]) -> list[str]:
    attrs = [("id", str(index)), ("name", file_name)]
    if entry.split:
        attrs.append(("subset", entry.split))
    lines = [w.open(1, "image", [*attrs, ("width", str(entry.width)), ("height", str(entry.height))])]
    for i in range(len(ann)):
        label = str(ann.label[i])
        if label not in known:
            w.ctx.result.skip(f"label {label!r} not in the exported classes")
            continue
        shape = _shape(w, ann, i, entry)
        if shape is None:
            continue
        tag, geometry = shape
        fields, children = _fields(w, ann, i, tag)
        head = [("label", label), ("source", fields.pop("source"))]
        if tag != "tag":
            head.append(("occluded", fields.pop("occluded")))
        head += geometry
        if tag != "tag":
            head.append(("z_order", fields.pop("z_order")))
        if "group_id" in fields:
            head.append(("group_id", fields.pop("group_id")))
        lines.append(w.open(2, tag, head))
        lines += [f"      <attribute name={w.attr(k)}>{w.body(v)}</attribute>" for k, v in children]
        lines.append(f"    </{tag}>")
        w.ctx.result.annotations += 1
    lines.append("  </image>")
    return lines


def _shape(w: _Writer, ann: Annotations, i: int, entry: ImageEntry) -> tuple[str, list[tuple[str, str]]] | None:
    """The CVAT element and its geometry attributes for annotation ``i`` (None: not written, counted)."""
    kind = str(ann.kind[i])
    if kind == "tag":
        return "tag", []
    if kind == "box":
        x0, y0, x1, y1 = (num(v) for v in ann.xyxy[i])
        return "box", [("xtl", x0), ("ytl", y0), ("xbr", x1), ("ybr", y1)]
    if kind == "point":
        return "points", [("points", f"{num(ann.xyxy[i][0])},{num(ann.xyxy[i][1])}")]
    if kind == "polygon":
        geom = ann.geometry[i]
        if geom.geom_type == "Polygon" and not geom.interiors:
            coords = np.asarray(geom.exterior.coords)[:-1, :2].tolist()
            return "polygon", [("points", ";".join(f"{num(x)},{num(y)}" for x, y in coords))]
        window, ox, oy = rasterize_polygon(geom)
        w.ctx.result.converted["polygon with holes or several parts written as a CVAT mask"] += 1
        return _mask(w, window, ox, oy, entry)
    if kind == "mask":
        left, top = (math.floor(float(v)) for v in ann.xyxy[i][:2])
        return _mask(w, decode_window(ann.mask[i]), left, top, entry)
    w.ctx.result.skip(f"{kind} annotations")
    return None


def _mask(
    w: _Writer, window: np.ndarray, ox: int, oy: int, entry: ImageEntry
) -> tuple[str, list[tuple[str, str]]] | None:
    ys, xs = np.nonzero(window)
    if len(ys) == 0:
        w.ctx.result.skip("empty masks")
        return None
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    left, top = ox + x0, oy + y0
    if left < 0 or top < 0 or left + x1 - x0 > entry.width or top + y1 - y0 > entry.height:
        w.ctx.result.skip("masks outside their image")
        return None
    rle = ", ".join(str(v) for v in encode_rle(window[y0:y1, x0:x1]))
    geometry = [("rle", rle), ("left", str(left)), ("top", str(top)), ("width", str(x1 - x0))]
    return "mask", [*geometry, ("height", str(y1 - y0))]


def _fields(w: _Writer, ann: Annotations, i: int, tag: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """CVAT's shape fields (occluded, z_order, source, group_id) from the annotation's attributes of those
    names, and the other attributes as sorted ``(name, text)`` children (the score among them)."""
    attributes = dict(ann.attributes[i])
    score = float(ann.score[i])
    if math.isnan(score) and _number(attributes.get("score")) is not None:
        score = float(attributes.pop("score"))
    elif not math.isnan(score) and "score" in attributes and _number(attributes.pop("score")) != score:
        w.ctx.result.converted["attribute score written as the annotation's score instead"] += 1
    fields = {"occluded": "0", "z_order": "0"}
    if tag != "tag" and attributes.get("occluded") in (0, 1, True, False, "0", "1", "true", "false"):
        fields["occluded"] = "1" if attributes.pop("occluded") in (1, True, "1", "true") else "0"
    if tag != "tag" and _integer(attributes.get("z_order")) is not None:
        fields["z_order"] = str(_integer(attributes.pop("z_order")))
    source = attributes.get("source")
    if isinstance(source, str) and source:
        fields["source"] = attributes.pop("source")
    else:  # import stores a source only when it differs from this default, so a round trip keeps it
        fields["source"] = "manual" if math.isnan(score) else "auto"
    group = _integer(attributes.get("group_id"))
    if group is not None:
        attributes.pop("group_id")
        if group:
            fields["group_id"] = str(group)
    if not math.isnan(score):
        attributes["score"] = num(score, 8)
    return fields, [(k, _attribute_text(attributes[k])) for k in sorted(attributes)]


def _attribute_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return num(value, 8)
    return dumps(value)


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value):
        return int(value)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def encode_rle(window: np.ndarray) -> list[int]:
    """CVAT's mask RLE of a boolean window: run lengths row by row, alternating 0 and 1, zeros first."""
    flat = np.asarray(window, dtype=bool).ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return [0, *runs] if flat.size and flat[0] else runs


def decode_rle(counts: list[int], width: int, height: int) -> np.ndarray:
    """The ``height × width`` boolean window of CVAT run lengths (``InvalidInput`` when they do not cover it)."""
    if any(c < 0 for c in counts):
        raise InvalidInput("mask rle has a negative run")
    if sum(counts) != width * height:
        raise InvalidInput(f"mask rle covers {sum(counts)} pixels, its {width}x{height} window has {width * height}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(height, width)


# -- import ------------------------------------------------------------------------------------------------
def parse(path: Path, session: ImportSession) -> None:
    if path.is_dir():
        top = path / "annotations.xml"
        files = [top] if top.is_file() else sorted(p for p in path.rglob("*.xml") if p.is_file())
        root = path
    else:
        files, root = [path], path.parent
    if not files:
        raise InvalidInput(f"{path}: no CVAT annotations.xml (or other .xml file) found")
    scanned = []
    for file in files:  # every file read through first: an unreadable one is known before anything is stored
        shown = file.relative_to(root).as_posix()
        try:
            scanned.append((file, shown, _scan(file, shown)))
        except InvalidInput as exc:
            if len(files) == 1:
                raise
            session.reject(shown, "file", str(exc))
    for file, shown, (total, names) in scanned:
        session.report.files += 1
        _import_file(file, shown, total, names, session)


def _events(file: Path, shown: str) -> Iterator[tuple[str, Any]]:
    """defusedxml's streaming parse of ``file`` (start and end events), errors as ``InvalidInput``."""
    import defusedxml.ElementTree as SafeET
    from defusedxml import DefusedXmlException

    try:
        if file.stat().st_size > MAX_XML_BYTES:
            raise InvalidInput(f"{shown}: larger than {MAX_XML_BYTES} bytes")
        events = SafeET.iterparse(
            str(file), events=("start", "end"), forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
        yield from events
    except DefusedXmlException as exc:
        raise InvalidInput(
            f"{shown}: XML with a DTD or entity declarations is refused (entities are never resolved): {exc!r}"
        ) from exc
    except (OSError, SyntaxError) as exc:  # ElementTree.ParseError is a SyntaxError
        raise InvalidInput(f"{shown}: not well-formed XML ({exc})") from exc


def _top_level(file: Path, shown: str) -> Iterator[Any]:
    """Each child of ``<annotations>`` once it is complete; the root forgets it afterwards (bounded memory)."""
    depth = 0
    root: Any = None
    for event, elem in _events(file, shown):
        if event == "start":
            if root is None:
                root = elem
                if elem.tag != "annotations":
                    raise InvalidInput(f"{shown}: root element is <{elem.tag}>, not CVAT's <annotations>")
            depth += 1
            continue
        depth -= 1
        if depth == 1:
            yield elem
            root.clear()


def _scan(file: Path, shown: str) -> tuple[int, list[str]]:
    """Read the whole file once without storing anything (well-formed, no DTD): how many images it has
    and their names (the first ``MAX_PREFETCH``)."""
    count, names = 0, list[str]()
    for elem in _top_level(file, shown):
        if elem.tag == "image":
            count += 1
            if len(names) < MAX_PREFETCH:
                names.append(elem.get("name") or "")
    return count, names


class _Labels:
    """The label schema a CVAT file declares, and the class kind each label has or will have.

    Labels whose ``<type>`` names a kind are declared at once; ``any`` and ``polyline`` labels (and labels
    not in ``<meta>``) are declared with the kind of their first imported shape, keeping their colour and
    attributes. Skeleton labels and their parts are never declared.
    """

    def __init__(self, session: ImportSession) -> None:
        self.session = session
        self.kinds = {name: c.kind for name, c in session.ws.labels.by_name().items()}
        self.pending: dict[str, tuple[str | None, dict[str, list[str]]]] = {}

    def read_meta(self, meta: Any) -> None:
        for holder in meta.iter("labels"):
            for label in holder.findall("label"):
                self._declare(label)

    def _declare(self, label: Any) -> None:
        name = _child_text(label, "name")
        kind_type = (_child_text(label, "type") or "any").lower()
        if not name or name in self.pending or kind_type in NOT_REPRESENTABLE or _child_text(label, "parent"):
            return
        color = _child_text(label, "color") or None
        attributes: dict[str, list[str]] = {}
        holder = label.find("attributes")
        for attr in holder.findall("attribute") if holder is not None else ():
            attr_name = _child_text(attr, "name")
            if attr_name:
                attributes[attr_name] = _allowed(attr)
        kind = KIND_OF_TYPE.get(kind_type)
        if kind is None:
            self.pending[name] = (color, attributes)
        else:
            self.session.declare_class(name, kind, color, attributes=attributes)
            self.kinds.setdefault(name, kind)

    def claim(self, label: str, kind: str) -> str:
        """The kind of ``label``'s class; a label seen for the first time is declared with ``kind``."""
        if label not in self.kinds:
            color, attributes = self.pending.pop(label, (None, {}))
            self.session.declare_class(label, kind, color, attributes=attributes)
            self.kinds[label] = kind
        return self.kinds[label]


def _child_text(node: Any, tag: str) -> str:
    child = node.find(tag)
    return "" if child is None or child.text is None else child.text.strip()


def _allowed(attr: Any) -> list[str]:
    """Allowed values of a CVAT label attribute: select / radio list them one a line; a checkbox is
    ``false`` / ``true``; number (``min\\nmax\\nstep``) and text take any value."""
    input_type = _child_text(attr, "input_type").lower()
    if input_type == "checkbox":
        return ["false", "true"]
    if input_type in ("select", "radio"):
        node = attr.find("values")
        text = "" if node is None or node.text is None else node.text
        return [v.strip("\r") for v in text.split("\n") if v.strip()]
    return []


def _import_file(file: Path, shown: str, total: int, names: list[str], session: ImportSession) -> None:
    session.prefetch(n for n in names if n)
    labels = _Labels(session)
    found = [d for d in (file.parent, file.parent / "images") if d.is_dir()]
    counts: Counter[str] = Counter()
    done = 0
    for elem in _top_level(file, shown):
        if elem.tag == "meta":
            labels.read_meta(elem)
        elif elem.tag == "image":
            done += 1
            subset = elem.get("subset") or ""
            plain = re.fullmatch(r"[^/\\\x00]+", subset) is not None and subset not in (".", "..")
            folder = file.parent / "images" / subset  # CVAT project exports: images/<subset>/
            search = [*found, folder] if plain and folder.is_dir() else found
            target = _import_image(elem, shown, search, labels, counts, session)
            if subset != "default":  # CVAT's name for "no subset"
                session.hint_split(target, subset)
            session.progress(done, total, elem.get("name") or "")
        elif elem.tag == "track":
            counts["track"] += 1
    for what, n in sorted(counts.items()):
        session.report.note(f"{shown}: {n} {_NOTES[what]}")
    unused = sorted(labels.pending)
    if unused:
        shown_labels = ", ".join(unused[:10]) + (", …" if len(unused) > 10 else "")
        session.report.note(
            f"{shown}: {len(unused)} label(s) of type any, polyline or another non-kind type had no imported "
            f"shape, so their class kind is unknown; not added to the schema: {shown_labels}"
        )


_NOTES = {
    "track": "<track>(s) (CVAT for video) not imported: export the task as CVAT for images",
    "ellipse": "<ellipse>(s) not imported: gigavision has no ellipse kind",
    "cuboid": "<cuboid>(s) not imported: gigavision has no cuboid kind",
    "skeleton": "<skeleton>(s) not imported: gigavision has no skeleton kind",
    "rotated": "rotated <box>(es) imported as polygons (their four rotated corners)",
    "closed": "closed <polyline>(s) (first point = last) imported as polygons",
    "unknown": "unknown element(s) inside <image> not imported",
}


def _import_image(
    elem: Any, shown: str, search: list[Path], labels: _Labels, counts: Counter[str], session: ImportSession
) -> Target | None:
    """Resolve one ``<image>`` and store its shapes (one transaction); the workspace image, or None."""
    name = elem.get("name") or ""
    if not name:
        session.reject(shown, f"image id={elem.get('id')!r}", "an <image> needs a name")
        return None
    size = None
    if elem.get("width") is not None or elem.get("height") is not None:
        try:
            size = (int(elem.get("width") or ""), int(elem.get("height") or ""))
        except ValueError:
            session.reject(shown, f"image {name}", "width and height must be whole numbers")
            return None
    shapes = list(elem)
    target = session.resolve(name, shown, search=search, size=size, annotations=len(shapes))
    if target is None:
        return None
    rows: list[Row] = []
    seen: Counter[str] = Counter()
    for shape in shapes:
        tag = str(shape.tag)
        item = f"image {name} <{tag}> #{seen[tag]}"
        seen[tag] += 1
        if tag in NOT_REPRESENTABLE:
            counts[tag] += 1
            continue
        try:
            rows += _rows(shape, tag, item, target, labels, counts)
        except InvalidInput as exc:
            session.reject(shown, item, str(exc))
    session.add(target, shown, rows)
    return target


def _rows(shape: Any, tag: str, item: str, target: Target, labels: _Labels, counts: Counter[str]) -> list[Row]:
    import shapely

    label = shape.get("label") or ""
    if not label:
        raise InvalidInput(f"<{tag}> without a label")
    attributes, score = _attributes(shape, tag)
    if tag == "tag":
        labels.claim(label, "tag")
        return [Row(item, label, "tag", score=score, attributes=attributes)]
    if tag == "box":
        x0, y0, x1, y1 = (_coordinate(shape, k) for k in ("xtl", "ytl", "xbr", "ybr"))
        rotation = _coordinate(shape, "rotation", 0.0) % 360
        if rotation % 180 == 0:  # turned half a turn (or not at all): the same axis-aligned box
            labels.claim(label, "box")
            return [Row(item, label, "box", box=(x0, y0, x1, y1), score=score, attributes=attributes)]
        if labels.claim(label, "polygon") == "box":
            raise InvalidInput(
                f"rotated box ({rotation:g}°): label {label!r} is a box class, which holds axis-aligned boxes "
                "only; a rotated box is imported as a polygon, so give rotated boxes their own label"
            )
        counts["rotated"] += 1
        geometry = shapely.Polygon(_rotated(x0, y0, x1, y1, rotation))
        return [Row(item, label, "polygon", geometry=geometry, score=score, attributes=attributes)]
    if tag in ("polygon", "polyline"):
        points = _points(shape)
        if tag == "polyline":
            if len(points) < 4 or points[0] != points[-1]:
                raise InvalidInput(
                    f"open polyline ({len(points)} points): gigavision has no line kind (a closed polyline, "
                    "first point = last, is imported as a polygon)"
                )
            counts["closed"] += 1
            points = points[:-1]
        if len(points) < 3:
            raise InvalidInput(f"a polygon needs at least 3 points, got {len(points)}")
        _check_kind(labels, label, "polygon")
        return [Row(item, label, "polygon", geometry=shapely.Polygon(points), score=score, attributes=attributes)]
    if tag == "points":
        points = _points(shape)
        labels.claim(label, "point")
        return [
            Row(
                f"{item} point {j}" if len(points) > 1 else item,
                label,
                "point",
                geometry=shapely.Point(p),
                score=score,
                attributes=dict(attributes),
            )
            for j, p in enumerate(points)
        ]
    if tag == "mask":
        left, top, width, height = (_whole(shape, k) for k in ("left", "top", "width", "height"))
        if (
            width <= 0
            or height <= 0
            or left < 0
            or top < 0
            or left + width > target.width
            or top + height > target.height
        ):
            raise InvalidInput(
                f"mask window {width}x{height} at ({left}, {top}) is not inside the "
                f"{target.width}x{target.height} image"
            )
        try:
            counts_list = [int(v) for v in (shape.get("rle") or "").split(",")]
        except ValueError as exc:
            raise InvalidInput("mask rle must be whole numbers separated by commas") from exc
        window = decode_rle(counts_list, width, height)
        _check_kind(labels, label, "mask")
        return [Row(item, label, "mask", window=window, offset=(left, top), score=score, attributes=attributes)]
    counts["unknown"] += 1
    return []


def _check_kind(labels: _Labels, label: str, kind: str) -> None:
    """A polygon or mask under a box class would be stored as its bounding box: refused instead."""
    class_kind = labels.claim(label, kind)
    if class_kind == "box":
        raise InvalidInput(f"label {label!r} is a box class: a {kind} cannot be stored under it (it takes a box)")


def _attributes(shape: Any, tag: str) -> tuple[dict[str, Any], float]:
    """CVAT's shape fields that are not defaults (occluded 1, z_order, source, group_id) and the
    ``<attribute>`` children as text; an ``<attribute name="score">`` number is the score."""
    attributes: dict[str, Any] = {}
    occluded = shape.get("occluded", "0")
    if occluded not in ("0", "1", "true", "false"):
        raise InvalidInput(f"occluded must be 0 or 1, got {occluded!r:.40}")
    if occluded in ("1", "true") and tag != "tag":
        attributes["occluded"] = 1
    for key in ("z_order", "group_id"):
        text = shape.get(key, "0")
        value = _integer(text.strip())
        if value is None:
            raise InvalidInput(f"{key} must be a whole number, got {text!r:.40}")
        if value:
            attributes[key] = value
    score = math.nan
    for child in shape.findall("attribute"):
        key = child.get("name")
        if not key:
            raise InvalidInput("an <attribute> without a name")
        text = child.text or ""
        number = _number(text) if key == "score" else None
        if number is not None:
            score = number
        else:
            attributes[key] = text
    source = shape.get("source") or "manual"
    if source != ("manual" if math.isnan(score) else "auto"):  # the export's default for this score
        attributes["source"] = source
    return attributes, score


def _coordinate(shape: Any, key: str, default: float | None = None) -> float:
    text = shape.get(key)
    if text is None:
        if default is not None:
            return default
        raise InvalidInput(f"<{shape.tag}> without {key}")
    try:
        value = float(text)
    except ValueError as exc:
        raise InvalidInput(f"{key} must be a number, got {text!r:.40}") from exc
    if not math.isfinite(value):
        raise InvalidInput(f"{key} must be a finite number, got {text!r:.40}")
    return value


def _whole(shape: Any, key: str) -> int:
    value = _coordinate(shape, key)
    if not value.is_integer():
        raise InvalidInput(f"{key} must be a whole number of pixels, got {value:g}")
    return int(value)


def _points(shape: Any) -> list[tuple[float, float]]:
    text = shape.get("points")
    if not text:
        raise InvalidInput(f"<{shape.tag}> without points")
    out = []
    for pair in text.split(";"):
        xy = pair.split(",")
        if len(xy) != 2:
            raise InvalidInput(f"points must be x,y pairs separated by ';', got {pair!r:.40}")
        try:
            x, y = float(xy[0]), float(xy[1])
        except ValueError as exc:
            raise InvalidInput(f"points must be numbers, got {pair!r:.40}") from exc
        if not (math.isfinite(x) and math.isfinite(y)):
            raise InvalidInput(f"points must be finite numbers, got {pair!r:.40}")
        out.append((x, y))
    return out


def _rotated(x0: float, y0: float, x1: float, y1: float, degrees: float) -> list[tuple[float, float]]:
    """The corners of box ``x0, y0, x1, y1`` turned by ``degrees`` about its centre, as CVAT turns it
    (clockwise on screen: image y points down)."""
    a = math.radians(degrees)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    cos, sin = math.cos(a), math.sin(a)
    corners = ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
    return [(cx + (x - cx) * cos - (y - cy) * sin, cy + (x - cx) * sin + (y - cy) * cos) for x, y in corners]
