"""The segmentation mask file format: pyramidal uint8 TIFFs with a JSON description.

- The label mask: one uint8 class index per pixel (greyscale, so readers see the index itself), tiled 256²,
  deflate (lossless; never JPEG), pyramid levels shrunk by the *mode* so they stay class indices.
- The probability file ``<stem>.prob<suffix>``: foreground probability ``round(255 × (1 − P(class 0)))``,
  pyramid levels shrunk by the mean. Class 0 is background by convention.

Both carry a JSON ImageDescription (``mask_description`` / ``read_mask_info``) with the classes, their display
colours, ``downsample`` and level-0 size, so a reader maps pixels back to level 0; the resolution tags hold the
mask's microns per pixel. A writer streams 256-row pages (``open_pages`` / ``write_page``) into a temporary
file and ``build_pyramid`` turns them into the final file, streaming too (libvips).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gigavision.errors import InvalidInput
from gigavision.infer.palette import class_colors

FORMAT = "gigavision-segmentation/1"
TILE = 256  # tile side of the output TIFFs and the height of the pages streamed to disk
PROBABILITY = "uint8 round(255 * (1 - P(classes[0])))"


def probability_path(path: Path) -> Path:
    """Where the probability file of the label mask ``path`` goes."""
    return path.with_name(f"{path.stem}.prob{path.suffix or '.tif'}")


def mask_description(
    classes: Sequence[str],
    *,
    downsample: float,
    level0_width: int,
    level0_height: int,
    mpp: float | None,
    probability_file: str | None,
) -> dict[str, Any]:
    """The JSON description both files carry (``kind`` is added per file)."""
    return {
        "format": FORMAT,
        "classes": list(classes),
        "colors": class_colors(len(classes)).tolist(),
        "downsample": downsample,
        "level0_width": level0_width,
        "level0_height": level0_height,
        "mpp": mpp,
        "probability_file": probability_file,
        "probability": PROBABILITY,
    }


def open_pages(path: Path) -> Any:
    """A tifffile writer for the temporary file of 256-row pages that ``build_pyramid`` reads back."""
    import tifffile

    return tifffile.TiffWriter(path, bigtiff=True)


def write_page(writer: Any, page: np.ndarray) -> None:
    """One ``(TILE, width)`` uint8 page, fast lossless compression (it is read once, by ``build_pyramid``)."""
    writer.write(
        page,
        tile=(TILE, TILE),
        compression="zlib",
        compressionargs={"level": 1},
        photometric="minisblack",
        metadata=None,
    )


def build_pyramid(
    pages: Path, out: Path, width: int, height: int, info: dict[str, Any], shrink: str, mpp: float | None
) -> None:
    """Stack the 256-row pages into one image, crop the padding and save a tiled deflate pyramid (streamed).

    ``shrink``: how lower levels are made, ``"mode"`` for class indices, ``"mean"`` for probabilities."""
    import pyvips

    image = pyvips.Image.new_from_file(str(pages), n=-1, access="sequential").crop(0, 0, width, height).copy()
    for name in ("page-height", "n-pages"):
        if image.get_typeof(name):
            image.remove(name)
    image.set_type(pyvips.GValue.gstr_type, "image-description", json.dumps(info))
    # libvips takes resolution in pixels per millimetre, whatever unit it writes
    resolution = {"resunit": "cm", "xres": 1000.0 / mpp, "yres": 1000.0 / mpp} if mpp else {}
    image.tiffsave(
        str(out),
        tile=True,
        tile_width=TILE,
        tile_height=TILE,
        pyramid=True,
        compression="deflate",
        region_shrink=shrink,
        bigtiff=True,
        **resolution,
    )


def read_mask_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON description of a mask written by ``MaskStitcher`` (classes, colours, downsample, ...)."""
    import tifffile

    p = Path(path)
    try:
        with tifffile.TiffFile(p) as tif:
            text = tif.pages.first.description
        info = json.loads(text)
    except (OSError, ValueError, IndexError, AttributeError, tifffile.TiffFileError) as exc:  # no pages: IndexError
        raise InvalidInput(f"{p.name}: not a gigavision segmentation mask ({type(exc).__name__}: {exc})") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise InvalidInput(f"{p.name}: not a gigavision segmentation mask (no {FORMAT} description)")
    return info
