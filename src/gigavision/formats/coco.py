"""COCO object detection / instance segmentation JSON (``annotations.json``).

Export mapping (one file, or ``annotations_<split>.json`` per split of a dataset version):
    categories   every class of the schema, ids 1..N in schema order; ``supercategory`` = parent (or "");
                 extension keys ``kind``, ``color``, ``attributes`` keep the schema for a round trip
    images       ids 1..N in source order; ``file_name`` unique in the export; extension ``tags``: the
                 image-level labels (COCO has no tags; other COCO tools ignore the key)
    box          ``bbox`` [x, y, w, h], ``area`` w·h, ``segmentation`` []
    polygon      ``segmentation`` [[x1, y1, x2, y2, ...], ...] (one list per part, ring not closed);
                 a polygon WITH HOLES cannot be a COCO polygon (its parts are unioned), so it is written
                 as an RLE mask of the rasterized shape (counted in ``converted``)
    mask         ``segmentation`` {"size": [H, W], "counts": "..."}: compressed RLE of the whole image
    point        ``bbox`` [x, y, 0, 0], ``keypoints`` [x, y, 2], ``num_keypoints`` 1
    iscrowd      1 when the annotation has the attribute ``iscrowd`` (set on import), else 0
    score        written when the annotation has one (model output); ``attributes`` when it has any

Import reads the same, plus uncompressed RLE (``counts`` as a list, as COCO writes crowd regions).
Annotations are streamed: the images array goes straight to the file and the annotations to a spool file
appended at the end, so nothing holds the whole dataset.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import IO, Any

import numpy as np

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.formats.exporting import ExportContext
from gigavision.formats.importing import ImportSession, Row
from gigavision.formats.rle import decode_window, image_to_window, rasterize_polygon, window_to_image
from gigavision.formats.source import AnnotatedImages, ImageEntry
from gigavision.formats.text import dumps, num, round_array, sorted_dict

DEFAULT_IMAGES = "none"
MAX_FILE_BYTES = 8 * 1024**3
INFO = {"description": "exported by gigavision", "version": "1.0"}


# -- export ------------------------------------------------------------------------------------------------
class _Writer:
    """One COCO file written incrementally: header and images now, annotations spooled and appended."""

    def __init__(self, path: Path, categories: list[dict[str, Any]]) -> None:
        self.path = path
        self.out: IO[str] = path.open("w", encoding="utf-8", newline="\n")
        self.spool_path = path.with_name(f".{path.name}.annotations")
        self.spool: IO[str] = self.spool_path.open("w+", encoding="utf-8", newline="\n")
        self.out.write('{"info":' + dumps(INFO) + ',\n"licenses":[],\n"categories":[')
        self.out.write(",".join("\n" + dumps(c) for c in categories))
        self.out.write('\n],\n"images":[')
        self.images = 0
        self.annotations = 0

    def image(self, record: dict[str, Any]) -> int:
        self.images += 1
        self.out.write(("\n" if self.images == 1 else ",\n") + dumps({"id": self.images, **record}))
        return self.images

    def annotation(self, record: dict[str, Any]) -> None:
        self.annotations += 1
        self.spool.write(("\n" if self.annotations == 1 else ",\n") + dumps({"id": self.annotations, **record}))

    def close(self) -> None:
        self.out.write('\n],\n"annotations":[')
        self.spool.seek(0)
        while chunk := self.spool.read(1 << 20):
            self.out.write(chunk)
        self.out.write("\n]}\n")
        self.out.close()
        self.spool.close()
        self.spool_path.unlink()


def export(source: AnnotatedImages, ctx: ExportContext) -> None:
    classes = source.classes()
    categories = []
    for i, c in enumerate(classes):
        cat: dict[str, Any] = {"id": i + 1, "name": c["name"], "supercategory": c.get("parent") or ""}
        cat.update({"kind": c["kind"], "color": c.get("color") or ""})
        if c.get("attributes"):
            cat["attributes"] = sorted_dict(c["attributes"])
        categories.append(cat)
    category_id = {c["name"]: i + 1 for i, c in enumerate(classes)}
    writers: dict[str | None, _Writer] = {}
    total = len(source)
    for done, entry in enumerate(source.images(), start=1):
        writer = writers.get(entry.split)
        if writer is None:
            name = "annotations.json" if entry.split is None else f"annotations_{entry.split}.json"
            writer = writers[entry.split] = _Writer(ctx.open_text(name), categories)
        file_name = ctx.file_name(entry)
        ctx.place_image(entry, f"images/{entry.split}/{file_name}" if entry.split else f"images/{file_name}")
        _export_image(writer, entry, file_name, source.annotations(entry.id), category_id, ctx)
        ctx.progress(done, total, file_name)
    if not writers:
        writers[None] = _Writer(ctx.open_text("annotations.json"), categories)
    for writer in writers.values():
        writer.close()


def _export_image(
    writer: _Writer,
    entry: ImageEntry,
    file_name: str,
    ann: Annotations,
    category_id: dict[str, int],
    ctx: ExportContext,
) -> None:
    record: dict[str, Any] = {"file_name": file_name, "width": entry.width, "height": entry.height}
    tags = [str(ann.label[i]) for i in range(len(ann)) if ann.kind[i] == "tag" and ann.label[i] in category_id]
    if tags:
        record["tags"] = tags
    image_id = writer.image(record)
    ctx.result.images += 1
    for i in range(len(ann)):
        kind, label = str(ann.kind[i]), str(ann.label[i])
        if kind == "tag":
            if label in category_id:
                ctx.result.annotations += 1
            continue
        if label not in category_id:
            ctx.result.skip(f"label {label!r} not in the exported classes")
            continue
        body = _annotation_body(ann, i, entry, ctx)
        if body is None:
            continue
        attributes = dict(ann.attributes[i])
        crowd = attributes.pop("iscrowd", 0)
        out: dict[str, Any] = {"image_id": image_id, "category_id": category_id[label]}
        out.update(body)
        out["iscrowd"] = 1 if crowd in (1, True, "1", "true") else 0
        score = float(ann.score[i])
        if not math.isnan(score):
            out["score"] = score
        if attributes:
            out["attributes"] = sorted_dict(attributes)
        writer.annotation(out)
        ctx.result.annotations += 1


def _annotation_body(ann: Annotations, i: int, entry: ImageEntry, ctx: ExportContext) -> dict[str, Any] | None:
    kind = str(ann.kind[i])
    if kind == "box":
        x0, y0, x1, y1 = (float(v) for v in ann.xyxy[i])
        box = [_r(x0), _r(y0), _r(x1 - x0), _r(y1 - y0)]
        return {"bbox": box, "area": _r(box[2] * box[3]), "segmentation": []}
    if kind == "point":
        x, y = _r(float(ann.xyxy[i][0])), _r(float(ann.xyxy[i][1]))
        return {"bbox": [x, y, 0, 0], "area": 0, "segmentation": [], "keypoints": [x, y, 2], "num_keypoints": 1}
    if kind == "polygon":
        geom = ann.geometry[i]
        parts = list(geom.geoms) if geom.geom_type == "MultiPolygon" else [geom]
        if not any(p.interiors for p in parts):
            return _polygon_body(parts)
        window, ox, oy = rasterize_polygon(geom)
        ctx.result.converted["polygon with holes written as RLE mask"] += 1
        return _mask_body(window, ox, oy, entry, ctx)
    if kind == "mask":
        x0, y0 = (math.floor(float(v)) for v in ann.xyxy[i][:2])
        return _mask_body(decode_window(ann.mask[i]), x0, y0, entry, ctx)
    ctx.result.skip(f"{kind} annotations")
    return None


def _polygon_body(parts: list[Any]) -> dict[str, Any]:
    import shapely

    rounded = []
    for p in parts:
        coords = np.asarray(p.exterior.coords)[:-1]
        rounded.append(round_array(coords))
    shape = shapely.MultiPolygon([shapely.Polygon(c) for c in rounded]) if len(rounded) > 1 else None
    area = shape.area if shape is not None else shapely.Polygon(rounded[0]).area
    allc = np.concatenate(rounded)
    x0, y0 = allc.min(axis=0)
    x1, y1 = allc.max(axis=0)
    box = [_r(x0), _r(y0), _r(x1 - x0), _r(y1 - y0)]
    return {"bbox": box, "area": _r(area), "segmentation": [[float(v) for v in c.ravel()] for c in rounded]}


def _mask_body(window: np.ndarray, ox: int, oy: int, entry: ImageEntry, ctx: ExportContext) -> dict[str, Any] | None:
    if not window.any():
        ctx.result.skip("empty masks")
        return None
    ys, xs = np.nonzero(window)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    tight = window[y0:y1, x0:x1]
    try:
        rle = window_to_image(tight, ox + x0, oy + y0, entry.height, entry.width)
    except InvalidInput:
        ctx.result.skip("masks outside their image")
        return None
    box = [ox + x0, oy + y0, x1 - x0, y1 - y0]
    return {"bbox": box, "area": int(tight.sum()), "segmentation": rle}


def _r(value: float) -> float:
    """Round to the written precision, so derived numbers (area, w, h) come from what is written."""
    return float(num(value))


# -- import ------------------------------------------------------------------------------------------------
def parse(path: Path, session: ImportSession) -> None:
    files = sorted(p for p in path.rglob("*.json") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise InvalidInput(f"{path}: no COCO .json file found")
    root = path if path.is_dir() else path.parent
    for file in files:
        shown = file.relative_to(root).as_posix() if file.is_relative_to(root) else file.name
        try:
            data = _load(file, shown)
        except InvalidInput as exc:
            if len(files) == 1:
                raise
            session.reject(shown, "file", str(exc))
            continue
        session.report.files += 1
        _import_file(data, file, shown, session)


SPLIT_FILE = re.compile(r"^(?:instances|person_keypoints|captions|panoptic)?_?(?P<split>[A-Za-z]+)(?:20\d\d)?\.json$")


def split_of(file: Path) -> str | None:
    """The split a COCO file's name says (``instances_train.json``, ``instances_val2017.json``, ``test.json``):
    the folders of that split hold its images. None when the name says none."""
    m = SPLIT_FILE.match(file.name)
    split = m.group("split").lower() if m else None
    return split if split not in (None, "instances", "annotations", "coco", "labels", "result", "results") else None


def layout_folders(file: Path) -> list[Path]:
    """Where the images of COCO file ``file`` are, in the layouts exporters write (COCO's own ``train2017/``
    beside ``annotations/``; CVAT, Roboflow and FiftyOne's ``images/<split>/`` or ``<split>/``): the folder
    holding ``annotations/`` and the file's own folder, each with ``images/<split>``, ``<split>2017``,
    ``<split>``, ``images`` and then every ``images/*`` subfolder. Only folders that exist."""
    split = split_of(file)
    bases = [file.parent.parent, file.parent] if file.parent.name.lower() == "annotations" else [file.parent]
    out: list[Path] = []
    for base in bases:
        named = [base / "images" / split, base / f"{split}2017", base / split] if split else []
        for folder in [*named, base / "images", base]:
            if folder.is_dir() and folder not in out:
                out.append(folder)
        if (base / "images").is_dir():
            out += sorted(p for p in (base / "images").iterdir() if p.is_dir() and p not in out)
    return out


def _load(file: Path, shown: str) -> dict[str, Any]:
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            raise InvalidInput(f"{shown}: larger than {MAX_FILE_BYTES} bytes")
        with file.open("rb") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidInput(f"{shown}: not a readable COCO JSON file ({exc})") from exc
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations")):
        raise InvalidInput(f"{shown}: not a COCO file (needs 'images' and 'annotations' lists)")
    if not isinstance(data.get("categories", []), list):
        raise InvalidInput(f"{shown}: 'categories' must be a list")
    return data


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _kind_of(a: dict[str, Any]) -> str:
    seg = a.get("segmentation")
    if isinstance(seg, dict):
        return "mask"
    if isinstance(seg, list) and seg:
        return "polygon"
    box, kp = a.get("bbox"), a.get("keypoints")
    if isinstance(kp, list) and len(kp) == 3 and isinstance(box, list) and len(box) == 4 and box[2:] == [0, 0]:
        return "point"
    return "box"


def _import_file(data: dict[str, Any], file: Path, shown: str, session: ImportSession) -> None:
    categories: dict[Any, str] = {}
    for i, c in enumerate(data.get("categories", [])):
        if not isinstance(c, dict) or not isinstance(c.get("id"), int) or not isinstance(c.get("name"), str):
            session.reject(shown, f"category {i}", "a category needs an integer id and a text name")
        elif c["id"] in categories:
            session.reject(shown, f"category {c['id']}", "duplicate category id")
        elif not 1 <= len(c["name"]) <= 256:
            session.reject(shown, f"category {c['id']}", "category name must be 1 to 256 characters")
        else:
            categories[c["id"]] = c["name"]
    # class kinds: declared (our extension), else what the annotations of that category are
    used: dict[Any, str] = {}
    for a in data["annotations"]:
        if isinstance(a, dict) and _key(a.get("category_id")) in categories:
            used.setdefault(a["category_id"], _kind_of(a))
    tag_names = {t for im in data["images"] if isinstance(im, dict) for t in _tags(im) if isinstance(t, str)}
    names = set(categories.values())
    supers: Counter[str] = Counter()  # supercategories that are not categories: no class to be a parent
    for c in data.get("categories", []):
        if not isinstance(c, dict) or _key(c.get("id")) not in categories or categories[c["id"]] != c.get("name"):
            continue
        kind = c.get("kind") if c.get("kind") in ("tag", "box", "polygon", "mask", "point") else None
        kind = kind or used.get(c["id"]) or ("tag" if c["name"] in tag_names else "box")
        color = c.get("color") if isinstance(c.get("color"), str) and c.get("color") else None
        parent = c.get("supercategory") if c.get("supercategory") in names else None
        if parent is None and isinstance(c.get("supercategory"), str) and c["supercategory"] not in ("", c["name"]):
            supers[c["supercategory"]] += 1
        attrs = c.get("attributes")
        ok_attrs = isinstance(attrs, dict) and all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in attrs.values()
        )
        session.declare_class(c["name"], kind, color, parent, attrs if ok_attrs and isinstance(attrs, dict) else None)

    if supers:
        shown_supers = ", ".join(f"{k} ({n} categories)" for k, n in sorted(supers.items()))
        session.report.note(
            f"{shown}: supercategories that are not categories are not classes here, so not kept as parents: "
            f"{shown_supers}"
        )
    images: dict[Any, dict[str, Any]] = {}
    for i, im in enumerate(data["images"]):
        problem = _image_problem(im)
        if problem:
            session.reject(shown, f"image {im.get('id', i) if isinstance(im, dict) else i}", problem)
            continue
        if im["id"] in images:
            session.reject(shown, f"image {im['id']}", "duplicate image id")
            continue
        images[im["id"]] = im
    by_image: dict[Any, list[int]] = defaultdict(list)
    for i, a in enumerate(data["annotations"]):
        item = f"annotation {a.get('id', i) if isinstance(a, dict) else i}"
        if not isinstance(a, dict):
            session.reject(shown, item, "an annotation must be a JSON object")
        elif _key(a.get("image_id")) not in images:
            session.reject(shown, item, f"image_id {a.get('image_id')!r} is not in images")
        elif _key(a.get("category_id")) not in categories:
            session.reject(shown, item, f"category_id {a.get('category_id')!r} is not in categories")
        else:
            by_image[a["image_id"]].append(i)

    search = layout_folders(file)
    split = split_of(file)
    session.prefetch(str(im["file_name"]) for im in images.values())
    total = len(images)
    keypoints_ignored = 0
    for done, (image_key, im) in enumerate(images.items(), start=1):
        indexes = by_image.pop(image_key, [])
        tags = [t for t in _tags(im) if isinstance(t, str)]
        size = (im["width"], im["height"])
        target = session.resolve(im["file_name"], shown, search=search, size=size, annotations=len(indexes) + len(tags))
        session.hint_split(target, split)
        if target is not None:
            rows = [Row(f"image {image_key} tag {j}", t, "tag") for j, t in enumerate(tags)]
            for i in indexes:
                a = data["annotations"][i]
                item = f"annotation {a.get('id', i)}"
                try:
                    row = _row(a, item, categories[a["category_id"]], target.width, target.height)
                except InvalidInput as exc:
                    session.reject(shown, item, str(exc))
                    continue
                if isinstance(a.get("keypoints"), list) and row.kind != "point":
                    keypoints_ignored += 1
                rows.append(row)
            session.add(target, shown, rows)
        session.progress(done, total, str(im["file_name"]))
    if keypoints_ignored:
        session.report.note(f"{shown}: keypoints of {keypoints_ignored} annotation(s) were not imported")


def _key(value: Any) -> int | str | None:
    """An id usable as a dict key: COCO ids are integers (or text); a list or object in a hostile file is none."""
    return value if isinstance(value, int | str) and not isinstance(value, bool) else None


def _tags(im: dict[str, Any]) -> list[Any]:
    tags = im.get("tags")
    return tags if isinstance(tags, list) else []


def _image_problem(im: Any) -> str | None:
    if not isinstance(im, dict) or "id" not in im:
        return "an image needs an id"
    if not isinstance(im["id"], int | str) or isinstance(im["id"], bool):
        return "image id must be an integer or text"
    if not isinstance(im.get("file_name"), str) or not im["file_name"]:
        return "an image needs a file_name"
    if im.get("tags") is not None and not isinstance(im["tags"], list):
        return f"tags must be a list of labels, got {im['tags']!r:.80}"
    w, h = im.get("width"), im.get("height")
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0) or isinstance(w, bool):
        return f"width and height must be positive integers, got {w!r} x {h!r}"
    return None


def _row(a: dict[str, Any], item: str, label: str, width: int, height: int) -> Row:
    import shapely

    attributes: dict[str, Any] = {}
    extra = a.get("attributes")
    if isinstance(extra, dict):
        for k, v in extra.items():
            if not isinstance(v, str | int | float | bool) or v is None:
                raise InvalidInput(f"attribute {k!r} must be text, a number or a boolean")
            attributes[str(k)] = v
    crowd = a.get("iscrowd", 0)
    if crowd not in (0, 1) or isinstance(crowd, bool):
        raise InvalidInput(f"iscrowd must be 0 or 1, got {crowd!r}")
    if crowd == 1:
        attributes["iscrowd"] = 1
    score = a.get("score")
    if score is not None and not _is_number(score):
        raise InvalidInput(f"score must be a number, got {score!r}")
    value = math.nan if score is None else float(score)
    if not isinstance(a.get("segmentation"), list | dict | None):
        raise InvalidInput("segmentation must be a list of [x1, y1, x2, y2, ...] number lists or an RLE")
    kind = _kind_of(a)
    if kind == "mask":
        seg = a["segmentation"]
        if list(seg.get("size") or []) != [height, width]:
            raise InvalidInput(f"RLE size {seg.get('size')!r} is not the image size [{height}, {width}]")
        window, x0, y0 = image_to_window(seg)
        return Row(item, label, "mask", window=window, offset=(x0, y0), score=value, attributes=attributes)
    if kind == "polygon":
        parts = []
        for part in a["segmentation"]:
            if not isinstance(part, list) or not all(_is_number(v) for v in part):
                raise InvalidInput("segmentation must be a list of [x1, y1, x2, y2, ...] number lists or an RLE")
            if len(part) < 6 or len(part) % 2:
                raise InvalidInput(f"a polygon needs an even number (≥ 6) of coordinates, got {len(part)}")
            parts.append(shapely.Polygon(np.asarray(part, dtype=np.float64).reshape(-1, 2)))
        geom = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
        if len(parts) > 1 and not geom.is_valid and all(p.is_valid for p in parts):
            geom = shapely.union_all(parts)  # COCO unions overlapping parts when it rasterizes them
        return Row(item, label, "polygon", geometry=geom, score=value, attributes=attributes)
    box = a.get("bbox")
    if not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box):
        raise InvalidInput(f"bbox must be 4 numbers [x, y, width, height], got {box!r}")
    x, y, w, h = (float(v) for v in box)
    if kind == "point":
        return Row(item, label, "point", geometry=shapely.Point(x, y), score=value, attributes=attributes)
    if w < 0 or h < 0:
        raise InvalidInput(f"bbox {box!r} has a negative width or height")
    return Row(item, label, "box", box=(x, y, x + w, y + h), score=value, attributes=attributes)
