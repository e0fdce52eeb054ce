"""GeoParquet export and import, and map coordinates of georeferenced images in GeoParquet and GeoJSON: the file
read back with plain pyarrow + shapely (and geoarrow's GeoParquet reader), byte-stable round trips, refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely

import gigavision as gv
from gigavision.annotations import Annotations
from gigavision.errors import InvalidInput
from gigavision.formats import ExportOptions, ImportOptions, export_workspace, import_annotations
from tests import formats

ORIGIN, PIXEL, EPSG = (500_000.0, 4_100_000.0), 10.0, 32633


def hole_mask() -> np.ndarray:
    m = np.zeros((30, 40), dtype=bool)
    m[5:20, 3:30] = True
    m[10:12, 10:12] = False
    return m


def annotate(ws: gv.Workspace, image: Path) -> str:
    """Every kind on one real image: a fractional box, a polygon with a hole, a point, a mask, a tag."""
    (row,) = ws.ingest([image])
    image_id = str(row.id)
    ws.labels.set("roof", "box", "#ffaa00", attributes={"overhang": ["low", "high"]})
    ws.labels.set("field", "polygon")
    ws.labels.set("well", "point")
    ws.labels.set("water", "mask")
    ws.labels.set("rural", "tag")
    holed = shapely.Polygon([(150, 50), (300, 60), (280, 250), (160, 240)], [[(200, 100), (240, 100), (240, 140)]])
    ann = Annotations.merge(
        [
            Annotations.from_boxes(
                [[10.25, 20, 60.5, 70]], "roof", attributes=[{"overhang": "low"}], status="accepted", source="user:ana"
            ),
            Annotations.from_polygons([holed], "field", status="proposed", source="model:seg@3", score=[0.875]),
            Annotations.from_points([[220.5, 180]], "well", status="accepted", source="user:ana"),
            Annotations.from_masks([hole_mask()], [(100, 200)], "water", status="accepted", source="user:bo"),
            Annotations.from_tags(["rural"], status="accepted", source="user:ana"),
        ]
    )
    ws.annotations.add(image_id, ann, "ana")
    return image_id


@pytest.fixture
def annotated(tmp_path: Path, samples: dict[str, Path]) -> Iterator[gv.Workspace]:
    ws = gv.init_workspace(tmp_path / "annotated")
    annotate(ws, samples["astronaut.jpg"])
    yield ws
    ws.close()


@pytest.fixture
def geotiff(tmp_path: Path) -> Path:
    return formats.write_geotiff(tmp_path / "scene.tif", formats.ihc_scene(600, 400), ORIGIN, PIXEL, EPSG)


def geo_meta(path: Path) -> dict:
    return json.loads(pq.ParquetFile(path).metadata.metadata[b"geo"])


def test_rows_columns_and_geo_metadata_read_with_plain_pyarrow(tmp_path: Path, annotated: gv.Workspace) -> None:
    result = export_workspace(annotated, "geoparquet", tmp_path / "out")
    assert (result.images, result.annotations, result.files) == (1, 4, 1)
    assert result.skipped == {"tag annotations (GeoParquet rows are geometries)": 1}
    assert result.converted == {"mask written as its outline polygon": 1}
    path = tmp_path / "out" / "annotations.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    assert [(r["kind"], r["label"]) for r in rows] == [
        ("box", "roof"),
        ("polygon", "field"),
        ("point", "well"),
        ("mask", "water"),
    ]
    assert {(r["image"], r["width"], r["height"], r["split"]) for r in rows} == {("astronaut.jpg", 512, 512, None)}
    box, field, well, water = rows
    assert shapely.from_wkb(box["geometry"]).equals(shapely.box(10.25, 20, 60.5, 70))
    assert box["bbox"] == {"xmin": 10.25, "ymin": 20.0, "xmax": 60.5, "ymax": 70.0}
    assert (box["status"], box["source"], box["score"], json.loads(box["attributes"])) == (
        "accepted",
        "user:ana",
        None,
        {"overhang": "low"},
    )
    polygon = shapely.from_wkb(field["geometry"])
    assert len(polygon.interiors) == 1 and field["score"] == 0.875 and field["source"] == "model:seg@3"
    assert shapely.from_wkb(well["geometry"]).coords[0] == (220.5, 180.0)
    outline = shapely.from_wkb(water["geometry"])  # the exact pixel outline: its area is the pixel count
    assert outline.area == hole_mask().sum() and outline.bounds == (103.0, 205.0, 130.0, 220.0)
    geo = geo_meta(path)
    column = geo["columns"]["geometry"]
    assert (geo["version"], geo["primary_column"], column["encoding"]) == ("1.1.0", "geometry", "WKB")
    assert column["geometry_types"] == ["Point", "Polygon"]
    assert column["bbox"] == [10.25, 20.0, 300.0, 250.0]
    assert "crs" in column and column["crs"] is None  # pixels: "no CRS", not the OGC:CRS84 an absent key means
    assert column["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    assert pq.ParquetFile(path).schema_arrow.metadata[b"geo"]  # pandas / geopandas find it on the schema too
    # geoarrow's GeoParquet reader sees a WKB geometry column without CRS
    from geoarrow.pyarrow import io

    geometry_type = io.read_geoparquet_table(path).schema.field("geometry").type
    assert geometry_type.extension_name == "geoarrow.wkb" and not geometry_type.crs
    export_workspace(annotated, "geoparquet", tmp_path / "again")
    assert (tmp_path / "again" / "annotations.parquet").read_bytes() == path.read_bytes()


def test_export_import_export_is_byte_for_byte_stable(
    tmp_path: Path, samples: dict[str, Path], annotated: gv.Workspace, workspace: gv.Workspace
) -> None:
    export_workspace(annotated, "geoparquet", tmp_path / "first")
    report = import_annotations(
        workspace, "geoparquet", tmp_path / "first", options=ImportOptions(images_dir=samples["astronaut.jpg"].parent)
    )
    assert report.ok, report.as_dict()
    assert report.annotations == 4 and dict(report.by_kind) == {"box": 1, "polygon": 1, "point": 1, "mask": 1}
    export_workspace(workspace, "geoparquet", tmp_path / "second")
    first = (tmp_path / "first" / "annotations.parquet").read_bytes()
    assert (tmp_path / "second" / "annotations.parquet").read_bytes() == first


def test_rows_stream_in_row_groups(tmp_path: Path, annotated: gv.Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Written ``ROW_GROUP`` rows at a time and read back in batches of that size: the same rows (matched to
    the workspace's image by ``image_id``, no images folder needed)."""
    from gigavision.formats import geoparquet

    export_workspace(annotated, "geoparquet", tmp_path / "whole")
    monkeypatch.setattr(geoparquet, "ROW_GROUP", 3)
    export_workspace(annotated, "geoparquet", tmp_path / "groups")
    groups = pq.ParquetFile(tmp_path / "groups" / "annotations.parquet")
    assert groups.num_row_groups == 2 and groups.metadata.row_group(1).num_rows == 1
    assert groups.read().to_pylist() == pq.read_table(tmp_path / "whole" / "annotations.parquet").to_pylist()
    report = import_annotations(annotated, "geoparquet", tmp_path / "groups")
    assert report.ok and (report.annotations, report.images_matched, report.images_ingested) == (4, 1, 0)


def test_map_coordinates_of_a_geotiff_in_geoparquet_and_geojson(
    tmp_path: Path, geotiff: Path, sqlite_workspace: gv.Workspace
) -> None:
    ws = sqlite_workspace
    (row,) = ws.ingest([geotiff])
    ws.annotations.add(
        str(row.id),
        Annotations.merge(
            [Annotations.from_boxes([[10.25, 20, 60.5, 70]], "roof"), Annotations.from_points([[100, 30]], "well")]
        ),
        "ana",
    )
    map_options = ExportOptions(crs="map")
    export_workspace(ws, "geoparquet", tmp_path / "map", options=map_options)
    path = tmp_path / "map" / "annotations.parquet"
    rows = pq.read_table(path).to_pylist()
    x0, y0 = ORIGIN[0] + 10.25 * PIXEL, ORIGIN[1] - 20 * PIXEL  # origin + pixel × size, y up
    x1, y1 = ORIGIN[0] + 60.5 * PIXEL, ORIGIN[1] - 70 * PIXEL
    assert (x0, y0, x1, y1) == (500_102.5, 4_099_800.0, 500_605.0, 4_099_300.0)
    roof = shapely.from_wkb(rows[0]["geometry"])
    assert list(roof.exterior.coords) == [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
    assert rows[0]["bbox"] == {"xmin": x0, "ymin": y1, "xmax": x1, "ymax": y0}
    assert shapely.from_wkb(rows[1]["geometry"]).coords[0] == (501_000.0, 4_099_700.0)
    assert shapely.from_wkb(rows[0]["pixel_geometry"]).equals(shapely.box(10.25, 20, 60.5, 70))
    column = geo_meta(path)["columns"]["geometry"]
    assert column["crs"]["id"] == {"authority": "EPSG", "code": EPSG} and column["crs"]["type"] == "ProjectedCRS"
    assert column["bbox"] == [x0, y1, 501_000.0, y0]
    # GeoJSON: the same numbers, and the CRS named the way GDAL reads it
    export_workspace(ws, "geojson", tmp_path / "geojson", options=map_options)
    collection = json.loads((tmp_path / "geojson" / "scene.tif.geojson").read_text())
    assert collection["crs"] == {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{EPSG}"}}
    roof_json, well_json = (f["geometry"]["coordinates"] for f in collection["features"])
    assert roof_json == [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]] and well_json == [501_000, 4_099_700]
    # the map file imports back through its pixel_geometry, and re-exports to the same bytes
    other = gv.init_workspace(tmp_path / "other")
    report = import_annotations(other, "geoparquet", path, options=ImportOptions(images_dir=geotiff.parent))
    assert report.ok and report.annotations == 2, report.as_dict()
    export_workspace(other, "geoparquet", tmp_path / "map2", options=map_options)
    assert (tmp_path / "map2" / "annotations.parquet").read_bytes() == path.read_bytes()
    # without pixel_geometry, map coordinates are refused: gigavision stores pixels
    table = pq.read_table(path).drop_columns(["pixel_geometry"])
    pq.write_table(table, tmp_path / "gis.parquet")
    with pytest.raises(InvalidInput, match=r"map coordinates \(WGS 84 / UTM zone 33N\).*level-0 image pixels"):
        import_annotations(other, "geoparquet", tmp_path / "gis.parquet")
    other.close()


def test_map_coordinates_need_georeferenced_images(
    tmp_path: Path, samples: dict[str, Path], geotiff: Path, sqlite_workspace: gv.Workspace
) -> None:
    ws = sqlite_workspace
    ws.ingest([geotiff, samples["coins.png"]])
    for fmt in ("geoparquet", "geojson"):
        with pytest.raises(InvalidInput, match=r"crs=map, but image coins\.png \(\w{12}\) is not georeferenced"):
            export_workspace(ws, fmt, tmp_path / fmt, options=ExportOptions(crs="map"))
        assert not (tmp_path / fmt).exists() and list(tmp_path.glob(f".{fmt}*")) == []
    with pytest.raises(InvalidInput, match="crs=map is for geojson and geoparquet; coco writes level-0 pixel"):
        export_workspace(ws, "coco", tmp_path / "coco", options=ExportOptions(crs="map"))


def test_imports_geoparquet_written_by_geoarrow_rejecting_bad_rows(
    tmp_path: Path, samples: dict[str, Path], sqlite_workspace: gv.Workspace
) -> None:
    """A file as geoarrow-pyarrow's GeoParquet writer makes it (version 1.0.0, no kind column): polygons and
    points import; a LineString and a row without a label are rejected with their reasons."""
    import geoarrow.pyarrow as ga
    from geoarrow.pyarrow import io

    wkt = ["POLYGON ((10 10, 100 10, 100 80, 10 10))", "POINT (40.5 60)", "LINESTRING (0 0, 5 5)", "POINT (1 1)"]
    table = pa.table(
        {
            "image": ["coins.png"] * 4,
            "label": ["coin", "centre", "scratch", None],
            "geometry": ga.as_wkb(ga.array(wkt)),
        }
    )
    io.write_geoparquet_table(table, tmp_path / "coins.parquet")
    assert geo_meta(tmp_path / "coins.parquet")["columns"]["geometry"]["crs"] is None
    report = import_annotations(
        sqlite_workspace,
        "geoparquet",
        tmp_path / "coins.parquet",
        options=ImportOptions(images_dir=samples["coins.png"].parent),
    )
    assert report.annotations == 2 and dict(report.by_kind) == {"polygon": 1, "point": 1}
    assert [(r.item, r.reason) for r in report.rejected] == [
        ("row 2", "LineString geometries are not supported (polygons and points only)"),
        ("row 3", "the label is empty"),
    ]
    (image_id,) = sqlite_workspace.find_images(["coins.png"]).values()
    stored = sqlite_workspace.annotations.query(image_id)
    assert list(stored.label) == ["coin", "centre"] and list(stored.status) == ["accepted", "accepted"]
    assert list(stored.source) == ["import:geoparquet"] * 2
