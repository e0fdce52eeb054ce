"""Reader registry: ``@register_reader`` like timm's ``@register_model``; readers are chosen by content.

Each entry has a ``sniff(path, head)`` predicate over the first bytes of the file (and may look at the
file itself); ``open_image`` tries them by priority, so a ``.tif`` that is really a JPEG still opens,
and a text file named ``.tif`` is rejected with a reason instead of reaching a decoder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gigavision.config import Limits
from gigavision.errors import InvalidImage, LimitExceeded
from gigavision.images.cache import TileCache
from gigavision.images.source import ImageSource
from gigavision.registry import Registry

HEAD_BYTES = 512
Sniffer = Callable[[Path, bytes], bool]


@dataclass(frozen=True, slots=True)
class ReaderEntry:
    name: str
    source_cls: type[ImageSource]
    sniff: Sniffer
    priority: int
    description: str


# the built-in readers register themselves when gigavision.images.readers is imported: on first lookup, not
# at package import, so `gigavision --help` does not load pyvips/openslide
_READERS: Registry[ReaderEntry] = Registry("reader", builtins="gigavision.images.readers", error=InvalidImage)


def register_reader(
    name: str, *, sniff: Sniffer, priority: int = 50, description: str = ""
) -> Callable[[type[ImageSource]], type[ImageSource]]:
    """Class decorator: make ``cls`` available to ``open_image``. Lower ``priority`` is tried first."""

    def decorate(cls: type[ImageSource]) -> type[ImageSource]:
        cls.name = name
        _READERS.add(name, ReaderEntry(name, cls, sniff, priority, description or (cls.__doc__ or "").strip()))
        return cls

    return decorate


def list_readers() -> list[ReaderEntry]:
    return sorted(_READERS.values(), key=lambda e: (e.priority, e.name))


def read_head(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(HEAD_BYTES)


def check_file(path: Path) -> Path:
    """Resolve ``path`` and check it is a non-empty regular file; raise ``InvalidImage`` naming it otherwise."""
    p = Path(path)
    if not p.exists():
        raise InvalidImage(f"{p}: no such file")
    if p.is_dir():
        raise InvalidImage(f"{p}: is a directory, not an image file")
    if not p.is_file():
        raise InvalidImage(f"{p}: not a regular file")
    if p.stat().st_size == 0:
        raise InvalidImage(f"{p}: empty file (0 bytes)")
    if not os.access(p, os.R_OK):
        raise InvalidImage(f"{p}: not readable (permission denied)")
    return p


def detect_reader(path: Path) -> ReaderEntry:
    """The first registered reader whose sniffer accepts the file's content."""
    head = read_head(path)
    for entry in list_readers():
        if entry.sniff(path, head):
            return entry
    raise InvalidImage(f"{path.name}: not a supported image (unrecognised content, starts with {head[:8]!r})")


def open_image(
    path: str | os.PathLike[str],
    *,
    reader: str | None = None,
    limits: Limits | None = None,
    cache: TileCache | None = None,
) -> ImageSource:
    """Open any supported image as a leveled ``ImageSource`` without decoding its pixels."""
    p = check_file(Path(path))
    limits = limits or Limits()
    entry = _READERS.resolve(reader) if reader is not None else detect_reader(p)
    source = entry.source_cls(p, limits=limits, cache=cache)
    if source.info.pixels > limits.max_image_pixels:
        source.close()
        raise LimitExceeded(
            f"{p.name}: declares {source.width}x{source.height} = {source.info.pixels:,} pixels, more than "
            f"limits.max_image_pixels ({limits.max_image_pixels:,})"
        )
    return source
