"""Demo and test scenes made from real bundled images (scikit-image), at any size, in bounded memory.

``make_slide`` tiles real immunohistochemistry patches into tissue-shaped islands on a white background,
so a gigapixel "slide" has real texture, real colour and real background for the foreground mask.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from gigavision.files import atomic_path

PATCH = 512


def _dihedral(arr: np.ndarray) -> list[np.ndarray]:
    out = []
    for k in range(4):
        r = np.rot90(arr, k)
        out += [np.ascontiguousarray(r), np.ascontiguousarray(r[:, ::-1])]
    return out


def _islands(cols: int, rows: int, rng: np.random.Generator, n: int = 6) -> np.ndarray:
    """Boolean grid cells covered by a few random ellipses: where the tissue is."""
    yy, xx = np.mgrid[0:rows, 0:cols]
    mask = np.zeros((rows, cols), dtype=bool)
    for _ in range(n):
        cx, cy = rng.uniform(0.15, 0.85) * cols, rng.uniform(0.15, 0.85) * rows
        ax, ay = rng.uniform(0.08, 0.25) * cols, rng.uniform(0.08, 0.25) * rows
        mask |= ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1
    return mask


def make_slide(
    out: Path,
    width: int = 40_000,
    height: int = 25_000,
    *,
    mpp: float = 0.25,
    seed: int = 0,
    quality: int = 80,
) -> Path:
    """Write a tiled pyramidal JPEG TIFF (256² tiles) of ``width × height`` made of real IHC texture.

    Written atomically; if ``out`` already exists it is returned as is (fixtures build it once).
    """
    import pyvips
    from skimage import data

    if out.exists():
        return out
    rng = np.random.default_rng(seed)
    patches = [pyvips.Image.new_from_array(a) for a in _dihedral(data.immunohistochemistry())]
    white = pyvips.Image.black(PATCH, PATCH, bands=3).invert().cast("uchar")
    cols, rows = math.ceil(width / PATCH), math.ceil(height / PATCH)
    tissue = _islands(cols, rows, rng)
    cells = [
        patches[int(rng.integers(len(patches)))] if tissue[r, c] else white for r in range(rows) for c in range(cols)
    ]
    image = pyvips.Image.arrayjoin(cells, across=cols).crop(0, 0, width, height).copy(interpretation="srgb")
    return write_pyramid(image, out, quality=quality, mpp=mpp)


def write_pyramid(image: Any, out: Path, *, quality: int = 85, mpp: float | None = None) -> Path:
    """Save a (lazy) pyvips image as a tiled pyramidal JPEG BigTIFF (256² tiles), atomically: streamed by
    libvips, so a gigapixel image is never held in memory, and never left half-written at ``out``."""
    resolution = {"resunit": "cm", "xres": 1000.0 / mpp, "yres": 1000.0 / mpp} if mpp else {}
    with atomic_path(out) as tmp:
        image.tiffsave(
            str(tmp),
            tile=True,
            pyramid=True,
            tile_width=256,
            tile_height=256,
            compression="jpeg",
            Q=quality,
            bigtiff=True,
            **resolution,
        )
    return out


def bundled_images(folder: Path) -> list[Path]:
    """Save scikit-image's real photographs and scans as ordinary files (what a user would have)."""
    from PIL import Image
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    samples: dict[str, Any] = {
        "retina.jpg": data.retina(),  # 1411² fundus photograph
        "immunohistochemistry.png": data.immunohistochemistry(),
        "astronaut.jpg": data.astronaut(),
        "coins.png": data.coins(),
        "coffee.webp": data.coffee(),
        "hubble_deep_field.jpg": data.hubble_deep_field(),
        "moon_16bit.tif": data.moon().astype(np.uint16) * 257,  # 16-bit greyscale: stored losslessly
    }
    paths = []
    for name, arr in samples.items():
        path = folder / name
        if not path.exists():
            Image.fromarray(arr).save(path)
        paths.append(path)
    # a large phone-style JPEG (12,000 px wide, untiled): ingest turns it into a pyramid
    big = folder / "chelsea_mosaic.jpg"
    if not big.exists():
        import pyvips

        tile = pyvips.Image.new_from_array(np.concatenate([data.chelsea(), data.chelsea()[:, ::-1]], axis=1))
        tile.replicate(math.ceil(12_000 / tile.width), math.ceil(8_000 / tile.height)).crop(
            0, 0, 12_000, 8_000
        ).jpegsave(str(big), Q=85)
    paths.append(big)
    return paths
