"""What an exporter reads: a label schema and, image by image, that image's annotations.

Both the live workspace and a frozen dataset version (``gigavision.datasets``) provide this, so every
format writes either one. Images are streamed one at a time: no exporter holds the whole dataset in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from gigavision.annotations import Annotations


@dataclass(frozen=True, slots=True)
class ImageEntry:
    """One image to export: its id (sha256), file name, level-0 size and split (None outside a dataset).

    ``bands`` (channels) is optional: formats that record it (Pascal VOC ``depth``) assume 3 when it is None.
    """

    id: str
    name: str
    width: int
    height: int
    split: str | None = None
    bands: int | None = None


class AnnotatedImages(Protocol):
    """A label schema plus, image by image, annotations in level-0 pixels."""

    def classes(self) -> list[dict[str, Any]]:
        """The label schema in a stable order: dicts with name, kind, color, parent, attributes."""
        ...

    def images(self) -> Iterator[ImageEntry]:
        """Every image, in a stable order (the same order on every call)."""
        ...

    def annotations(self, image_id: str) -> Annotations:
        """The annotations of one image (already filtered to what should be exported)."""
        ...

    def __len__(self) -> int:
        """Number of images (for progress)."""
        ...
