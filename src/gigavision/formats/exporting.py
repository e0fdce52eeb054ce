"""The export driver: a private temp folder, the format's writer, then an atomic rename (or a zip).

A failed or cancelled export leaves nothing at ``out``. Writers get an ``ExportContext``: options, the
result being filled, progress, unique file names, and ``place_image`` to copy or link an image's original.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gigavision.errors import InvalidInput
from gigavision.files import publish, temp_beside
from gigavision.formats.archive import write_zip
from gigavision.formats.report import ExportOptions, ExportResult
from gigavision.formats.source import AnnotatedImages, ImageEntry
from gigavision.formats.text import UniqueNames
from gigavision.progress import Progress, no_progress

if TYPE_CHECKING:
    from gigavision.images.georef import Georef

ImageFile = Callable[[str], Path]
"""``image_file(image_id) -> Path``: a local file with the image's original bytes."""
GeorefOf = Callable[[str], "Georef | None"]
"""``georef_of(image_id)``: the image's CRS and pixel → map transform, None when it is not georeferenced."""


class ExportContext:
    """What a format writer needs besides the source: options, result, progress, names, image files."""

    def __init__(
        self,
        fmt: str,
        root: Path,
        options: ExportOptions,
        result: ExportResult,
        progress: Progress,
        image_file: ImageFile | None,
        default_images: str,
        georef_of: GeorefOf | None = None,
    ) -> None:
        self.format = fmt
        self.root = root
        self.options = options
        self.result = result
        self.progress = progress
        self.image_file = image_file
        self.image_mode = options.images or default_images
        self.names = UniqueNames()
        self.georef_of = georef_of
        if self.image_mode != "none" and image_file is None:
            raise InvalidInput(f"{fmt}: this source cannot provide image files; use images=none")

    def file_name(self, entry: ImageEntry) -> str:
        """The image's file name in this export (unique, also by stem; safe as a path component)."""
        return self.names.take(entry.name, entry.id)

    def place_image(self, entry: ImageEntry, relative: str) -> None:
        """Copy or link the image's original to ``relative`` (no-op when images=none)."""
        if self.image_mode == "none":
            return
        assert self.image_file is not None
        src = self.image_file(entry.id)
        dest = self.root / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        if self.image_mode == "link":
            try:
                os.link(src, dest)
            except OSError:  # another file system, or links not allowed: a symbolic link instead
                dest.symlink_to(src.resolve())
        else:
            shutil.copyfile(src, dest)
        self.result.files += 1

    def georef(self, entry: ImageEntry) -> Georef | None:
        """None with ``crs=image`` (level-0 pixels); with ``crs=map`` the image's georeferencing. An image
        without one fails the whole export, naming the image: a file that mixes pixels and map
        coordinates, or silently lacks some images, is worse than no file."""
        if self.options.crs != "map":
            return None
        found = self.georef_of(entry.id) if self.georef_of is not None else None
        if found is None:
            raise InvalidInput(
                f"{self.format}: crs=map, but image {entry.name} ({entry.id[:12]}) is not georeferenced (no CRS "
                "and transform); export with crs=image, or a dataset version of georeferenced images only"
            )
        return found

    def open_text(self, relative: str) -> Path:
        """The path of a file (text or binary) to write at ``relative`` (its folder created; counted)."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        self.result.files += 1
        return path


def run_export(
    fmt: str,
    writer: Callable[[AnnotatedImages, ExportContext], None],
    source: AnnotatedImages,
    out: Path,
    *,
    options: ExportOptions,
    progress: Progress | None,
    image_file: ImageFile | None,
    default_images: str,
    georef_of: GeorefOf | None = None,
) -> ExportResult:
    """Write into a temp folder beside ``out``, then rename it to ``out`` (or zip it when ``out`` ends .zip)."""
    out = Path(out).expanduser().absolute()
    archive = out.suffix.lower() == ".zip"
    if archive and out.exists():
        raise InvalidInput(f"{out} already exists; choose a new file name")
    if not archive and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInput(f"{out} already exists and is not an empty folder; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(out)
    tmp.mkdir()
    result = ExportResult(format=fmt, out=str(out))
    try:
        ctx = ExportContext(fmt, tmp, options, result, progress or no_progress, image_file, default_images, georef_of)
        if archive and ctx.image_mode == "link":
            ctx.image_mode = "copy"  # an archive holds bytes, not links
        writer(source, ctx)
        if archive:
            write_zip(tmp, out)
        else:
            if out.exists():
                out.rmdir()
            publish(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return result
