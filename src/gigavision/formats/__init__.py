"""Annotation formats: COCO, Pascal VOC, YOLO, QuPath GeoJSON, ImageFolder, CSV (import and export).

Formats are chosen by name from a registry (``FORMATS``; ``register_format`` adds one): each is a module
with ``export(source, ctx)`` and ``parse(path, session)``, imported on first use. The verbs:

    export_annotations(source, "coco", out)        any ``AnnotatedImages`` (workspace, dataset version)
    export_workspace(ws, "yolo", out, dataset=...)  the live workspace, or a dataset version by NAME@N
    import_annotations(ws, "voc", path)             a file, a folder or a .zip; returns an ``ImportReport``

Exports are deterministic (export → import → export gives the same bytes) and stream image by image;
``docs/formats.md`` has the exact mapping of each format. Names load lazily, so importing this package
(the CLI does, for the format names) costs nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gigavision.formats.registry import FORMATS, FormatInfo, get_format, register_format

if TYPE_CHECKING:
    from gigavision.formats.api import export_annotations, export_workspace, import_annotations
    from gigavision.formats.live import WorkspaceSource, workspace_source
    from gigavision.formats.report import (
        ExportOptions,
        ExportResult,
        ImportOptions,
        ImportReport,
        Rejection,
        Unmatched,
    )
    from gigavision.formats.source import AnnotatedImages, ImageEntry

_LAZY = {
    "export_annotations": "api",
    "export_workspace": "api",
    "import_annotations": "api",
    "WorkspaceSource": "live",
    "workspace_source": "live",
    "ExportOptions": "report",
    "ExportResult": "report",
    "ImportOptions": "report",
    "ImportReport": "report",
    "Rejection": "report",
    "Unmatched": "report",
    "AnnotatedImages": "source",
    "ImageEntry": "source",
}

__all__ = [
    "FORMATS",
    "AnnotatedImages",
    "ExportOptions",
    "ExportResult",
    "FormatInfo",
    "ImageEntry",
    "ImportOptions",
    "ImportReport",
    "Rejection",
    "Unmatched",
    "WorkspaceSource",
    "export_annotations",
    "export_workspace",
    "get_format",
    "import_annotations",
    "register_format",
    "workspace_source",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"gigavision.formats.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'gigavision.formats' has no attribute {name!r}")
