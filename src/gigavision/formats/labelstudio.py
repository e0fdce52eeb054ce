"""Label Studio JSON (``labelstudio``): what Label Studio's "JSON" export writes, a list of tasks with results.

Export mapping (``tasks.json``: one task per image, streamed; ``label_config.xml``: the labeling config to
create the Label Studio project with; images in ``images/`` when asked for):
    task         ``{"id": n, "data": {"image": <file name>[, "split": s]}, "annotations": [{"id": n,
                 "result": [...], "was_cancelled": false, "ground_truth": false}], "predictions": []}``,
                 n = 1..N in image order
    coordinates  percentages (0-100) of ``original_width`` / ``original_height`` (the level-0 size): pixel
                 coordinates rounded to 6 decimals, then the percentage to 12, so they read back exactly
    box          ``rectanglelabels`` (from_name ``label``) {x, y, width, height, rotation 0}
    polygon      ``polygonlabels`` (``polygon``) {points [[x, y], ...], closed}: the outer ring (holes are
                 dropped, counted in ``converted``); a MultiPolygon is one region per part (counted)
    point        ``keypointlabels`` (``keypoint``) {x, y}
    mask         ``brushlabels`` (``brush``) {format "rle", rle}: Label Studio's RLE of the whole image's
                 RGBA bytes, 255 in all four channels inside the mask (``brush_rle``; as label-studio-converter's
                 ``mask2rle`` writes it)
    tag          one ``choices`` result (``choice``) holding the image's tags in order, at the first tag's
                 place (tag scores and attributes cannot be held: counted in ``skipped``)
    score        the result's ``score`` when the annotation has one
    attributes   per-region results with the region's ``id`` and ``from_name`` = the attribute name: numbers
                 as ``number`` {number}, anything else as ``textarea`` {text: [value]}
    result ids   ``<task>_<k>`` by position in the task; ``to_name`` is always ``image``

Import reads that and what Label Studio writes: ``rectanglelabels`` / ``rectangle`` (a rotated one becomes
the rotated rectangle as a polygon, rotated about its top-left corner as Label Studio stores it),
``polygonlabels`` / ``polygon``, ``keypointlabels`` / ``keypoint``, ``brushlabels`` / ``brush`` (RLE decoded
like label-studio-converter's ``brush.decode_rle``; a pixel belongs to the mask where its alpha is > 0),
``labels`` with any of those geometries, and ``choices`` (one tag per choice); a region without a label gets
``default_label``. Results sharing a region's
``id`` (per-region textarea, number, rating, choices, taxonomy, datetime) become attributes named by their
``from_name``; results of other types, task-level ones that are not choices, and relations are counted in the
report's notes. Per task one annotation is imported: the ground-truth one, else the latest (``updated_at``,
``created_at``, then list order) that was not cancelled; the other annotations, the cancelled ones and all
``predictions`` are counted in notes, never imported. ``data.image`` (else the first ``data`` value naming an
image file) is matched by its file name (``/data/upload/<n>/<8 hex>-a.jpg``: ``a.jpg`` unless a file keeps
the prefixed name; ``/data/local-files/?d=dir/a.jpg``: ``dir/a.jpg``; URLs and ``s3://`` by their file name,
never fetched). A ``label_config.xml`` beside the file declares its classes with their kinds and colours.

The file is streamed (``jsonscan``): its top-level structure is checked first (a file that is not a JSON list
of task objects is refused before anything is written), then tasks are parsed a batch at a time.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import quoteattr

import numpy as np

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.formats.brush_rle import decode_brush, encode_brush
from gigavision.formats.exporting import ExportContext
from gigavision.formats.importing import IMAGE_SUFFIXES, ImportSession, Row, Target
from gigavision.formats.jsonscan import Scan, read_features, scan_features
from gigavision.formats.rle import decode_window
from gigavision.formats.source import AnnotatedImages, ImageEntry
from gigavision.formats.text import PIXEL_DIGITS, dumps, hex_to_rgb, num, rgb_to_hex

DEFAULT_IMAGES = "none"
TASKS = "tasks.json"
CONFIG = "label_config.xml"
PCT_DIGITS = 12  # a percentage to 1e-12: exact to 1e-8 px on a 1,000,000 px side
TOLERANCE = 1e-6  # percent: Label Studio writes 100.00000000000001
BATCH_BYTES = 8 * 1024**2  # tasks parsed, then matched to images, this many bytes at a time
BATCH_TASKS = 500
MAX_GAP = 1 << 16
MAX_CONFIG_BYTES = 4 * 1024**2

# control tag name (``from_name``) and result type per kind, and the config element that declares it
CONTROLS = {
    "box": ("label", "rectanglelabels", "RectangleLabels", "Label"),
    "polygon": ("polygon", "polygonlabels", "PolygonLabels", "Label"),
    "point": ("keypoint", "keypointlabels", "KeyPointLabels", "Label"),
    "mask": ("brush", "brushlabels", "BrushLabels", "Label"),
    "tag": ("choice", "choices", "Choices", "Choice"),
}
RESERVED = {"image"} | {c[0] for c in CONTROLS.values()}
GEOMETRY = {
    "rectanglelabels": "rect",
    "rectangle": "rect",
    "polygonlabels": "poly",
    "polygon": "poly",
    "keypointlabels": "point",
    "keypoint": "point",
    "brushlabels": "brush",
    "brush": "brush",
}
ATTRIBUTE_KEYS = {"textarea": "text", "choices": "choices", "rating": "rating", "number": "number"}
UPLOAD_PREFIX = re.compile(r"^[0-9a-fA-F]{8}-(.+)$")


# -- export ------------------------------------------------------------------------------------------------
@dataclass
class _Seen:
    """What the tasks used, for the labeling config: labels per kind, attribute names and whether numeric."""

    labels: dict[str, dict[str, None]] = field(default_factory=lambda: {k: {} for k in CONTROLS})  # ordered sets
    attributes: dict[str, bool] = field(default_factory=dict)  # name -> every value was a number

    def label(self, kind: str, label: str) -> None:
        self.labels[kind].setdefault(label)


def export(source: AnnotatedImages, ctx: ExportContext) -> None:
    classes = source.classes()
    known = {c["name"] for c in classes}
    seen = _Seen()
    total = len(source)
    with ctx.open_text(TASKS).open("w", encoding="utf-8", newline="\n") as out:
        out.write("[")
        done = 0
        for done, entry in enumerate(source.images(), start=1):
            file_name = ctx.file_name(entry)
            ctx.place_image(entry, f"images/{file_name}")
            results = _results(source.annotations(entry.id), entry, done, known, seen, ctx)
            data: dict[str, Any] = {"image": file_name}
            if entry.split:
                data["split"] = entry.split
            out.write("\n" if done == 1 else ",\n")
            out.write(f'{{"id":{done},"data":{dumps(data)},"annotations":[{{"id":{done},"result":[')
            for k, result in enumerate(results):
                out.write(("\n" if k == 0 else ",\n") + _json(result))
            out.write('],"was_cancelled":false,"ground_truth":false}],"predictions":[]}')
            ctx.result.images += 1
            ctx.progress(done, total, file_name)
        out.write("\n]\n" if done else "]\n")
    ctx.open_text(CONFIG).write_text(_config(classes, seen), encoding="utf-8", newline="\n")


def _results(
    ann: Annotations, entry: ImageEntry, task: int, known: set[str], seen: _Seen, ctx: ExportContext
) -> list[dict[str, Any]]:
    """The results of one image in annotation order (tags gathered into one ``choices`` result)."""
    frame = {"to_name": "image", "original_width": entry.width, "original_height": entry.height, "image_rotation": 0}
    out: list[dict[str, Any]] = []
    tags: list[str] = []  # the choices result's list: it fills as later tags come
    for i in range(len(ann)):
        kind, label = str(ann.kind[i]), str(ann.label[i])
        if label not in known:
            ctx.result.skip(f"label {label!r} not in the exported classes")
            continue
        score = float(ann.score[i])
        attributes = dict(ann.attributes[i])
        if kind == "tag":
            if not tags:
                name = CONTROLS["tag"][0]
                out.append({"id": f"{task}_{len(out) + 1}", "type": "choices", "from_name": name, "to_name": "image"})
                out[-1]["value"] = {"choices": tags}
            tags.append(label)
            seen.label("tag", label)
            if not math.isnan(score):
                ctx.result.skip("tag scores (a Label Studio choices result has one score for all tags)")
            if attributes:
                ctx.result.skip("tag attributes")
            ctx.result.annotations += 1
            continue
        values = _geometries(ann, i, entry, ctx)
        if not values:
            continue
        name, rtype = CONTROLS[kind][:2]
        seen.label(kind, label)
        for value in values:
            region_id = f"{task}_{len(out) + 1}"
            region = {"id": region_id, "type": rtype, "from_name": name, **frame, "value": {**value, rtype: [label]}}
            if not math.isnan(score):
                region["score"] = score
            out.append(region)
            shape = {} if kind == "mask" else value  # per-region results repeat the geometry, as Label Studio's do
            for key in sorted(attributes):
                attribute = _attribute_result(key, attributes[key], shape, seen, ctx)
                if attribute is not None:
                    out.append(
                        {"id": region_id, "type": attribute[0], "from_name": key, **frame, "value": attribute[1]}
                    )
        ctx.result.annotations += 1
    return out


def _attribute_result(
    key: str, value: Any, shape: dict[str, Any], seen: _Seen, ctx: ExportContext
) -> tuple[str, dict[str, Any]] | None:
    """A per-region result (type, value) for an attribute: numbers as ``number``, anything else as text."""
    if key in RESERVED:
        ctx.result.skip(f"attributes named {key!r} (a name the labeling config uses for a control)")
        return None
    numeric = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    seen.attributes[key] = seen.attributes.get(key, True) and numeric
    if numeric:
        return "number", {**shape, "number": value}
    text = value if isinstance(value, str) else str(value) if isinstance(value, float) else dumps(value)
    return "textarea", {**shape, "text": [text]}


def _geometries(ann: Annotations, i: int, entry: ImageEntry, ctx: ExportContext) -> list[dict[str, Any]]:
    """The ``value`` geometry of annotation ``i`` (one per region: a MultiPolygon gives one per part)."""
    import shapely

    kind = str(ann.kind[i])
    w, h = entry.width, entry.height
    if kind == "box":
        x0, y0, x1, y1 = (round(float(v), PIXEL_DIGITS) for v in ann.xyxy[i])
        return [
            {"x": _pct(x0, w), "y": _pct(y0, h), "width": _pct(x1 - x0, w), "height": _pct(y1 - y0, h), "rotation": 0}
        ]
    if kind == "point":
        x, y = (round(float(v), PIXEL_DIGITS) for v in ann.xyxy[i][:2])
        return [{"x": _pct(x, w), "y": _pct(y, h)}]
    if kind == "polygon":
        parts = list(shapely.get_parts(ann.geometry[i]))
        if len(parts) > 1:
            ctx.result.converted["multipolygon written as one region per part"] += 1
        holes = sum(len(p.interiors) for p in parts)
        if holes:
            ctx.result.converted["polygon holes dropped (Label Studio polygons have none)"] += holes
        values = []
        for part in parts:
            ring = np.asarray(part.exterior.coords)[:-1, :2].tolist()
            points = [[_pct(round(x, PIXEL_DIGITS), w), _pct(round(y, PIXEL_DIGITS), h)] for x, y in ring]
            values.append({"points": points, "closed": True})
        return values
    if kind == "mask":
        x0, y0 = (math.floor(float(v)) for v in ann.xyxy[i][:2])
        window = decode_window(ann.mask[i])
        if not window.any():
            ctx.result.skip("empty masks")
            return []
        if x0 < 0 or y0 < 0 or x0 + window.shape[1] > w or y0 + window.shape[0] > h:
            ctx.result.skip("masks outside their image")
            return []
        return [{"format": "rle", "rle": encode_brush(window, x0, y0, w, h)}]
    ctx.result.skip(f"{kind} annotations")
    return []


def _pct(pixels: float, size: int) -> float:
    return round(pixels / size * 100, PCT_DIGITS)


def _json(value: Any) -> str:
    """Canonical JSON like ``text.dumps``, with floats (percentages, scores) to ``PCT_DIGITS`` decimals."""
    if isinstance(value, float):
        return num(value, PCT_DIGITS)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{dumps(str(k))}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_json(v) for v in value) + "]"
    return dumps(value)


def _config(classes: list[dict[str, Any]], seen: _Seen) -> str:
    """The labeling config: the image, one control per kind with its labels (and colours), the attributes."""
    lines = ["<View>", '  <Image name="image" value="$image"/>']
    colors = {c["name"]: c.get("color") for c in classes}
    for kind, (name, _, element, child) in CONTROLS.items():
        schema = {c["name"]: None for c in classes if c["kind"] == kind}
        labels = [*schema, *(label for label in seen.labels[kind] if label not in schema)]
        if not labels:
            continue
        extra = ' choice="multiple"' if kind == "tag" else ""
        lines.append(f'  <{element} name="{name}" toName="image"{extra}>')
        for label in labels:
            color = _hex(colors.get(label)) if kind != "tag" else None
            background = f" background={quoteattr(color)}" if color else ""
            lines.append(f"    <{child} value={quoteattr(label)}{background}/>")
        lines.append(f"  </{element}>")
    for key in sorted(seen.attributes):
        if seen.attributes[key]:
            lines.append(f'  <Number name={quoteattr(key)} toName="image" perRegion="true"/>')
        else:
            lines.append(f'  <TextArea name={quoteattr(key)} toName="image" perRegion="true" editable="true"/>')
    lines.append("</View>")
    return "\n".join(lines) + "\n"


def _hex(color: Any) -> str | None:
    rgb = hex_to_rgb(color) if isinstance(color, str) else None
    return rgb_to_hex(rgb) if rgb is not None else None


# -- import ------------------------------------------------------------------------------------------------
@dataclass
class _Tally:
    """What was read but not imported, for the report's notes."""

    predictions: int = 0
    prediction_tasks: int = 0
    cancelled: int = 0
    others: int = 0
    several: int = 0
    rotated: int = 0
    multi_label: int = 0
    relations: int = 0
    unsupported: Counter[str] = field(default_factory=Counter)
    unattached: Counter[str] = field(default_factory=Counter)

    def notes(self, session: ImportSession) -> None:
        note = session.report.note
        if self.predictions:
            note(
                f"{self.predictions} prediction(s) (model pre-annotations) in {self.prediction_tasks} task(s) were "
                "not imported: only annotations are"
            )
        if self.cancelled:
            note(f"{self.cancelled} cancelled annotation(s) (was_cancelled) were skipped")
        if self.several:
            note(
                f"{self.several} task(s) had several annotations: the ground-truth one, else the latest, was "
                f"imported; {self.others} other annotation(s) were not"
            )
        if self.rotated:
            note(
                f"{self.rotated} rotated rectangle(s) were imported as polygons (in a class of kind box: their "
                "bounding box)"
            )
        if self.multi_label:
            note(f"{self.multi_label} region(s) with several labels became one annotation per label")
        if self.relations:
            note(f"{self.relations} relation(s) between regions were not imported")
        for rtype, n in sorted(self.unsupported.items()):
            note(f"{n} {rtype} result(s) were not imported (no matching annotation kind)")
        for rtype, n in sorted(self.unattached.items()):
            note(f"{n} {rtype} result(s) not attached to a region (task-level) were not imported")


def parse(path: Path, session: ImportSession) -> None:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.json") if p.is_file())
        root = path
    else:
        files, root = [path], path.parent
    if not files:
        raise InvalidInput(f"{path}: no Label Studio .json file found")
    scans: dict[Path, Scan] = {}
    for file in files:  # structure first: a file that is not a list of tasks is refused before any write
        shown = file.relative_to(root).as_posix()
        try:
            scans[file] = _scan(file, shown)
        except (InvalidInput, OSError) as exc:
            if len(files) == 1:
                raise InvalidInput(str(exc)) from exc
            session.reject(shown, "file", str(exc))
    tally = _Tally()
    configs: set[Path] = set()
    for file, scan in scans.items():
        shown = file.relative_to(root).as_posix()
        session.report.files += 1
        if file.parent not in configs:
            configs.add(file.parent)
            _read_config(file.parent / CONFIG, session)
        _import_file(file, shown, scan, session, tally)
    tally.notes(session)


def _scan(file: Path, shown: str) -> Scan:
    """The byte spans of the tasks; ``InvalidInput`` unless the file is a JSON list of objects."""
    with file.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head:
        raise InvalidInput(f"{shown}: empty file, not a Label Studio JSON export (a list of tasks)")
    if head[:1] != b"[":
        raise InvalidInput(f"{shown}: not a Label Studio JSON export (a list of tasks): it starts with {head[:20]!r}")
    try:
        scan = scan_features(file)
    except InvalidInput as exc:
        raise InvalidInput(f"{shown}: {str(exc).removeprefix(file.name + ': ')}") from exc
    size = file.stat().st_size
    bounds = [0, *(x for k in range(len(scan)) for x in (scan.starts[k], scan.ends[k])), size]
    with file.open("rb") as fh:
        for k in range(0, len(bounds), 2):
            start, end = bounds[k], bounds[k + 1]
            expected = (
                rb"\s*\[\s*\]\s*"
                if len(bounds) == 2
                else rb"\s*\[\s*"
                if k == 0
                else rb"\s*\]\s*"
                if k == len(bounds) - 2
                else rb"\s*,\s*"
            )
            fh.seek(start)
            gap = fh.read(min(end - start, MAX_GAP)).removeprefix(b"\xef\xbb\xbf")
            if end - start > MAX_GAP or not re.fullmatch(expected, gap):
                where = f"after task {k // 2}" if k else "before the first task"
                raise InvalidInput(f"{shown}: not a JSON list of task objects (unexpected {gap[:30]!r} {where})")
    return scan


def _read_config(path: Path, session: ImportSession) -> None:
    """Classes (kind, colour) that a labeling config beside the file declares; a broken one is reported."""
    if not path.is_file():
        return
    import defusedxml.ElementTree as SafeET
    from defusedxml import DefusedXmlException

    kinds = {element: kind for kind, (_, _, element, _) in CONTROLS.items()}
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise InvalidInput(f"larger than {MAX_CONFIG_BYTES} bytes")
        root = SafeET.parse(path, forbid_dtd=True, forbid_entities=True, forbid_external=True).getroot()
    except (DefusedXmlException, OSError, SyntaxError, InvalidInput) as exc:
        session.reject(path.name, "file", f"labeling config not read: {exc}")
        return
    for control in root.iter():
        kind = kinds.get(str(control.tag))
        if kind is None or (kind == "tag" and control.get("perRegion") == "true"):
            continue
        for child in control:
            value = child.get("value")
            if child.tag in ("Label", "Choice") and value:
                session.declare_class(value, kind, _hex(child.get("background")))


@dataclass
class _Task:
    """One task ready to import: its item name, image reference, chosen results, and size."""

    item: str
    ref: str
    results: list[Any]
    size: tuple[int, int] | None


def _import_file(file: Path, shown: str, scan: Scan, session: ImportSession, tally: _Tally) -> None:
    search = [file.parent, file.parent / "images"]
    batch: list[_Task] = []
    held = 0
    done = 0
    max_bytes = 128 * session.options.max_vertices + (1 << 20)  # as GeoJSON features: 128 MB by default
    for index, data, _ in read_features(file, scan, max_bytes):
        task = _task(index, data, max_bytes, shown, session, tally)
        if task is not None:
            batch.append(task)
            held += len(data or b"")
        done += 1
        if held >= BATCH_BYTES or len(batch) >= BATCH_TASKS:
            _import_batch(batch, shown, search, session, tally)
            batch, held = [], 0
            session.progress(done, len(scan), shown)
    _import_batch(batch, shown, search, session, tally)
    session.progress(done, len(scan), shown)


def _task(
    index: int, data: bytes | None, max_bytes: int, shown: str, session: ImportSession, tally: _Tally
) -> _Task | None:
    if data is None:
        session.reject(shown, f"task at position {index}", f"larger than {max_bytes} bytes; not parsed")
        return None
    try:
        task = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        session.reject(shown, f"task at position {index}", f"not valid JSON: {exc}")
        return None
    if not isinstance(task, dict):
        session.reject(shown, f"task at position {index}", "a task must be a JSON object")
        return None
    tid = task.get("id")
    item = f"task {tid}" if isinstance(tid, int | str) and not isinstance(tid, bool) else f"task at position {index}"
    chosen = _annotation(task, tally)
    results = chosen.get("result") if chosen is not None else []
    if not isinstance(results, list):
        session.reject(shown, item, "annotation result must be a list")
        return None
    ref, problem = _image_ref(task.get("data"))
    if ref is None:
        session.reject(shown, item, problem)
        return None
    size = None
    for r in results:
        if isinstance(r, dict) and _count(r.get("original_width")) and _count(r.get("original_height")):
            size = (int(r["original_width"]), int(r["original_height"]))
            break
    return _Task(item, ref, results, size)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _annotation(task: dict[str, Any], tally: _Tally) -> dict[str, Any] | None:
    """The annotation to import: the ground-truth one, else the latest, of those not cancelled."""
    predictions = task.get("predictions")
    if isinstance(predictions, list) and predictions:
        tally.predictions += len(predictions)
        tally.prediction_tasks += 1
    found = task.get("annotations", task.get("completions"))  # "completions": Label Studio before 1.0
    annotations = [a for a in found if isinstance(a, dict)] if isinstance(found, list) else []
    live = [a for a in annotations if a.get("was_cancelled") is not True]
    tally.cancelled += len(annotations) - len(live)
    if not live:
        return None
    if len(live) > 1:
        tally.several += 1
        tally.others += len(live) - 1
    pool = [a for a in live if a.get("ground_truth") is True] or live
    latest = max(range(len(pool)), key=lambda k: (str(pool[k].get("updated_at") or pool[k].get("created_at") or ""), k))
    return pool[latest]


def _image_ref(data: Any) -> tuple[str | None, str]:
    """The image reference of a task's ``data`` as a path to look up, or None and why."""
    if not isinstance(data, dict):
        return None, "the task has no data object"
    values = [data["image"]] if isinstance(data.get("image"), str) and data["image"] else []
    values += [v for k, v in data.items() if k != "image" and isinstance(v, str) and _names_image(v)]
    if not values:
        return None, "no image reference in data (data.image, or a value naming an image file)"
    ref = values[0]
    if ref.startswith("data:"):
        return None, "the image is inline (a data: URI); only references to image files are imported"
    parts = urlsplit(ref)
    if parts.path.startswith("/data/local-files") or "/data/local-files/" in parts.path:
        d = parse_qs(parts.query).get("d")
        if d:
            return d[0], ""
    if len(parts.scheme) > 1 or parts.path.startswith("/data/"):  # not a Windows drive letter
        name = PurePosixPath(unquote(parts.path)).name
        return (name, "") if name else (None, f"image reference {ref[:200]!r} names no file")
    return ref, ""


def _names_image(value: str) -> bool:
    path = urlsplit(value).path if "://" in value or value.startswith("/data/") else value
    return PurePosixPath(unquote(path)).suffix.lower() in IMAGE_SUFFIXES or (
        "/data/local-files" in value and "d=" in value
    )


def _file_names(refs: list[str], session: ImportSession, search: list[Path]) -> list[str]:
    """The names to look up: an uploaded file's name loses Label Studio's ``<8 hex>-`` prefix unless a file
    (or a workspace image) keeps the prefixed name."""
    folders = [d for d in (session.images_dir, *search) if d is not None]
    names = list(refs)
    undecided: dict[int, str] = {}
    for k, ref in enumerate(refs):
        m = UPLOAD_PREFIX.match(ref)
        if m is None or "/" in ref or any((d / ref).is_file() for d in folders):
            continue
        names[k] = m.group(1)
        if not any((d / m.group(1)).is_file() for d in folders):
            undecided[k] = ref
    if undecided:
        stored = session.ws.catalog.named(sorted(set(undecided.values())))
        for k, ref in undecided.items():
            if stored[ref]:
                names[k] = ref
    return names


def _import_batch(batch: list[_Task], shown: str, search: list[Path], session: ImportSession, tally: _Tally) -> None:
    names = _file_names([t.ref for t in batch], session, search)
    session.prefetch(names)
    for task, name in zip(batch, names, strict=True):
        target = session.resolve(name, shown, search=search, size=task.size, annotations=len(task.results))
        if target is not None:
            session.add(target, shown, list(_rows(task, shown, target, session, tally)))


def _rows(task: _Task, shown: str, target: Target, session: ImportSession, tally: _Tally) -> Iterator[Row]:
    """The task's results as rows: grouped by ``id`` (a region and its per-region results), in file order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for j, r in enumerate(task.results):
        if not isinstance(r, dict):
            session.reject(shown, f"{task.item} result {j}", "a result must be a JSON object")
            continue
        rid = r.get("id")
        if r.get("type") == "relation":
            tally.relations += 1
            continue
        key = str(rid) if isinstance(rid, int | str) and not isinstance(rid, bool) and rid != "" else f"#{j}"
        groups.setdefault(key, []).append(r)
    for rid, members in groups.items():
        item = f"{task.item} result {rid.removeprefix('#')}"
        try:
            yield from _group(members, item, target, session, tally)
        except InvalidInput as exc:
            session.reject(shown, item, str(exc))


def _geometry(r: dict[str, Any]) -> str | None:
    rtype = str(r.get("type", "")).lower()
    if rtype in GEOMETRY:
        return GEOMETRY[rtype]
    value = r.get("value")
    if rtype != "labels" or not isinstance(value, dict):
        return None
    if "points" in value:
        return "poly"
    if "rle" in value:
        return "brush"
    if {"x", "y", "width", "height"} <= set(value) and "start" not in value:
        return "rect"
    if {"x", "y"} <= set(value):
        return "point"
    return None


def _group(
    members: list[dict[str, Any]], item: str, target: Target, session: ImportSession, tally: _Tally
) -> Iterator[Row]:
    shapes = [m for m in members if _geometry(m)]
    if not shapes:
        if any(_region_like(m) for m in members):  # a kind with no mapping (ellipse, text span, video...)
            for m in members:
                tally.unsupported[str(m.get("type", "?"))] += 1
            return
        for m in members:
            if m.get("type") == "choices":
                choices = _value(m).get("choices")
                if not isinstance(choices, list) or not all(isinstance(c, str) and c for c in choices):
                    raise InvalidInput("value.choices must be a list of texts")
                for c in choices:
                    yield Row(item, c, "tag", score=_score(m))
            else:
                tally.unattached[str(m.get("type", "?"))] += 1
        return
    shape = shapes[0]
    for m in shapes[1:]:
        if m.get("from_name") == shape.get("from_name") and m.get("type") == shape.get("type"):
            raise InvalidInput("two regions share this result id")
    for m in members:
        rotation = m.get("image_rotation", 0)
        if rotation not in (0, None):
            raise InvalidInput(f"image_rotation {rotation!r}: results on a rotated image view are not supported")
        for key, side in (("original_width", target.width), ("original_height", target.height)):
            if key in m and m[key] != side:
                raise InvalidInput(f"{key} {m[key]!r} is not the image's {target.width}x{target.height}")
    labels: list[str] = []
    attributes: dict[str, Any] = {}
    for m in members:
        rtype = str(m.get("type", "")).lower()
        value = _value(m)
        if rtype.endswith("labels"):
            found = value.get(rtype, value.get("labels", []))
            if not isinstance(found, list) or not all(isinstance(x, str) and x for x in found):
                raise InvalidInput(f"value.{rtype} must be a list of label texts")
            labels += [x for x in found if x not in labels]
        elif m is not shape and not _geometry(m):
            name = m.get("from_name") if isinstance(m.get("from_name"), str) and m.get("from_name") else rtype
            attribute = _attribute(rtype, value)
            if attribute is None:
                tally.unsupported[rtype or "?"] += 1
            else:
                attributes[str(name)] = attribute
    if len(labels) > 1:
        tally.multi_label += 1
    kind, geometry = _shape(shape, _value(shape), target, tally)
    score = next((s for s in map(_score, members) if not math.isnan(s)), math.nan)
    for k, label in enumerate(labels or [session.options.default_label]):
        sub = item if len(labels) <= 1 else f"{item} label {k}"
        if kind == "mask":
            window, ox, oy = geometry
            yield Row(sub, label, "mask", window=window, offset=(ox, oy), score=score, attributes=dict(attributes))
        elif kind == "box":
            yield Row(sub, label, "box", box=geometry, score=score, attributes=dict(attributes))
        else:
            yield Row(sub, label, kind, geometry=geometry, score=score, attributes=dict(attributes))


def _region_like(r: dict[str, Any]) -> bool:
    """A result of a region kind without a mapping here (ellipse, text span, video box...)."""
    value = r.get("value")
    return str(r.get("type", "")).lower().endswith("labels") or (isinstance(value, dict) and "x" in value)


def _value(r: dict[str, Any]) -> dict[str, Any]:
    value = r.get("value")
    if not isinstance(value, dict):
        raise InvalidInput(f"a {r.get('type')} result needs a value object")
    return value


def _score(r: dict[str, Any]) -> float:
    s = r.get("score")
    return float(s) if isinstance(s, int | float) and not isinstance(s, bool) and math.isfinite(s) else math.nan


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _attribute(rtype: str, value: dict[str, Any]) -> Any:
    """A per-region result's value as an attribute value (text, number or boolean); None when it has none."""
    raw = value.get(ATTRIBUTE_KEYS.get(rtype, rtype))
    if rtype == "taxonomy" and isinstance(raw, list):
        raw = [("/".join(str(p) for p in path) if isinstance(path, list) else path) for path in raw]
    if isinstance(raw, list) and all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in raw):
        if len(raw) == 1:
            return raw[0]
        return ("\n" if rtype == "textarea" else ", ").join(str(v) for v in raw) if raw else None
    if isinstance(raw, str | bool) or (isinstance(raw, int | float) and math.isfinite(raw)):
        return raw
    return None


def _percent(value: dict[str, Any], key: str) -> float:
    v = value.get(key)
    return _checked(v, f"value.{key}")


def _checked(v: Any, what: str) -> float:
    if not _number(v):
        raise InvalidInput(f"{what} must be a number (percent of the image), got {v!r:.40}")
    f = float(v)
    if math.isnan(f):
        raise InvalidInput(f"{what} is NaN")
    if not -TOLERANCE <= f <= 100 + TOLERANCE:
        raise InvalidInput(f"{what} = {f} is outside 0..100 (percent of the image)")
    return min(max(f, 0.0), 100.0)


def _pixels(percent: float, size: int) -> float:
    return round(percent / 100 * size, PIXEL_DIGITS)


def _shape(shape: dict[str, Any], value: dict[str, Any], target: Target, tally: _Tally) -> tuple[str, Any]:
    import shapely

    w, h = target.width, target.height
    geometry = _geometry(shape)
    if geometry == "rect":
        x, y, bw, bh = (_percent(value, k) for k in ("x", "y", "width", "height"))
        rotation = value.get("rotation", 0) or 0
        if not _number(rotation) or not math.isfinite(rotation):
            raise InvalidInput(f"value.rotation must be a number of degrees, got {rotation!r:.40}")
        if float(rotation) % 360 == 0:
            if x + bw > 100 + TOLERANCE or y + bh > 100 + TOLERANCE:
                raise InvalidInput(f"the rectangle ends at {x + bw}% x {y + bh}%, beyond 100")
            return "box", (_pixels(x, w), _pixels(y, h), min(_pixels(x + bw, w), w), min(_pixels(y + bh, h), h))
        tally.rotated += 1
        theta = math.radians(float(rotation))
        c, s = math.cos(theta), math.sin(theta)
        x0, y0, rw, rh = x / 100 * w, y / 100 * h, bw / 100 * w, bh / 100 * h
        corners = [
            (_clamp(x0 + dx * c - dy * s, w), _clamp(y0 + dx * s + dy * c, h))
            for dx, dy in ((0, 0), (rw, 0), (rw, rh), (0, rh))
        ]
        return "polygon", shapely.Polygon(corners)
    if geometry == "poly":
        points = value.get("points")
        if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
            raise InvalidInput("value.points must be a list of [x, y] percent pairs")
        if len(points) < 3:
            raise InvalidInput(f"a polygon needs at least 3 points, got {len(points)}")
        coords = [
            (_pixels(_checked(px, "a point's x"), w), _pixels(_checked(py, "a point's y"), h)) for px, py in points
        ]
        return "polygon", shapely.Polygon(coords)
    if geometry == "point":
        return "point", shapely.Point(_pixels(_percent(value, "x"), w), _pixels(_percent(value, "y"), h))
    fmt = value.get("format", "rle")
    if fmt != "rle":
        raise InvalidInput(f"brush format {fmt!r} is not supported (only rle)")
    return "mask", decode_brush(value.get("rle"), w, h)


def _clamp(v: float, size: int) -> float:
    """A rotated corner in pixels, rounded; float noise just outside the image is put on its edge."""
    r = round(v, PIXEL_DIGITS)
    tolerance = TOLERANCE / 100 * size
    return min(max(r, 0.0), float(size)) if -tolerance <= r <= size + tolerance else r
