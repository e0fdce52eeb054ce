"""Build a tiled pyramidal TIFF with libvips, streaming: memory stays bounded whatever the image size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gigavision.errors import InvalidImage
from gigavision.files import atomic_path
from gigavision.images.source import ImageSource
from gigavision.progress import Progress


def _pyramid_input(path: Path, source: ImageSource) -> Any:
    """A libvips image of the source: streamed from the file when libvips reads its format, else from pixels."""
    import numpy as np
    import pyvips

    from gigavision.images.readers.vips import flatten_for_output, vips_open

    if source.name in ("pyvips", "pillow", "tiff"):
        image = vips_open(path, access="sequential")
        if image.get_typeof("orientation") and source.name == "pillow":
            image = image.autorot()
        return flatten_for_output(image)
    # DICOM / OpenSlide: assemble from level-0 pixels (only reached for sources within max_decode_pixels).
    arr = source.read_window(0, 0, 0, source.width, source.height)
    return pyvips.Image.new_from_array(np.ascontiguousarray(arr))


def build_pyramid(
    path: Path,
    source: ImageSource,
    out: Path,
    *,
    tile_size: int = 256,
    jpeg_quality: int = 90,
    progress: Progress | None = None,
    lossless: bool = False,
) -> dict[str, Any]:
    """Write ``out`` (BigTIFF, tiled, pyramidal); JPEG for 8-bit grey/RGB, lossless deflate otherwise.

    Written to a temporary name, fsynced, then renamed, so ``out`` is either complete or absent.
    Returns the options used (stored with the image).
    """
    import pyvips

    image = _pyramid_input(path, source).copy()
    if image.get_typeof("image-description"):
        # libvips copies the source's description; a stale one (e.g. tifffile's JSON "shape") would
        # describe the source, not this pyramid, and mislead TIFF readers
        image.remove("image-description")
    lossy = not lossless and image.format == "uchar" and image.bands in (1, 3)
    options: dict[str, Any] = {
        "tile": True,
        "pyramid": True,
        "tile_width": tile_size,
        "tile_height": tile_size,
        "bigtiff": True,
    }
    if lossy:
        options.update(compression="jpeg", Q=jpeg_quality)
    else:
        options.update(compression="deflate", predictor="horizontal")
    if source.info.mpp_x and source.info.mpp_y:
        options.update(resunit="cm", xres=1000.0 / source.info.mpp_x, yres=1000.0 / source.info.mpp_y)
    if progress is not None:
        image.set_progress(True)
        image.signal_connect("eval", lambda _img, p: progress(min(100, p.percent), 100, "pyramid"))
    try:
        with atomic_path(out) as tmp:
            image.tiffsave(str(tmp), **options)
    except pyvips.Error as exc:
        lines = str(exc).strip().splitlines()
        raise InvalidImage(
            f"{path.name}: cannot build pyramid (truncated or corrupt?): {lines[-1] if lines else exc}"
        ) from exc
    return {
        "compression": options["compression"],
        "tile_size": tile_size,
        "quality": jpeg_quality if lossy else None,
    }
