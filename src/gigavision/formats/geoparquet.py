"""GeoParquet 1.1 (``annotations.parquet``): one row per annotation, for GIS tools, pandas and DuckDB.

Export mapping (one file for every image and split; images in ``images/`` when asked for):
    geometry     WKB, the encoding every GeoParquet reader takes (GDAL/QGIS, DuckDB, geopandas): box → Polygon
                 rectangle, polygon → Polygon / MultiPolygon (holes kept), point → Point, mask → Polygon /
                 MultiPolygon of its exact pixel outline (counted in ``converted``; re-imported as the mask)
    bbox         struct {xmin, ymin, xmax, ymax} of the geometry: GeoParquet 1.1's bbox ``covering``, so
                 readers filter row groups on column statistics without decoding WKB
    image, image_id, split, width, height   the image's export file name, sha256 id, split (null outside a
                 dataset version) and level-0 size
    label, kind, score (null: none), status, source, attributes (canonical JSON text; null: none)
    tag          not written (a row is a geometry, as in the registry's kinds); counted in ``skipped``

Coordinates (the ``crs`` export option):
    image  level-0 pixels (x right, y down, 1e-6 px), ``"crs": null`` in the metadata: GeoParquet's "no CRS"
           (an absent ``crs`` would mean OGC:CRS84 longitude/latitude)
    map    the image's CRS through its affine transform (``gigavision.images.georef``), ``crs`` as PROJJSON;
           one geometry column has one CRS, so every image must share it (else the export fails, naming
           both). ``pixel_geometry`` keeps the level-0 WKB (a plain binary column, so GIS tools show one
           layer), which is what import reads back.

File metadata ``geo``: version 1.1.0, primary_column, and for ``geometry``: encoding, geometry_types (those
present, sorted), bbox, crs, covering. Rows stream through ``ParquetWriter``, a row group per ``ROW_GROUP``
rows; ``geo`` is added to the footer at the end (types and extent are known then) with ``store_schema=False``,
so pyarrow readers take the schema metadata from the footer's key-value pairs, ``geo`` included. The bytes
depend only on the annotations and the pyarrow version (the footer's ``created_by``); no timestamps.

Import reads this file, or any GeoParquet with ``image`` and ``label`` text columns and a WKB geometry in
level-0 pixels (``kind``, ``score``, ``status``, ``source``, ``attributes``, ``width``/``height``, ``image_id``
and ``split`` are used when present). A geometry in a map CRS is refused (gigavision stores pixels) unless the
file has ``pixel_geometry``. Rows are matched to images by ``image_id`` (a workspace image), else by name.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gigavision.annotations import STATUSES
from gigavision.errors import InvalidInput, NotFound
from gigavision.formats.exporting import ExportContext
from gigavision.formats.geojson import geometry_of
from gigavision.formats.importing import ImportSession, Row, Target
from gigavision.formats.rle import rasterize_polygon
from gigavision.formats.source import AnnotatedImages, ImageEntry
from gigavision.formats.text import dumps, round_array, sorted_dict
from gigavision.images.georef import Georef

if TYPE_CHECKING:
    import pyarrow as pa

DEFAULT_IMAGES = "none"
MAP_COORDINATES = True  # crs=map: the image's CRS coordinates (ExportContext.georef)
FILE = "annotations.parquet"
ROW_GROUP = 65_536
GEO_VERSION = "1.1.0"
KINDS = ("box", "polygon", "point", "mask")
_TYPES = {0: "Point", 3: "Polygon", 6: "MultiPolygon"}  # shapely type ids of what the export writes


# -- export ------------------------------------------------------------------------------------------------
def _schema(with_pixels: bool) -> pa.Schema:
    import pyarrow as pa

    text = pa.string()
    bbox = pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])
    fields = [
        pa.field("image", text, nullable=False),
        pa.field("image_id", text, nullable=False),
        pa.field("split", text),
        pa.field("width", pa.int64(), nullable=False),
        pa.field("height", pa.int64(), nullable=False),
        pa.field("label", text, nullable=False),
        pa.field("kind", text, nullable=False),
        pa.field("score", pa.float64()),
        pa.field("status", text, nullable=False),
        pa.field("source", text, nullable=False),
        pa.field("attributes", text),
        pa.field("geometry", pa.binary(), nullable=False),
        pa.field("bbox", bbox, nullable=False),
    ]
    if with_pixels:
        fields.append(pa.field("pixel_geometry", pa.binary(), nullable=False))
    return pa.schema(fields)


class _Writer:
    """Rows buffered per column, flushed as one row group every ``ROW_GROUP`` rows; extent and types tracked."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        import pyarrow.parquet as pq

        self.schema = schema
        self.writer = pq.ParquetWriter(path, schema, store_schema=False)
        self.columns: dict[str, list[Any]] = {name: [] for name in schema.names}
        self.types: set[str] = set()
        self.extent = [math.inf, math.inf, -math.inf, -math.inf]

    def add(self, image: dict[str, Any], rows: list[dict[str, Any]], geoms: Any, pixels: Any | None) -> None:
        import shapely

        bounds = shapely.bounds(geoms)
        self.types.update(_TYPES[t] for t in shapely.get_type_id(geoms).tolist())
        self.extent = [
            min(self.extent[0], float(bounds[:, 0].min())),
            min(self.extent[1], float(bounds[:, 1].min())),
            max(self.extent[2], float(bounds[:, 2].max())),
            max(self.extent[3], float(bounds[:, 3].max())),
        ]
        wkb = shapely.to_wkb(geoms, byte_order=1, output_dimension=2)  # little-endian: the same bytes everywhere
        extra = shapely.to_wkb(pixels, byte_order=1, output_dimension=2) if pixels is not None else None
        for j, row in enumerate(rows):
            for key, value in image.items():
                self.columns[key].append(value)
            for key, value in row.items():
                self.columns[key].append(value)
            self.columns["geometry"].append(wkb[j])
            x0, y0, x1, y1 = bounds[j].tolist()
            self.columns["bbox"].append({"xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1})
            if extra is not None:
                self.columns["pixel_geometry"].append(extra[j])
            if len(self.columns["geometry"]) >= ROW_GROUP:
                self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.columns["geometry"]:
            self.writer.write_table(pa.table(self.columns, schema=self.schema), row_group_size=ROW_GROUP)
            self.columns = {name: [] for name in self.schema.names}

    def close(self, crs: dict[str, Any] | None) -> None:
        self.flush()
        column: dict[str, Any] = {"encoding": "WKB", "geometry_types": sorted(self.types)}
        if math.isfinite(self.extent[0]):
            column["bbox"] = self.extent
        column["crs"] = crs  # written even when null: an absent crs means OGC:CRS84 longitude/latitude
        column["covering"] = {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}
        geo = {"version": GEO_VERSION, "primary_column": "geometry", "columns": {"geometry": column}}
        self.writer.add_key_value_metadata({"geo": json.dumps(geo, separators=(",", ":"))})
        self.writer.close()


def export(source: AnnotatedImages, ctx: ExportContext) -> None:
    import shapely

    classes = {c["name"] for c in source.classes()}
    writer = _Writer(ctx.open_text(FILE), _schema(ctx.options.crs == "map"))
    first: tuple[ImageEntry, Georef] | None = None
    crs: dict[str, Any] | None = None  # PROJJSON of the one CRS of a crs=map export
    try:
        total = len(source)
        for done, entry in enumerate(source.images(), start=1):
            file_name = ctx.file_name(entry)
            ctx.place_image(entry, f"images/{file_name}")
            georef = ctx.georef(entry)
            if georef is not None and first is None:
                first, crs = (entry, georef), georef.projjson()
            elif georef is not None and first is not None and georef.crs != first[1].crs:
                raise InvalidInput(
                    f"geoparquet: crs=map writes one CRS per file; image {first[0].name} is in {first[1].crs}, "
                    f"{entry.name} in {georef.crs}: export them separately or use crs=image"
                )
            image: dict[str, Any] = {"image": file_name, "image_id": entry.id, "split": entry.split}
            image.update(width=entry.width, height=entry.height)
            for rows, shapes in _chunks(source, entry, classes, ctx):
                pixels = shapely.transform(np.array(shapes, dtype=object), round_array)
                if georef is None:
                    writer.add(image, rows, pixels, None)
                else:
                    writer.add(image, rows, georef.geometry_to_map(pixels), pixels)
            ctx.result.images += 1
            ctx.progress(done, total, file_name)
    except BaseException:
        with contextlib.suppress(Exception):  # the temp folder goes; the original error is the one to show
            writer.writer.close()
        raise
    writer.close(crs)


def _chunks(
    source: AnnotatedImages, entry: ImageEntry, classes: set[str], ctx: ExportContext
) -> Iterator[tuple[list[dict[str, Any]], list[Any]]]:
    """The image's rows and pixel geometries, ``ROW_GROUP`` at a time (an image may hold millions)."""
    ann = source.annotations(entry.id)
    rows: list[dict[str, Any]] = []
    shapes: list[Any] = []
    for i in range(len(ann)):
        kind, label = str(ann.kind[i]), str(ann.label[i])
        if kind == "tag":
            ctx.result.skip("tag annotations (GeoParquet rows are geometries)")
            continue
        if label not in classes:
            ctx.result.skip(f"label {label!r} not in the exported classes")
            continue
        if kind == "mask":
            ctx.result.converted["mask written as its outline polygon"] += 1
        score = float(ann.score[i])
        attributes = dict(ann.attributes[i])
        rows.append(
            {
                "label": label,
                "kind": kind,
                "score": None if math.isnan(score) else score,
                "status": str(ann.status[i]),
                "source": str(ann.source[i]),
                "attributes": dumps(sorted_dict(attributes)) if attributes else None,
            }
        )
        shapes.append(geometry_of(ann, i))
        ctx.result.annotations += 1
        if len(rows) == ROW_GROUP:
            yield rows, shapes
            rows, shapes = [], []
    if rows:
        yield rows, shapes


# -- import ------------------------------------------------------------------------------------------------
def parse(path: Path, session: ImportSession) -> None:
    files = sorted(p for p in path.rglob("*.parquet") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise InvalidInput(f"{path}: no .parquet file found")
    root = path if path.is_dir() else path.parent
    for file in files:
        shown = file.relative_to(root).as_posix()
        try:
            reader, geometry = _open(file, shown, session)
        except InvalidInput as exc:
            if len(files) == 1:
                raise
            session.reject(shown, "file", str(exc))
            continue
        session.report.files += 1
        _import_file(reader, geometry, file, shown, session)


def _open(file: Path, shown: str, session: ImportSession) -> tuple[Any, str]:
    """The file's reader and the column with level-0 pixel WKB; ``InvalidInput`` saying why there is none."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(file)
        meta = reader.metadata.metadata or {}  # the footer's key-value pairs (``geo`` may be absent from ARROW:schema)
        geo = json.loads(meta[b"geo"]) if b"geo" in meta else None
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise InvalidInput(f"{shown}: not a readable GeoParquet file ({exc})") from exc
    names = reader.schema_arrow.names
    geometry = "geometry"
    if geo is None:
        session.report.note(f"{shown}: no 'geo' metadata; its geometry column was read as WKB in level-0 pixels")
    else:
        try:
            geometry = str(geo["primary_column"])
            spec = geo["columns"][geometry]
            encoding, crs = spec["encoding"], spec.get("crs", "OGC:CRS84")  # absent crs: longitude/latitude
        except (KeyError, TypeError) as exc:
            raise InvalidInput(f"{shown}: malformed 'geo' metadata (no {exc})") from exc
        if encoding != "WKB":
            raise InvalidInput(f"{shown}: geometry encoding {encoding!r}; only WKB is read")
        if crs is not None:
            if "pixel_geometry" not in names:
                name = crs.get("name", "a map CRS") if isinstance(crs, dict) else crs
                raise InvalidInput(
                    f"{shown}: geometry is in map coordinates ({name}); gigavision stores level-0 image pixels, "
                    "so import a file exported with crs=image (or one with a pixel_geometry column)"
                )
            geometry = "pixel_geometry"
    for column, kind in (("image", pa.types.is_string), ("label", pa.types.is_string), (geometry, pa.types.is_binary)):
        if column not in names or not kind(reader.schema_arrow.field(column).type):
            what = "binary (WKB)" if column == geometry else "text"
            raise InvalidInput(f"{shown}: needs a {what} column {column!r}")
    return reader, geometry


def _import_file(reader: Any, geometry: str, file: Path, shown: str, session: ImportSession) -> None:
    wanted = ["image", "image_id", "split", "width", "height", "label", "kind", "score", "status", "source"]
    columns = [c for c in [*wanted, "attributes"] if c in reader.schema_arrow.names] + [geometry]
    total = reader.metadata.num_rows
    search = [file.parent, file.parent / "images"]
    index = 0
    run: list[dict[str, Any]] = []
    for batch in reader.iter_batches(batch_size=ROW_GROUP, columns=columns):
        for record in batch.to_pylist():
            if run and (record["image"], record.get("image_id")) != (run[0]["image"], run[0].get("image_id")):
                _add_run(run, index - len(run), geometry, search, shown, session)
                run = []
            run.append(record)
            index += 1
        session.progress(index, total, shown)
    if run:
        _add_run(run, index - len(run), geometry, search, shown, session)


def _add_run(
    records: list[dict[str, Any]], start: int, geometry: str, search: list[Path], shown: str, session: ImportSession
) -> None:
    """Consecutive rows of one image: resolved once, valid rows committed together."""
    head = records[0]
    target = _target(head, search, shown, len(records), session)
    if target is None:
        return
    split = head.get("split")
    session.hint_split(target, split if isinstance(split, str) else None)
    rows: list[Row] = []
    for j, record in enumerate(records):
        item = f"row {start + j}"
        row = _row(record, geometry, item, target, session)
        if isinstance(row, str):
            session.reject(shown, item, row)
        else:
            rows.append(row)
    session.add(target, shown, rows)


def _target(head: dict[str, Any], search: list[Path], shown: str, count: int, session: ImportSession) -> Target | None:
    from gigavision.store.catalog import IMAGE_ID

    image_id = head.get("image_id")
    if isinstance(image_id, str) and IMAGE_ID.match(image_id):
        try:
            return session.image(image_id)  # the same bytes: no name lookup needed
        except NotFound:
            pass
    if not head["image"]:
        session.reject(shown, f"image {head['image']!r}", f"{count} row(s) without an image name")
        return None
    width, height = head.get("width"), head.get("height")
    size = (width, height) if isinstance(width, int) and isinstance(height, int) else None
    return session.resolve(head["image"], shown, search=search, size=size, annotations=count)


def _row(record: dict[str, Any], geometry: str, item: str, target: Target, session: ImportSession) -> Row | str:
    """One record as a ``Row``, or why it cannot be one."""
    import shapely

    label, blob = record["label"], record[geometry]
    if not label:
        return "the label is empty"
    cap = session.options.max_vertices
    if blob is None:
        return "no geometry (tags are not written to GeoParquet)"
    if len(blob) > 16 * cap + (1 << 20):  # 16 bytes per 2D vertex: refused before decoding
        return f"geometry has about {len(blob) // 16} vertices, more than max_vertices {cap}; not parsed"
    try:
        geom = shapely.from_wkb(blob)
    except shapely.errors.GEOSException as exc:
        return f"geometry is not valid WKB: {exc}"
    gtype = geom.geom_type
    if gtype not in ("Point", "Polygon", "MultiPolygon"):
        return f"{gtype} geometries are not supported (polygons and points only)"
    kind = record.get("kind") or ("point" if gtype == "Point" else "polygon")
    if kind not in KINDS:
        return f"kind must be one of {', '.join(KINDS)}, got {kind!r}"
    if (kind == "point") != (gtype == "Point"):
        return f"a {kind} cannot have a {gtype} geometry"
    try:
        attributes = _attributes(record.get("attributes"))
    except InvalidInput as exc:
        return str(exc)
    score = record.get("score")
    if score is not None and (not isinstance(score, int | float) or isinstance(score, bool)):
        return f"score must be a number, got {score!r:.40}"
    status = record.get("status") if record.get("status") in STATUSES else None
    source = record.get("source")
    source = source if isinstance(source, str) and 0 < len(source) <= 256 else None
    common: dict[str, Any] = {
        "score": math.nan if score is None else float(score),
        "attributes": attributes,
        "status": status,
        "source": source,
    }
    session.declare_class(label, kind)
    if kind == "box":
        x0, y0, x1, y1 = (float(v) for v in geom.bounds)
        return Row(item, label, "box", box=(x0, y0, x1, y1), **common)
    if kind == "mask":
        x0, y0, x1, y1 = geom.bounds  # inside the image before a window is allocated for it
        if geom.is_empty or x0 < 0 or y0 < 0 or x1 > target.width or y1 > target.height:
            return f"mask outline {geom.bounds} is empty or not inside the {target.width}x{target.height} image"
        window, ox, oy = rasterize_polygon(geom)
        return Row(item, label, "mask", window=window, offset=(ox, oy), **common)
    return Row(item, label, kind, geometry=geom, **common)


def _attributes(text: Any) -> dict[str, Any]:
    if text is None or text == "":
        return {}
    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidInput(f"attributes are not JSON text: {exc}") from exc
    if not isinstance(value, dict) or not all(isinstance(v, str | int | float | bool) for v in value.values()):
        raise InvalidInput("attributes must be a JSON object of text, number or boolean values")
    return value
