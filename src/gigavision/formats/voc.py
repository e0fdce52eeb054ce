"""Pascal VOC detection XML: ``Annotations/<stem>.xml`` per image, ``ImageSets/Main/<split>.txt``.

Export mapping:
    size         width, height, depth (bands; 3 when unknown)
    object       name = label; pose / truncated / difficult (and occluded when set) from the annotation's
                 attributes of those names (defaults Unspecified / 0 / 0); other attributes in CVAT's
                 ``<attributes><attribute><name/><value/></attribute></attributes>``; ``<score>`` when set
    bndbox       VOC's 1-based pixel convention: xmin = x0 + 1, ymin = y0 + 1, xmax = x1, ymax = y1
                 (as detectron2 and torchvision read it back); integers without decimals
    box          as is; polygon and mask: their bounding box (counted in ``converted``)
    part         a box with the attribute ``part_of`` = k (what importing a ``<part>`` gives) is written as a
                 ``<part>`` (name, bndbox) inside the k-th object of its image
    point, tag   not written (counted in ``skipped``)
    ImageSets    ``ImageSets/Main/<split>.txt`` (``default.txt`` outside a dataset version): one stem a line

Import parses with defusedxml: a DTD or entity declaration rejects the file, entities are never resolved.
An xmin/ymin of 0 (0-based tools) is read as 0, not -1 (noted in the report). The person layout's ``<part>``
boxes (head, hand, foot) become boxes labelled with the part's name and ``part_of`` = the object's index in
the file; the parts of a rejected object are rejected with it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from gigavision.errors import InvalidInput
from gigavision.formats.exporting import ExportContext
from gigavision.formats.importing import ImportSession, Row
from gigavision.formats.source import AnnotatedImages
from gigavision.formats.text import num

DEFAULT_IMAGES = "none"
MAX_XML_BYTES = 64 * 1024**2
FLAGS = ("truncated", "difficult", "occluded")
PART_OF = "part_of"  # attribute of a <part> box: the index of its <object> in the file


# -- export ------------------------------------------------------------------------------------------------
def export(source: AnnotatedImages, ctx: ExportContext) -> None:
    labels = {c["name"] for c in source.classes()}
    sets: dict[str, list[str]] = {}
    total = len(source)
    for done, entry in enumerate(source.images(), start=1):
        file_name = ctx.file_name(entry)
        stem = Path(file_name).stem
        ctx.place_image(entry, f"JPEGImages/{file_name}")
        ann = source.annotations(entry.id)
        lines = [
            "<annotation>",
            "\t<folder>JPEGImages</folder>",
            f"\t<filename>{escape(file_name)}</filename>",
            "\t<size>",
            f"\t\t<width>{entry.width}</width>",
            f"\t\t<height>{entry.height}</height>",
            f"\t\t<depth>{entry.bands or 3}</depth>",
            "\t</size>",
            "\t<segmented>0</segmented>",
        ]
        objects: list[list[str]] = []
        for i in range(len(ann)):
            kind, label = str(ann.kind[i]), str(ann.label[i])
            if kind in ("point", "tag"):
                ctx.result.skip(f"{kind} annotations (VOC holds boxes)")
                continue
            if label not in labels:
                ctx.result.skip(f"label {label!r} not in the exported classes")
                continue
            if kind != "box":
                ctx.result.converted[f"{kind} written as its bounding box"] += 1
            attributes = dict(ann.attributes[i])
            owner = attributes.get(PART_OF)
            if kind == "box" and isinstance(owner, int) and 0 <= owner < len(objects):
                objects[owner][-1:-1] = _part(label, ann.xyxy[i])  # inside its object, before </object>
            else:
                objects.append(_object(label, ann.xyxy[i], attributes, float(ann.score[i])))
            ctx.result.annotations += 1
        lines += [line for obj in objects for line in obj]
        lines.append("</annotation>")
        ctx.open_text(f"Annotations/{stem}.xml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        sets.setdefault(entry.split or "default", []).append(stem)
        ctx.result.images += 1
        ctx.progress(done, total, file_name)
    for split, stems in sorted(sets.items()):
        ctx.open_text(f"ImageSets/Main/{split}.txt").write_text("".join(f"{s}\n" for s in stems), encoding="utf-8")


def _bndbox(xyxy: Any, indent: str) -> list[str]:
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    return [
        f"{indent}<bndbox>",
        f"{indent}\t<xmin>{num(x0 + 1)}</xmin>",
        f"{indent}\t<ymin>{num(y0 + 1)}</ymin>",
        f"{indent}\t<xmax>{num(x1)}</xmax>",
        f"{indent}\t<ymax>{num(y1)}</ymax>",
        f"{indent}</bndbox>",
    ]


def _part(label: str, xyxy: Any) -> list[str]:
    return ["\t\t<part>", f"\t\t\t<name>{escape(label)}</name>", *_bndbox(xyxy, "\t\t\t"), "\t\t</part>"]


def _object(label: str, xyxy: Any, attributes: dict[str, Any], score: float) -> list[str]:
    pose = attributes.pop("pose", "Unspecified")
    flags = {k: 1 if attributes.pop(k, 0) in (1, True, "1", "true") else 0 for k in FLAGS}
    out = ["\t<object>", f"\t\t<name>{escape(label)}</name>", f"\t\t<pose>{escape(str(pose))}</pose>"]
    out += [f"\t\t<truncated>{flags['truncated']}</truncated>", f"\t\t<difficult>{flags['difficult']}</difficult>"]
    if flags["occluded"]:
        out.append("\t\t<occluded>1</occluded>")
    out += _bndbox(xyxy, "\t\t")
    if not math.isnan(score):
        out.append(f"\t\t<score>{num(score, 8)}</score>")
    if attributes:
        out.append("\t\t<attributes>")
        for k in sorted(attributes):
            value = attributes[k]
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            out.append(f"\t\t\t<attribute><name>{escape(k)}</name><value>{escape(text)}</value></attribute>")
        out.append("\t\t</attributes>")
    out.append("\t</object>")
    return out


# -- import ------------------------------------------------------------------------------------------------
def parse(path: Path, session: ImportSession) -> None:
    if path.is_dir():
        folder = path / "Annotations" if (path / "Annotations").is_dir() else path
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() == ".xml")
        root = path
    else:
        files, root = [path], path.parent
    if not files:
        raise InvalidInput(f"{path}: no VOC .xml file found")
    search = [root / "JPEGImages", root / "images", root]
    parsed = []
    for file in files:  # parse everything first: unreadable files are known before anything is written
        shown = file.relative_to(root).as_posix()
        try:
            parsed.append((file, shown, _read(file, shown)))
        except InvalidInput as exc:
            if len(files) == 1:
                raise
            session.reject(shown, "file", str(exc))
    for done, (file, shown, doc) in enumerate(parsed, start=1):
        session.report.files += 1
        _import_doc(doc, file, shown, [file.parent, *search], session)
        session.progress(done, len(parsed), shown)


def _read(file: Path, shown: str) -> Any:
    import defusedxml.ElementTree as SafeET
    from defusedxml import DefusedXmlException

    try:
        if file.stat().st_size > MAX_XML_BYTES:
            raise InvalidInput(f"{shown}: larger than {MAX_XML_BYTES} bytes")
        return SafeET.parse(file, forbid_dtd=True, forbid_entities=True, forbid_external=True).getroot()
    except DefusedXmlException as exc:
        raise InvalidInput(
            f"{shown}: XML with a DTD or entity declarations is refused (entities are never resolved): {exc!r}"
        ) from exc
    except (OSError, SyntaxError) as exc:  # ElementTree.ParseError is a SyntaxError
        raise InvalidInput(f"{shown}: not well-formed XML ({exc})") from exc


def _text(node: Any, tag: str) -> str | None:
    child = node.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def _import_doc(doc: Any, file: Path, shown: str, search: list[Path], session: ImportSession) -> None:
    if doc.tag != "annotation":
        session.reject(shown, "file", f"root element is <{doc.tag}>, not <annotation>")
        return
    name = _text(doc, "filename")
    if not name:
        session.reject(shown, "file", "no <filename>")
        return
    size = None
    node = doc.find("size")
    if node is not None:
        try:
            w, h = int(float(_text(node, "width") or "")), int(float(_text(node, "height") or ""))
            size = (w, h) if w > 0 and h > 0 else None
        except ValueError:
            session.reject(shown, "size", "width and height must be numbers")
            return
    objects = doc.findall("object")
    target = session.resolve(name, shown, search=search, size=size, annotations=len(objects))
    if target is None:
        return
    rows = []
    for j, obj in enumerate(objects):
        item = f"object {j}"
        parts = obj.findall("part")
        try:
            rows.append(_row(obj, item, session))
        except InvalidInput as exc:
            session.reject(shown, item, str(exc))
            for k, _ in enumerate(parts):
                session.reject(shown, f"{item} part {k}", f"its object was rejected ({exc})")
            continue
        for k, part in enumerate(parts):  # person layout: head, hands, feet as boxes of their own
            try:
                row = _row(part, f"{item} part {k}", session)
            except InvalidInput as exc:
                session.reject(shown, f"{item} part {k}", str(exc))
                continue
            row.attributes[PART_OF] = j
            rows.append(row)
    session.add(target, shown, rows)


def _row(obj: Any, item: str, session: ImportSession) -> Row:
    label = _text(obj, "name")
    if not label:
        raise InvalidInput("object without a <name>")
    box = obj.find("bndbox")
    if box is None:
        raise InvalidInput("object without a <bndbox>")
    try:
        xmin, ymin, xmax, ymax = (float(_text(box, k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
    except ValueError as exc:
        raise InvalidInput(f"bndbox values must be numbers ({exc})") from exc
    x0, y0 = xmin - 1, ymin - 1
    if -1 <= x0 < 0 or -1 <= y0 < 0:
        session.report.note("some boxes have xmin or ymin 0 (0-based coordinates): read as 0")
        x0 = 0.0 if -1 <= x0 < 0 else x0
        y0 = 0.0 if -1 <= y0 < 0 else y0
    attributes: dict[str, Any] = {}
    pose = _text(obj, "pose")
    if pose and pose != "Unspecified":
        attributes["pose"] = pose
    for flag in FLAGS:
        if _text(obj, flag) in ("1", "true"):
            attributes[flag] = 1
    extra = obj.find("attributes")
    if extra is not None:
        for attr in extra.findall("attribute"):
            key, value = _text(attr, "name"), _text(attr, "value")
            if key:
                attributes[key] = value or ""
    score_text = _text(obj, "score")
    try:
        score = float(score_text) if score_text else math.nan
    except ValueError as exc:
        raise InvalidInput(f"score must be a number, got {score_text!r}") from exc
    return Row(item, label, "box", box=(x0, y0, xmax, ymax), score=score, attributes=attributes)
