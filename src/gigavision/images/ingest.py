"""The pixel side of ingest: find input files, then derive what the store keeps next to an original
(a pyramid when needed, a thumbnail, a foreground mask, a display window) into a scratch folder.
The database and blob side (publishing) lives in ``gigavision.ingest`` and ``store/catalog.py``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gigavision.config import Settings
from gigavision.errors import InvalidImage
from gigavision.images.cache import TileCache
from gigavision.images.display import display_window
from gigavision.images.pyramid import build_pyramid
from gigavision.images.registry import open_image
from gigavision.images.source import ImageInfo, ImageSource
from gigavision.images.thumbnail import MASK_SIDE, foreground_mask, overview, shrink
from gigavision.progress import Progress

PYRAMID_NAME, THUMBNAIL_NAME, MASK_NAME = "pyramid.tif", "thumbnail.jpg", "mask.png"
PREPARE_CACHE_BYTES = 512 * 1024 * 1024  # per image being prepared; freed with it


@dataclass(slots=True)
class InputFile:
    path: Path
    name: str
    rejected: str | None = None  # reason, when the path cannot be ingested at all


@dataclass(slots=True)
class Prepared:
    """Everything derived from one image, written into ``folder``."""

    info: ImageInfo
    reader: str
    folder: Path
    pyramid: bool
    foreground_fraction: float
    display_window: tuple[float, float] | None
    extra: dict[str, Any] = field(default_factory=dict)


def _escapes(path: Path, root: Path) -> bool:
    try:
        path.resolve(strict=True).relative_to(root.resolve())
    except ValueError:
        return True
    return False


def _broken_link(path: Path) -> str | None:
    """Why a symlink cannot be read (missing target, loop), else None."""
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python 3.11 raises this for loops
        return "symlink loop"
    except OSError as exc:
        return "symlink loop" if exc.errno == 40 else "broken symlink (its target does not exist)"
    return None


def collect_inputs(paths: Iterable[Path], *, recursive: bool = False, follow_symlinks: bool = False) -> list[InputFile]:
    """Expand the user's paths into files, in a stable order. Nothing is opened yet.

    Inside a folder, a symlink that resolves outside that folder is rejected unless ``follow_symlinks``;
    hidden files (``.name``) are skipped. A folder without ``recursive`` is rejected with the fix.
    """
    found: list[InputFile] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if "\x00" in str(raw):
            found.append(InputFile(path, str(raw), rejected="path contains a NUL byte"))
        elif not path.exists():
            found.append(InputFile(path, path.name, rejected="no such file or directory"))
        elif path.is_dir():
            if not recursive:
                found.append(
                    InputFile(
                        path,
                        path.name,
                        rejected="is a directory; pass --recursive to ingest the images inside",
                    )
                )
                continue
            for dirpath, dirnames, filenames in os.walk(path, followlinks=follow_symlinks):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for fname in sorted(filenames):
                    if fname.startswith("."):
                        continue
                    file = Path(dirpath) / fname
                    rel = str(file.relative_to(path))
                    broken = _broken_link(file) if file.is_symlink() else None
                    if broken:
                        found.append(InputFile(file, rel, rejected=broken))
                    elif file.is_symlink() and not follow_symlinks and _escapes(file, path):
                        found.append(
                            InputFile(
                                file,
                                rel,
                                rejected=f"symlink points outside {path}; pass --follow-symlinks to follow it",
                            )
                        )
                    else:
                        found.append(InputFile(file, rel))
        elif not path.is_file():
            found.append(InputFile(path, path.name, rejected="not a regular file (a pipe, socket or device)"))
        else:
            found.append(InputFile(path, path.name))
    return found


def coarse_sample(path: Path, source: ImageSource, max_side: int = 1024) -> np.ndarray:
    """The whole image at low resolution, native dtype, values kept (nearest neighbour, no averaging).

    From the smallest level when it is small; for big single-level files (a 30,000 px PNG) libvips
    shrinks the file while streaming it with a nearest-neighbour kernel, so label values and 16-bit ranges
    survive and memory stays bounded (a random-access subsample would decode the whole image).
    """
    small = source.levels[-1]
    if small.width * small.height <= 16 * 1024 * 1024:
        return source.read_window(len(source.levels) - 1, 0, 0, small.width, small.height)
    import pyvips

    from gigavision.images.readers.vips import flatten_for_output, vips_open

    image = flatten_for_output(vips_open(path, access="sequential"))
    step = max(1, -(-max(image.width, image.height) // max_side))
    try:
        arr = np.asarray(image.reduce(step, step, kernel="nearest").numpy())
    except pyvips.Error as exc:  # the pixels run out or break while streaming: name the file and libvips' reason
        detail = " ".join(str(exc.detail or exc.message).split())
        raise InvalidImage(f"{path.name}: cannot decode image (truncated or corrupt?): {detail}") from exc
    return arr if arr.ndim == 3 else arr[:, :, None]


def _is_label_mask(source: ImageSource, sample: np.ndarray) -> bool:
    """Single-band 8-bit data with a handful of values is a label mask: JPEG would corrupt its labels."""
    return source.info.bands == 1 and source.info.dtype == "uint8" and np.unique(sample).size <= 32


def prepare(path: Path, settings: Settings, folder: Path, *, progress: Progress | None = None) -> Prepared:
    """Validate ``path`` fully and write the derived files into ``folder`` (which must exist).

    Raises ``InvalidImage`` / ``LimitExceeded`` with a one-line reason; the caller discards ``folder``.
    """
    from gigavision.images.volumes.ingest import prepare_volume, volume_kind

    kind = volume_kind(path)
    if kind is not None:  # a NIfTI file or a zip of one DICOM series: a 3D volume (images/volumes)
        return prepare_volume(path, kind, settings, folder, progress=progress)
    limits, opts = settings.limits, settings.ingest
    # A private cache: the pixels of one image are reused while preparing it, then dropped with it,
    # instead of lingering in the process-wide cache through a 1,000-file ingest.
    cache = TileCache(PREPARE_CACHE_BYTES)
    source = open_image(path, limits=limits, cache=cache)
    try:
        info = source.info
        reader = source.name
        coarse = coarse_sample(path, source)
        window = None
        if info.dtype != "uint8":
            meta_window = info.metadata.get("display_window")
            window = tuple(meta_window) if meta_window else display_window(coarse)
        big = max(info.width, info.height) > opts.pyramid_threshold
        needs_pyramid = big and (not info.tiled or len(info.levels) == 1)
        if needs_pyramid and not info.tiled and reader not in ("pyvips", "pillow", "tiff"):
            needs_pyramid = info.pixels <= limits.max_decode_pixels
        extra: dict[str, Any] = {}
        if needs_pyramid:
            lossless = _is_label_mask(source, coarse)
            extra["pyramid"] = build_pyramid(
                path,
                source,
                folder / PYRAMID_NAME,
                tile_size=opts.tile_size,
                jpeg_quality=opts.jpeg_quality,
                progress=progress,
                lossless=lossless,
            )
            source.close()
            cache.clear()
            source = open_image(folder / PYRAMID_NAME, reader="tiff", limits=limits, cache=cache)
            source.info.mpp_x, source.info.mpp_y = info.mpp_x, info.mpp_y
            levels = source.info.levels
            info.levels, info.tiled = levels, True
        else:
            # Small images are decoded whole once, so a truncated file is caught now rather than in the
            # viewer; big tiled files were checked structurally (offsets inside the file) when opened.
            if max(info.width, info.height) <= opts.pyramid_threshold:
                source.read_window(0, 0, 0, info.width, info.height)
        view = overview(source, max(MASK_SIDE, opts.thumbnail_size), window)
        _save_jpeg(shrink(view, opts.thumbnail_size), folder / THUMBNAIL_NAME)
        mask = foreground_mask(view)
        _save_png(mask.astype(np.uint8) * 255, folder / MASK_NAME)
        return Prepared(
            info=info,
            reader=reader,
            folder=folder,
            pyramid=needs_pyramid,
            foreground_fraction=float(mask.mean()),
            display_window=window,
            extra=extra,
        )
    finally:
        source.close()


# The derived files are written plainly into the private scratch folder: whoever uses ``prepare`` publishes
# them with ``files.publish``, which fsyncs each file before its rename, and drops the folder on failure.
# (Temp names and fsyncs here too were 6 of the 14 fsyncs per image: a 16×16 PNG took ~16 ms, now ~12.)
def _save_jpeg(arr: np.ndarray, out: Path) -> None:
    from PIL import Image

    Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(out, "JPEG", quality=85)


def _save_png(arr: np.ndarray, out: Path) -> None:
    from PIL import Image

    Image.fromarray(arr).save(out, "PNG", optimize=True)
