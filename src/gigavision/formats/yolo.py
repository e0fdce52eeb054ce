"""YOLO in the layouts tools write: Ultralytics (``data.yaml``; ``images/<split>/`` + ``labels/<split>/`` or
Roboflow's ``<split>/images/`` + ``<split>/labels/``), YOLO 1.1 / darknet (``obj.names``, ``obj.data``,
``train.txt``, ``obj_<split>_data/`` with each image beside its label file: CVAT's "YOLO 1.1"), and ``images/`` +
``labels/`` with ``classes.txt`` (labelImg).

Export mapping (``--layout ultralytics``, the default):
    data.yaml    ``train`` / ``val`` / ``test`` (every split of a dataset version: ``images/<split>``; outside
                 one, ``images`` for both train and val), ``nc``, ``names`` {index: name}: the classes in schema
                 order except tag and point classes (PyYAML ``safe_dump``; read with ``safe_load``)
    detect       ``class cx cy w h``, normalised by the image size; polygons and masks as their bounding box
    segment      ``class x1 y1 x2 y2 ...``, normalised; boxes as their 4 corners; polygons by their outer
                 rings (YOLO has no holes: dropped and counted); masks by their pixel outline
    obb          ``class x1 y1 x2 y2 x3 y3 x4 y4`` (Ultralytics oriented boxes), normalised: boxes by their
                 corners, 4-vertex polygons by their vertices, other shapes by their minimum rotated rectangle
                 (counted in ``converted``)
    numbers      rounded to 8 decimals, shortest spelling
    point, tag   not written (counted in ``skipped``)
    images       copied (default) or linked into ``images/<split>/``; every image gets a label file, empty
                 for images without objects (background images)
``--layout darknet`` writes CVAT's YOLO 1.1 instead: ``obj.names``, ``obj.data`` (``classes``, ``train``,
``valid``, ``names``, ``backup``), ``train.txt`` / ``valid.txt`` / ``test.txt`` listing
``data/obj_<split>_data/<image>`` (``train`` outside a dataset version), each label file beside its image.

Import pairs each image with its label file by Ultralytics' rule (the last ``images`` folder of its path becomes
``labels``, the extension ``.txt``), else the ``.txt`` beside it (darknet); an image without a label file is
ingested with no annotations, a label file without an image is looked up by its stem under ``--images`` and in
the workspace. The task comes from the rows: 4 numbers are boxes; more are polygons; when every row has 8
(Ultralytics OBB) they are oriented boxes, imported as 4-vertex polygons. The split an image is in (darknet's
``train.txt`` / ``valid.txt``, else a folder named ``train``, ``val``, ``valid``, ``test``, ``train2017`` or
``obj_train_data`` on its path) becomes its ``split`` metadata. Paths that leave the folder (absolute, ``..``,
``path`` in data.yaml) are never followed.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.formats.exporting import ExportContext
from gigavision.formats.importing import IMAGE_SUFFIXES, ImportSession, Row, Target
from gigavision.formats.rle import mask_outline
from gigavision.formats.source import AnnotatedImages, ImageEntry
from gigavision.formats.text import UNIT_DIGITS, num

DEFAULT_IMAGES = "copy"
MAX_YAML_BYTES = 1 << 20
MAX_LABEL_BYTES = 256 * 1024**2


# -- export ------------------------------------------------------------------------------------------------
def export(source: AnnotatedImages, ctx: ExportContext) -> None:
    names = [c["name"] for c in source.classes() if c["kind"] not in ("tag", "point")]
    index = {n: i for i, n in enumerate(names)}
    darknet = ctx.options.layout == "darknet"
    splits: dict[str, list[str]] = {}  # split -> image paths (darknet lists), in export order
    total = len(source)
    for done, entry in enumerate(source.images(), start=1):
        file_name = ctx.file_name(entry)
        if darknet:
            folder = f"obj_{entry.split or 'train'}_data/"
            image_path, label_path = folder + file_name, folder + f"{Path(file_name).stem}.txt"
        else:
            sub = f"{entry.split}/" if entry.split else ""
            image_path, label_path = f"images/{sub}{file_name}", f"labels/{sub}{Path(file_name).stem}.txt"
        splits.setdefault(entry.split or ("train" if darknet else ""), []).append(image_path)
        ctx.place_image(entry, image_path)
        lines = _lines(source.annotations(entry.id), entry, index, ctx)
        ctx.open_text(label_path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        ctx.result.images += 1
        ctx.progress(done, total, file_name)
    if darknet:
        _write_darknet(ctx, names, splits)
    else:
        ctx.open_text("data.yaml").write_text(_data_yaml(names, [s for s in splits if s]), encoding="utf-8")


def _write_darknet(ctx: ExportContext, names: list[str], splits: dict[str, list[str]]) -> None:
    """darknet's files: ``obj.names``, the image lists (``valid.txt`` for the val split, as darknet names
    it), and ``obj.data`` pointing at them under ``data/`` (where darknet expects the folder to be)."""
    ctx.open_text("obj.names").write_text("".join(n + "\n" for n in names), encoding="utf-8")
    lines = [f"classes = {len(names)}"]
    for split in sorted(splits or {"train": []}, key=lambda s: (DARKNET_ORDER.get(s, 3), s)):
        list_name = "valid" if split == "val" else split
        paths = splits.get(split, [])
        ctx.open_text(f"{list_name}.txt").write_text("".join(f"data/{p}\n" for p in paths), encoding="utf-8")
        lines.append(f"{list_name} = data/{list_name}.txt")
    lines += ["names = data/obj.names", "backup = backup/"]
    ctx.open_text("obj.data").write_text("\n".join(lines) + "\n", encoding="utf-8")


DARKNET_ORDER = {"train": 0, "val": 1, "test": 2}


def _data_yaml(names: list[str], splits: list[str]) -> str:
    import yaml

    data: dict[str, Any] = {}
    if splits:
        for split in sorted(splits):
            data[split] = f"images/{split}"
        data.setdefault("train", f"images/{sorted(splits)[0]}")
        data.setdefault("val", data.get("valid") or data.get("validation") or data["train"])
    else:
        data.update({"train": "images", "val": "images"})
    data["nc"] = len(names)
    data["names"] = dict(enumerate(names))
    text: str = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return text


def _lines(ann: Annotations, entry: ImageEntry, index: dict[str, int], ctx: ExportContext) -> list[str]:
    import shapely

    segment, obb = ctx.options.task == "segment", ctx.options.task == "obb"
    w, h = float(entry.width), float(entry.height)
    out: list[str] = []
    for i in range(len(ann)):
        kind, label = str(ann.kind[i]), str(ann.label[i])
        if kind in ("point", "tag"):
            ctx.result.skip(f"{kind} annotations (YOLO holds boxes and polygons)")
            continue
        if label not in index:
            ctx.result.skip(f"label {label!r} not in the exported classes")
            continue
        c = index[label]
        x0, y0, x1, y1 = (float(v) for v in ann.xyxy[i])
        if obb:
            out.append(f"{c} " + " ".join(num(v, UNIT_DIGITS) for v in (_corners(ann, i, w, h, ctx) / (w, h)).ravel()))
            ctx.result.annotations += 1
            continue
        if not segment:
            if kind != "box":
                ctx.result.converted[f"{kind} written as its bounding box"] += 1
            cx, cy, bw, bh = (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h
            out.append(f"{c} " + " ".join(num(v, UNIT_DIGITS) for v in (cx, cy, bw, bh)))
            ctx.result.annotations += 1
            continue
        if kind == "box":
            rings = [np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])]
        else:
            geom = ann.geometry[i] if kind == "polygon" else mask_outline(ann.mask[i], ann.xyxy[i])
            if kind == "mask":
                ctx.result.converted["mask written as its outline polygon"] += 1
            parts = list(shapely.get_parts(geom))
            holes = sum(len(p.interiors) for p in parts)
            if holes:
                ctx.result.converted["polygon holes dropped (YOLO has none)"] += holes
            rings = [np.asarray(p.exterior.coords)[:-1, :2] for p in parts]
        for ring in rings:
            coords = (ring / (w, h)).ravel().tolist()
            out.append(f"{c} " + " ".join(num(v, UNIT_DIGITS) for v in coords))
            ctx.result.annotations += 1
    return out


def _corners(ann: Annotations, i: int, width: float, height: float, ctx: ExportContext) -> np.ndarray:
    """The 4 corners (4 × 2, pixels) of annotation ``i`` as an oriented box: a box's own, a 4-vertex polygon's
    vertices (what an OBB import made), otherwise the minimum rotated rectangle (counted)."""
    import shapely

    kind = str(ann.kind[i])
    x0, y0, x1, y1 = (float(v) for v in ann.xyxy[i])
    if kind == "box":
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    geom = ann.geometry[i] if kind == "polygon" else mask_outline(ann.mask[i], ann.xyxy[i])
    if isinstance(geom, shapely.Polygon) and len(geom.exterior.coords) == 5 and not geom.interiors:
        return np.asarray(geom.exterior.coords)[:4, :2]
    ctx.result.converted[f"{kind} written as its minimum rotated rectangle (inside the image)"] += 1
    rect = shapely.oriented_envelope(geom)
    if not isinstance(rect, shapely.Polygon):  # a degenerate shape (a line): its bounding box
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    # a rectangle turned around a shape at the border reaches outside; OBB rows must stay in 0..1
    corners: np.ndarray = np.clip(np.asarray(rect.exterior.coords)[:4, :2], 0, (width, height))
    return corners


# -- import ------------------------------------------------------------------------------------------------
def parse(path: Path, session: ImportSession) -> None:
    if not path.is_dir():
        raise InvalidInput(f"{path}: a YOLO import is a folder (or .zip) with data.yaml or obj.names, and labels")
    names, names_file = _names(path)
    for n in names:
        if not n:
            raise InvalidInput(f"{names_file}: class names must not be empty")
    images = sorted(
        p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )
    not_labels = _not_label_files(path, names_file)
    labels = {
        p.resolve(): p
        for p in sorted(path.rglob("*.txt"))
        if p.is_file() and not p.name.startswith(".") and p.resolve() not in not_labels
    }
    listed = _darknet_lists(path, session)
    pairs: list[tuple[Path | None, Path | None]] = []
    for picture in images:
        label = _label_file(picture, labels)
        if label is not None:
            labels.pop(label.resolve())
        pairs.append((picture, label))
    # label files without an image in the folder: those in a labels/ or obj_*_data/ folder (their image is
    # looked up by stem); any other .txt (Roboflow's README.roboflow.txt, notes) is not a label file
    orphans = [f for f in labels.values() if _in_label_folder(f.relative_to(path))]
    pairs += [(None, label) for label in orphans]
    others = sorted(f.relative_to(path).as_posix() for f in labels.values() if f not in orphans)
    if others:
        shown_others = ", ".join(others[:5]) + (", …" if len(others) > 5 else "")
        session.report.note(f"{len(others)} .txt file(s) beside no image and outside labels/ not read: {shown_others}")
    task = _task_of([label for _, label in pairs if label is not None])
    for n in names:
        session.declare_class(n, "box" if task == "detect" else "polygon")
    oriented = 0
    for done, (image, label_file) in enumerate(pairs, start=1):
        shown = (label_file or image or path).relative_to(path).as_posix()
        lines = _read_lines(label_file, shown, session) if label_file else []
        if lines is None:
            continue
        session.report.files += 1
        if image is not None:
            target = session.resolve(image.name, shown, path=image, annotations=len(lines))
            session.hint_split(target, listed.get(image.resolve()) or _split_on_path(image.relative_to(path)))
        else:
            assert label_file is not None
            target = session.resolve(label_file.stem, shown, search=[path], stems=True, annotations=len(lines))
        if target is not None:
            rows = []
            for number, line in lines:
                row = _row(line, number, names, names_file, target, shown, session)
                if row is not None:
                    rows.append(row)
            oriented += len(rows) if task == "obb" else 0
            session.add(target, shown, rows)
        session.progress(done, len(pairs), shown)
    if oriented:
        session.report.note(f"{oriented} oriented box(es) (x1 y1 ... x4 y4 rows) imported as 4-vertex polygons")


def _label_file(image: Path, labels: dict[Path, Path]) -> Path | None:
    """The label file of ``image``: Ultralytics' rule (the last ``images`` folder on its path becomes
    ``labels``, the extension ``.txt``), else the ``.txt`` beside it (darknet, labelImg)."""
    parts = image.parts
    candidates = []
    if "images" in parts:
        at = len(parts) - 1 - parts[::-1].index("images")
        candidates.append(Path(*parts[:at], "labels", *parts[at + 1 :]).with_suffix(".txt"))
    candidates.append(image.with_suffix(".txt"))
    for candidate in candidates:
        found = labels.get(candidate.resolve())
        if found is not None:
            return found
    return None


def _in_label_folder(relative: Path) -> bool:
    return "labels" in relative.parts[:-1] or any(part.startswith("obj_") for part in relative.parts[:-1])


SPLIT_FOLDER = re.compile(r"^(?:obj_)?(train|val|valid|validation|test|training|testing)(?:20\d\d)?(?:_data)?$", re.I)


def _split_on_path(relative: Path) -> str | None:
    """The split a folder on the image's path names (``images/val/``, ``valid/images/``, ``obj_train_data/``,
    ``train2017/``): the nearest one to the file."""
    for part in reversed(relative.parts[:-1]):
        m = SPLIT_FOLDER.match(part)
        if m:
            return m.group(1)
    return None


def _darknet_lists(root: Path, session: ImportSession) -> dict[Path, str]:
    """image file -> split, from darknet's ``train.txt`` / ``valid.txt`` / ``test.txt`` (one image path a line,
    relative to the folder darknet runs in: ``data/obj_train_data/a.jpg``). An entry that leaves the folder
    (absolute, ``..``) or names no image in it is rejected, line by line."""
    out: dict[Path, str] = {}
    top = root.resolve()
    for list_name in DARKNET_LISTS:
        file = root / f"{list_name}.txt"
        if not file.is_file():
            continue
        lines = _read_lines(file, file.name, session)
        for number, line in lines or []:
            entry = line.strip().replace("\\", "/")
            rel = PurePosixPath(entry)
            if rel.is_absolute() or re.match(r"^[A-Za-z]:", entry) or ".." in rel.parts:
                session.reject(file.name, f"line {number}", f"{entry[:200]!r} leaves the folder: not followed")
                continue
            if rel.parts and rel.parts[0] == "data" and not (root / "data").is_dir():
                rel = PurePosixPath(*rel.parts[1:])  # darknet's data/ folder is this folder
            found = (root / rel).resolve()
            if not (found.is_relative_to(top) and found.is_file()):
                session.reject(file.name, f"line {number}", f"no image {rel.as_posix()[:200]} in the folder")
                continue
            out[found] = list_name
    return out


def _task_of(files: list[Path]) -> str:
    """detect, segment or obb, from the first rows of the label files: 4 numbers after the class are a box,
    more a polygon; when every row read has exactly 8, oriented boxes."""
    counts: set[int] = set()
    read = 0
    for f in files:
        with f.open("rb") as fh:
            for raw in fh:
                tokens = raw.split()
                if tokens:
                    counts.add(len(tokens) - 1)
                    read += 1
                if read >= TASK_ROWS:
                    break
        if read >= TASK_ROWS:
            break
    if counts == {8}:
        return "obb"
    return "segment" if counts - {4} else "detect"


TASK_ROWS = 10_000  # rows read to decide the task


NAMES_FILES = ("obj.names", "classes.txt")  # YOLO 1.1 / darknet (CVAT's "YOLO 1.1" export), labelImg


def _names(root: Path) -> tuple[list[str], str]:
    """The class names and the file they come from: an Ultralytics ``data.yaml`` (or another YAML), else the
    darknet ``obj.data``'s ``names =`` file, else ``obj.names`` / ``classes.txt`` (one name per line) in the
    folder or its ``labels/``. Paths in them never leave the folder."""
    import yaml

    candidates = [root / "data.yaml", root / "dataset.yaml", *sorted(root.glob("*.yaml")), *sorted(root.glob("*.yml"))]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        text_file = _darknet_names_file(root)
        if text_file is None:
            raise InvalidInput(
                f"{root}: no class names: YOLO needs a data.yaml (Ultralytics) or an obj.names / classes.txt"
                " (YOLO 1.1, darknet)"
            )
        return _text_names(text_file), text_file.name
    try:
        if found.stat().st_size > MAX_YAML_BYTES:
            raise InvalidInput(f"{found.name}: larger than {MAX_YAML_BYTES} bytes")
        data = yaml.safe_load(found.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())  # PyYAML's message spans lines; errors are one line
        raise InvalidInput(f"{found.name}: not a readable YAML file ({reason})") from exc
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        if sorted(names) != list(range(len(names))):
            raise InvalidInput(f"{found.name}: names keys must be 0..{len(names) - 1}")
        names = [names[k] for k in range(len(names))]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InvalidInput(f"{found.name}: 'names' must be a list of class names or a {{index: name}} mapping")
    return list(names), found.name


DARKNET_LISTS = ("train", "valid", "val", "test")  # darknet's image lists (obj.data: train = data/train.txt)


def _not_label_files(root: Path, names_file: str) -> set[Path]:
    """The ``.txt`` files of a YOLO folder that hold no boxes: the class names file and darknet's image lists
    at the top (``train.txt`` …), which name images rather than describe one."""
    out = {(folder / names_file).resolve() for folder in (root, root / "labels")}
    out |= {(root / f"{name}.txt").resolve() for name in DARKNET_LISTS}
    return out


def _darknet_names_file(root: Path) -> Path | None:
    """``obj.data``'s ``names = data/obj.names`` (darknet paths start at its ``data/`` folder: only the file
    name is looked up here), else an ``obj.names`` / ``classes.txt`` in the folder or its ``labels/``."""
    wanted = list(NAMES_FILES)
    data = root / "obj.data"
    if data.is_file() and data.stat().st_size <= MAX_YAML_BYTES:
        for line in data.read_text(encoding="utf-8-sig", errors="replace").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "names" and value.strip():
                wanted.insert(0, Path(value.strip().replace("\\", "/")).name)
    for name in wanted:
        for folder in (root, root / "labels"):
            candidate = (folder / name).resolve()
            if candidate.is_relative_to(root.resolve()) and candidate.is_file():
                return candidate
    return None


def _text_names(file: Path) -> list[str]:
    try:
        if file.stat().st_size > MAX_YAML_BYTES:
            raise InvalidInput(f"{file.name}: larger than {MAX_YAML_BYTES} bytes")
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{file.name}: not a readable list of class names ({exc})") from exc
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise InvalidInput(f"{file.name}: no class names in it")
    return names


def _read_lines(file: Path, shown: str, session: ImportSession) -> list[tuple[int, str]] | None:
    try:
        if file.stat().st_size > MAX_LABEL_BYTES:
            raise InvalidInput(f"larger than {MAX_LABEL_BYTES} bytes")
        text = file.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows tools) is not part of line 1
    except (OSError, UnicodeDecodeError, InvalidInput) as exc:
        session.reject(shown, "file", f"cannot read the label file: {exc}")
        return None
    return [(i, line) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _row(
    line: str, number: int, names: list[str], names_file: str, target: Target, shown: str, session: ImportSession
) -> Row | None:
    import shapely

    item = f"line {number}"
    tokens = line.split()
    count = len(tokens) - 1
    if count != 4 and (count < 6 or count % 2):
        session.reject(
            shown,
            item,
            f"{count} numbers after the class: expected 4 (cx cy w h) or an even count ≥ 6 (x1 y1 x2 y2 x3 y3 ...)",
        )
        return None
    try:
        cls_value = float(tokens[0])
        values = np.asarray([float(t) for t in tokens[1:]], dtype=np.float64)
    except ValueError:
        session.reject(shown, item, "class and coordinates must be numbers")
        return None
    if not cls_value.is_integer() or not 0 <= cls_value < len(names):
        session.reject(shown, item, f"class {tokens[0]} is not an index of the {len(names)} names in {names_file}")
        return None
    label = names[int(cls_value)]
    if not np.isfinite(values).all():
        session.reject(shown, item, "NaN or infinite coordinates")
        return None
    if (values < 0).any():
        session.reject(shown, item, "negative coordinates")
        return None
    w, h = target.width, target.height
    if count == 4:
        cx, cy, bw, bh = values.tolist()
        x0, y0, x1, y1 = (cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h
        noise = 1e-9 * max(w, h)  # float noise of (cx ± w/2)·W at the image edges
        if min(x0, y0) < -noise or x1 > w + noise or y1 > h + noise:
            session.reject(shown, item, "box extends outside the image (normalised coordinates beyond 0..1)")
            return None
        box = (max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h)))
        return Row(item, label, "box", box=box)
    if (values > 1).any():
        session.reject(shown, item, "polygon extends outside the image (normalised coordinates above 1)")
        return None
    ring = values.reshape(-1, 2) * (w, h)
    return Row(item, label, "polygon", geometry=shapely.Polygon(ring))
