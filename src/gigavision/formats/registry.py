"""The format registry: names → modules with ``export(source, ctx)`` and ``parse(path, session)``.

Light on purpose (no NumPy, no database): the CLI lists the format names at start-up from here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from gigavision.registry import Registry


@dataclass(frozen=True)
class FormatInfo:
    """One registered format: its name, module (``export`` / ``parse``), what it holds and what it reads."""

    name: str
    title: str
    module: str
    kinds: tuple[str, ...]
    reads: str


FORMATS: Registry[FormatInfo] = Registry("format")


def register_format(info: FormatInfo) -> None:
    """Add (or replace) a format; its module is imported only when the format is used."""
    FORMATS.add(info.name, info)


for _info in (
    FormatInfo(
        "coco",
        "COCO detection / instance segmentation JSON",
        "gigavision.formats.coco",
        ("box", "polygon", "mask", "point", "tag"),
        "a COCO .json file, or a folder / .zip with .json files (and images)",
    ),
    FormatInfo(
        "voc",
        "Pascal VOC XML",
        "gigavision.formats.voc",
        ("box",),
        "a VOC .xml file, or a folder / .zip with Annotations/*.xml (and JPEGImages/)",
    ),
    FormatInfo(
        "yolo",
        "YOLO txt (detect and segment) with data.yaml",
        "gigavision.formats.yolo",
        ("box", "polygon"),
        "a folder / .zip with data.yaml (Ultralytics), obj.names + obj.data (YOLO 1.1 / darknet) or"
        " classes.txt, with images and labels",
    ),
    FormatInfo(
        "cvat",
        "CVAT for images 1.1 XML",
        "gigavision.formats.cvat",
        ("box", "polygon", "mask", "point", "tag"),
        "a CVAT annotations.xml, or a folder / .zip with it (and images/)",
    ),
    FormatInfo(
        "labelstudio",
        "Label Studio JSON (tasks with results)",
        "gigavision.formats.labelstudio",
        ("box", "polygon", "point", "mask", "tag"),
        "a Label Studio JSON export (a list of tasks), or a folder / .zip with it (and images)",
    ),
    FormatInfo(
        "geojson",
        "GeoJSON FeatureCollection as QuPath writes and reads it",
        "gigavision.formats.geojson",
        ("polygon", "point"),
        "a .geojson file per image, or a folder / .zip of them (named after their images)",
    ),
    FormatInfo(
        "imagefolder",
        "ImageFolder: one folder per class",
        "gigavision.formats.imagefolder",
        ("tag",),
        "a folder / .zip of <class>/<image> (or <split>/<class>/<image>)",
    ),
    FormatInfo(
        "csv",
        "CSV image,label[,label...] (multi-label)",
        "gigavision.formats.csv_labels",
        ("tag",),
        "a .csv file, or a folder / .zip with .csv files (and images)",
    ),
    FormatInfo(
        "geoparquet",
        "GeoParquet: one row per annotation, WKB geometry (GIS, pandas, DuckDB)",
        "gigavision.formats.geoparquet",
        ("box", "polygon", "point", "mask"),
        "a .parquet file written by this exporter (or any GeoParquet with image and label columns)",
    ),
):
    register_format(_info)


def get_format(name: str) -> ModuleType:
    """The module of format ``name``; ``InvalidInput`` naming the known formats otherwise."""
    return importlib.import_module(FORMATS.resolve(name).module)
