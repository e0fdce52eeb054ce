"""GeoJSON as QuPath writes and reads it: one FeatureCollection per image, level-0 pixel coordinates, no CRS.

Export mapping (``<image file name>.geojson`` per image, ``<split>/...`` inside a dataset version):
    feature      ``{"type": "Feature", "geometry": ..., "properties": {...}}`` (no ``id``: QuPath makes one)
    objectType   ``annotation``, or the annotation's ``objectType`` attribute (``detection``, ``cell``)
    classification  ``{"name": label, "color": [r, g, b]}`` from the class colour
    polygon      Polygon / MultiPolygon, holes kept
    box          Polygon rectangle (QuPath has no box type; it comes back as a polygon)
    mask         Polygon / MultiPolygon of the mask's pixel outline (exact, holes kept)
    point        Point
    score        ``measurements: {"score": s}`` (QuPath shows it as a measurement)
    attributes   ``name`` → ``properties.name``; the others in ``properties.attributes`` (ignored by QuPath)
    tag          not written (GeoJSON features need a geometry); counted in ``skipped``

``crs=map`` (georeferenced images only, ``gigavision.images.georef``): coordinates in the image's CRS through
its affine transform (9 decimals), and a top-level ``"crs": {"type": "name", "properties": {"name":
"urn:ogc:def:crs:EPSG::<code>"}}`` — the GeoJSON 2008 member GDAL and QGIS read (RFC 7946 drops it and
assumes WGS 84 longitude/latitude). EPSG:4326 is named ``urn:ogc:def:crs:OGC:1.3:CRS84`` because GeoTIFF
stores longitude first. Such files are for GIS tools: import reads level-0 pixels.

Import also reads QuPath's older ``classification.colorRGB`` (packed int), MultiPoint (one point each),
a bare array of features, and a single Feature. LineStrings are rejected (no line kind). Files are scanned
first (``jsonscan``), so a structurally broken file changes nothing, and features over ``max_vertices`` are
rejected without being parsed. Files with more than ``BATCH`` features commit in batches of ``BATCH``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np

from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput, NotFound
from gigavision.formats.exporting import ExportContext
from gigavision.formats.importing import ImportSession, Row, Target
from gigavision.formats.jsonscan import read_features, scan_features
from gigavision.formats.rle import mask_outline
from gigavision.formats.source import AnnotatedImages
from gigavision.formats.text import PIXEL_DIGITS, dumps, hex_to_rgb, num, rgb_to_hex, round_array, sorted_dict
from gigavision.images.georef import Georef

DEFAULT_IMAGES = "none"
MAP_COORDINATES = True  # crs=map: the image's CRS coordinates (ExportContext.georef)
MAP_DIGITS = 9  # decimals of map coordinates: 1 nm in metres, 0.1 mm in degrees
SUFFIXES = (".geojson", ".json")
BATCH = 50_000
OBJECT_TYPES = ("annotation", "detection", "cell", "tile")


# -- export ------------------------------------------------------------------------------------------------
def export(source: AnnotatedImages, ctx: ExportContext) -> None:
    colors = {c["name"]: hex_to_rgb(c.get("color") or "") for c in source.classes()}
    total = len(source)
    for done, entry in enumerate(source.images(), start=1):
        file_name = ctx.file_name(entry)
        folder = f"{entry.split}/" if entry.split else ""
        ctx.place_image(entry, f"{folder}images/{file_name}")
        ann = source.annotations(entry.id)
        georef = ctx.georef(entry)
        with ctx.open_text(f"{folder}{file_name}.geojson").open("w", encoding="utf-8", newline="\n") as out:
            _write_collection(out, ann, colors, ctx, georef)
        ctx.result.images += 1
        ctx.progress(done, total, file_name)


def _write_collection(
    out: IO[str], ann: Annotations, colors: dict[str, list[int] | None], ctx: ExportContext, georef: Georef | None
) -> None:
    out.write('{"type":"FeatureCollection",')
    if georef is not None:
        out.write('"crs":{"type":"name","properties":{"name":' + dumps(_crs_urn(georef)) + "}},")
    out.write('"features":[')
    first = True
    for i in range(len(ann)):
        kind, label = str(ann.kind[i]), str(ann.label[i])
        if kind == "tag":
            ctx.result.skip("tag annotations (GeoJSON features need a geometry)")
            continue
        if label not in colors:
            ctx.result.skip(f"label {label!r} not in the exported classes")
            continue
        geometry = _geometry_text(ann, i, georef)
        attributes = dict(ann.attributes[i])
        object_type = attributes.pop("objectType", "annotation")
        props: dict[str, Any] = {"objectType": object_type if object_type in OBJECT_TYPES else "annotation"}
        name = attributes.pop("name", None)
        if isinstance(name, str):
            props["name"] = name
        classification: dict[str, Any] = {"name": label}
        if colors[label] is not None:
            classification["color"] = colors[label]
        props["classification"] = classification
        score = float(ann.score[i])
        if not math.isnan(score):
            props["measurements"] = {"score": score}
        if attributes:
            props["attributes"] = sorted_dict(attributes)
        out.write(("\n" if first else ",\n") + '{"type":"Feature","geometry":' + geometry)
        out.write(',"properties":' + dumps(props) + "}")
        first = False
        ctx.result.annotations += 1
    out.write("\n]}\n")


def _crs_urn(georef: Georef) -> str:
    """The OGC URN GDAL reads in a GeoJSON ``crs`` member; CRS84 for EPSG:4326 (longitude first, as stored)."""
    if georef.epsg is None:
        raise InvalidInput(f"geojson: crs=map needs an EPSG code to name the CRS, the image has {georef.crs!r}")
    return "urn:ogc:def:crs:OGC:1.3:CRS84" if georef.epsg == 4326 else f"urn:ogc:def:crs:EPSG::{georef.epsg}"


def geometry_of(ann: Annotations, i: int) -> Any:
    """Annotation ``i`` as a simple feature in level-0 pixels: a box as its rectangle (corners in the order
    x0y0, x1y0, x1y1, x0y1), a mask as its exact pixel outline, a polygon or point as stored. Not for tags."""
    import shapely

    kind = str(ann.kind[i])
    if kind == "point":
        return shapely.Point(*(float(v) for v in ann.xyxy[i][:2]))
    if kind == "box":
        x0, y0, x1, y1 = (float(v) for v in ann.xyxy[i])
        return shapely.Polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    return ann.geometry[i] if kind == "polygon" else mask_outline(ann.mask[i], ann.xyxy[i])


def _geometry_text(ann: Annotations, i: int, georef: Georef | None = None) -> str:
    import shapely

    kind = str(ann.kind[i])
    digits = PIXEL_DIGITS
    if georef is not None:
        geom = georef.geometry_to_map(geometry_of(ann, i))
        digits = MAP_DIGITS
    elif kind == "point":
        x, y = ann.xyxy[i][:2]
        return f'{{"type":"Point","coordinates":[{num(x)},{num(y)}]}}'
    elif kind == "box":
        x0, y0, x1, y1 = (num(v) for v in ann.xyxy[i])
        ring = f"[[{x0},{y0}],[{x1},{y0}],[{x1},{y1}],[{x0},{y1}],[{x0},{y0}]]"
        return f'{{"type":"Polygon","coordinates":[{ring}]}}'
    else:
        geom = geometry_of(ann, i)
    if geom.geom_type == "Point":
        return f'{{"type":"Point","coordinates":[{num(geom.x, digits)},{num(geom.y, digits)}]}}'
    if geom.geom_type == "Polygon":
        return f'{{"type":"Polygon","coordinates":{_polygon(geom, digits)}}}'
    parts = ",".join(_polygon(p, digits) for p in shapely.get_parts(geom))
    return f'{{"type":"MultiPolygon","coordinates":[{parts}]}}'


def _polygon(poly: Any, digits: int) -> str:
    return "[" + ",".join(_ring(r, digits) for r in (poly.exterior, *poly.interiors)) + "]"


def _ring(ring: Any, digits: int) -> str:
    coords = round_array(np.asarray(ring.coords)[:, :2], digits)
    return "[" + ",".join(f"[{num(x, digits)},{num(y, digits)}]" for x, y in coords.tolist()) + "]"


# -- import ------------------------------------------------------------------------------------------------
def parse(path: Path, session: ImportSession) -> None:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        root = path
    else:
        files, root = [path], path.parent
    if not files:
        raise InvalidInput(f"{path}: no .geojson or .json file found")
    if session.options.image and len(files) > 1:
        raise InvalidInput("the image option names one image: import one GeoJSON file with it, not a folder")
    scans = {}
    for file in files:  # structure first: a broken file is refused before anything is written
        shown = file.relative_to(root).as_posix()
        try:
            scans[file] = scan_features(file)
        except (InvalidInput, OSError) as exc:
            if len(files) == 1:
                raise InvalidInput(str(exc)) from exc
            session.reject(shown, "file", str(exc))
    total = sum(len(s) for s in scans.values())
    done = 0
    for file, scan in scans.items():
        shown = file.relative_to(root).as_posix()
        session.report.files += 1
        target = _target(file, shown, len(scan), session)
        if target is None:
            done += len(scan)
            continue
        rows: list[Row] = []
        for index, data, vertices in read_features(file, scan, _max_bytes(session.options.max_vertices)):
            item = f"feature {index}"
            for row_or_problem in _rows(data, vertices, item, session):
                if isinstance(row_or_problem, str):
                    session.reject(shown, item, row_or_problem)
                else:
                    rows.append(row_or_problem)
            if len(rows) >= BATCH:
                session.add(target, shown, rows)
                rows = []
            done += 1
            if done % 1000 == 0:
                session.progress(done, total, shown)
        session.add(target, shown, rows)
        session.progress(done, total, shown)


def _max_bytes(max_vertices: int) -> int:
    return 128 * max_vertices + (1 << 20)


def _target(file: Path, shown: str, features: int, session: ImportSession) -> Target | None:
    if session.options.image:
        return _explicit_image(session.options.image, shown, features, session)
    name = file.name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    search = [file.parent, file.parent / "images"]
    if PurePosixPath(name).suffix:  # "slide.svs.geojson": the image's file name
        target = session.resolve(name, shown, search=search, annotations=features)
    else:  # "slide.geojson": any image file called slide.*
        target = session.resolve(name, shown, search=search, stems=True, annotations=features)
    return target


def _explicit_image(ref: str, shown: str, features: int, session: ImportSession) -> Target | None:
    """The ``image`` option: an image id of the workspace or a unique prefix of one (``Workspace.find_image``;
    a prefix that fits several images is an error listing them), else a name looked up like any reference."""
    from gigavision.store.catalog import IMAGE_ID
    from gigavision.store.refs import hex_prefix

    if IMAGE_ID.match(ref) or hex_prefix(ref, len_id=64):
        try:
            return session.image(session.ws.find_image(ref))
        except NotFound:
            pass
    return session.resolve(ref, shown, annotations=features)


def _rows(data: bytes | None, vertices: int, item: str, session: ImportSession) -> Iterator[Row | str]:
    import shapely

    cap = session.options.max_vertices
    if data is None or vertices > cap + 16:  # +16: a few numeric arrays in properties (colour) also count
        yield f"geometry has about {vertices} vertices, more than max_vertices {cap}; not parsed"
        return
    try:
        feature = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        yield f"not valid JSON: {exc}"
        return
    if not isinstance(feature, dict):
        yield "a feature must be a JSON object"
        return
    if feature.get("type") == "Feature":
        geometry, props = feature.get("geometry"), feature.get("properties") or {}
    elif feature.get("type") in ("Polygon", "MultiPolygon", "Point", "MultiPoint"):
        geometry, props = feature, {}
    else:
        yield f"not a GeoJSON Feature (type {feature.get('type')!r})"
        return
    if not isinstance(props, dict):
        yield "properties must be an object"
        return
    if not isinstance(geometry, dict):
        yield "a feature needs a geometry"
        return
    gtype = geometry.get("type")
    if gtype not in ("Polygon", "MultiPolygon", "Point", "MultiPoint"):
        yield f"{gtype} geometries are not supported (polygons and points only)"
        return
    try:
        shape = shapely.geometry.shape(geometry)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, shapely.errors.GEOSException) as exc:
        yield f"invalid {gtype}: {exc}"
        return
    try:
        label, attributes, score = _properties(props, session.options.default_label)
    except InvalidInput as exc:
        yield str(exc)
        return
    if _other_measurements(props.get("measurements")):
        session.report.note(
            "GeoJSON measurements other than 'score' (e.g. QuPath's cell measurements) are not imported"
        )
    kind = "polygon" if gtype in ("Polygon", "MultiPolygon") else "point"
    session.declare_class(label, kind, class_color(props))
    if kind == "polygon":
        yield Row(item, label, "polygon", geometry=shape, score=score, attributes=attributes)
    else:
        for j, point in enumerate(shapely.get_parts(shape)):
            sub = item if gtype == "Point" else f"{item} point {j}"
            yield Row(sub, label, "point", geometry=point, score=score, attributes=dict(attributes))


def _properties(props: dict[str, Any], default_label: str) -> tuple[str, dict[str, Any], float]:
    label = default_label
    cls = props.get("classification")
    if isinstance(cls, dict) and isinstance(cls.get("name"), str) and cls["name"]:
        label = cls["name"]
    elif isinstance(cls, str) and cls:
        label = cls
    attributes: dict[str, Any] = {}
    extra = props.get("attributes")
    if isinstance(extra, dict):
        for k, v in extra.items():
            if isinstance(v, str | int | float | bool):
                attributes[str(k)] = v
    object_type = props.get("objectType")
    if object_type in OBJECT_TYPES and object_type != "annotation":
        attributes["objectType"] = object_type
    if isinstance(props.get("name"), str):
        attributes["name"] = props["name"]
    score = math.nan
    measurements = props.get("measurements")
    if isinstance(measurements, dict) and _number(measurements.get("score")):
        score = float(measurements["score"])
    elif isinstance(measurements, list):
        for m in measurements:
            if isinstance(m, dict) and m.get("name") == "score" and _number(m.get("value")):
                score = float(m["value"])
    return label, attributes, score


def _other_measurements(measurements: Any) -> bool:
    """Whether a feature carries measurements besides ``score`` (they are not kept: reported in a note)."""
    if isinstance(measurements, dict):
        return any(k != "score" for k in measurements)
    if isinstance(measurements, list):
        return any(not (isinstance(m, dict) and m.get("name") == "score") for m in measurements)
    return False


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def class_color(props: dict[str, Any]) -> str | None:
    """The class colour a QuPath feature carries (``color`` [r, g, b] or the older packed ``colorRGB``)."""
    cls = props.get("classification")
    if not isinstance(cls, dict):
        return None
    if isinstance(cls.get("color"), list):
        return rgb_to_hex(cls["color"])
    packed = cls.get("colorRGB")
    if isinstance(packed, int) and not isinstance(packed, bool):
        return rgb_to_hex([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255])
    return None
