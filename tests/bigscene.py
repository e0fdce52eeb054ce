"""A generated gigapixel-scale scene with real objects planted far apart: scikit-image coins on a gravel
texture, written as a tiled pyramidal JPEG TIFF by pyvips without ever holding the image in memory.

Every other grid cell holds a coin (class ``coin``) or an annotated patch of bare texture (class
``background``, as a pathologist marks negative regions), so patch samplers can balance the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gigavision.demo import write_pyramid

CELL = 2_000  # objects sit at least this far apart


@dataclass(frozen=True)
class PlantedScene:
    path: Path
    width: int
    height: int
    boxes: list[tuple[float, float, float, float]]
    labels: list[str]


def coin_crops() -> list[np.ndarray]:
    """The coins of ``skimage.data.coins()`` cut out by Otsu threshold + connected components (grey uint8)."""
    from skimage import data, filters, measure

    img = data.coins()
    mask = img > filters.threshold_otsu(img)
    crops = []
    for region in measure.regionprops(measure.label(mask)):
        y0, x0, y1, x1 = region.bbox
        if 30 <= y1 - y0 <= 90 and 30 <= x1 - x0 <= 90:
            crops.append(np.ascontiguousarray(img[y0:y1, x0:x1]))
    return crops


def planted_scene(out: Path, width: int, height: int, seed: int = 0, cell: int = CELL) -> PlantedScene:
    """Write (once; reused when ``out`` exists) the scene and return where its objects are (level-0 xyxy)."""
    import pyvips
    from skimage import data

    rng = np.random.default_rng(seed)
    crops = coin_crops()
    boxes: list[tuple[float, float, float, float]] = []
    labels: list[str] = []
    placements = []
    for k, (cy, cx) in enumerate(
        (y, x) for y in range(cell // 2, height - 200, cell) for x in range(cell // 2, width - 200, cell)
    ):
        x = int(cx + rng.integers(-cell // 7, cell // 7))
        y = int(cy + rng.integers(-cell // 7, cell // 7))
        if k % 2 == 0:
            crop = crops[int(rng.integers(len(crops)))]
            h, w = crop.shape
            placements.append((crop, x, y))
            boxes.append((float(x), float(y), float(x + w), float(y + h)))
            labels.append("coin")
        else:
            boxes.append((float(x), float(y), float(x + 64), float(y + 64)))
            labels.append("background")
    if not out.exists():
        gravel = pyvips.Image.new_from_array(np.ascontiguousarray(data.gravel()))
        canvas = gravel.replicate(width // gravel.width + 1, height // gravel.height + 1).crop(0, 0, width, height)
        for crop, x, y in placements:
            canvas = canvas.insert(pyvips.Image.new_from_array(crop), x, y)
        image = canvas.bandjoin([canvas, canvas]).copy(interpretation="srgb")
        write_pyramid(image, out, quality=85)
    return PlantedScene(out, width, height, boxes, labels)
