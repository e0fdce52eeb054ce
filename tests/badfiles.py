"""Malformed inputs for the bad-input tests, each written by a small generator into a folder.

Everything is either cut from a real bundled image (scikit-image samples) or a hand-built header around a few
bytes of real pixels: truncations, lies in headers (decompression bombs), cyclic IFD chains, tiles larger than
any real tile, offsets past the end of the file. The TIFF builder writes classic little-endian TIFF by hand so
a test controls every offset.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHORT, LONG = 3, 4
IMAGE_WIDTH, IMAGE_LENGTH, BITS_PER_SAMPLE, COMPRESSION, PHOTOMETRIC = 256, 257, 258, 259, 262
STRIP_OFFSETS, SAMPLES_PER_PIXEL, ROWS_PER_STRIP, STRIP_BYTE_COUNTS = 273, 277, 278, 279
PLANAR_CONFIG, TILE_WIDTH, TILE_LENGTH, TILE_OFFSETS, TILE_BYTE_COUNTS = 284, 322, 323, 324, 325
COMPRESSION_NONE, COMPRESSION_DEFLATE = 1, 8

Tags = dict[int, tuple[int, Sequence[int]]]


# -- cut from real files ----------------------------------------------------------------------------------
def truncated(src: Path, dest: Path, fraction: float = 0.5) -> Path:
    """The first ``fraction`` of ``src``'s bytes under a new name (same extension by default)."""
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


def text_as_tif(folder: Path) -> Path:
    path = folder / "notes.tif"
    path.write_text("This is a text file, not a TIFF.\nIt only has the extension of one.\n", encoding="utf-8")
    return path


def zero_byte(folder: Path, name: str = "empty.jpg") -> Path:
    path = folder / name
    path.write_bytes(b"")
    return path


def real_pixels(src: Path, width: int, height: int) -> np.ndarray:
    """A ``height × width`` greyscale crop of a real image (top-left), as uint8."""
    from PIL import Image

    with Image.open(src) as im:
        return np.ascontiguousarray(np.asarray(im.convert("L"))[:height, :width])


def pyramid_tiff(src: Path, dest: Path) -> Path:
    """A tiled pyramidal JPEG TIFF of a real image, written by libvips (as slide scanners lay them out)."""
    import pyvips

    image = pyvips.Image.new_from_file(str(src))
    image.tiffsave(str(dest), tile=True, pyramid=True, tile_width=128, tile_height=128, compression="jpeg")
    return dest


def tiled_tiff(src: Path, dest: Path) -> Path:
    """A tiled deflate TIFF of a real image written by tifffile (IFD first, tile data after it)."""
    import tifffile
    from PIL import Image

    with Image.open(src) as im:
        arr = np.asarray(im.convert("RGB"))
    tifffile.imwrite(dest, arr, tile=(128, 128), compression="zlib", photometric="rgb")
    return dest


def strip_tiff(src: Path, dest: Path) -> Path:
    """An untiled TIFF (uncompressed strips of 16 rows) of a real image."""
    import tifffile
    from PIL import Image

    with Image.open(src) as im:
        arr = np.asarray(im.convert("L"))
    tifffile.imwrite(dest, arr, rowsperstrip=16, photometric="minisblack")
    return dest


# -- PNG ----------------------------------------------------------------------------------------------------
def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(folder: Path, width: int = 100_000, height: int = 100_000, name: str = "bomb.png") -> Path:
    """A valid-looking greyscale PNG whose IHDR declares ``width × height`` with a few bytes of IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" + bytes(64), 9)  # one filter byte and a few pixels of the first row
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    path = folder / name
    path.write_bytes(data)
    return path


# -- hand-built classic TIFF --------------------------------------------------------------------------------
def _ifd_size(tags: Tags) -> int:
    """Bytes of an IFD: count, entries, next offset, then the values that do not fit in an entry."""
    size = 2 + 12 * len(tags) + 4
    for typ, values in tags.values():
        raw = len(values) * (2 if typ == SHORT else 4)
        if raw > 4:
            size += raw + (raw & 1)
    return size


def _ifd_bytes(start: int, tags: Tags, next_ifd: int) -> bytes:
    extra_at = start + 2 + 12 * len(tags) + 4
    entries, extra = [], b""
    for tag in sorted(tags):
        typ, values = tags[tag]
        raw = struct.pack(f"<{len(values)}{'H' if typ == SHORT else 'I'}", *values)
        if len(raw) <= 4:
            field = raw.ljust(4, b"\0")
        else:
            field = struct.pack("<I", extra_at + len(extra))
            extra += raw + b"\0" * (len(raw) & 1)
        entries.append(struct.pack("<HHI", tag, typ, len(values)) + field)
    return struct.pack("<H", len(tags)) + b"".join(entries) + struct.pack("<I", next_ifd) + extra


def image_tags(
    width: int,
    height: int,
    offsets: Sequence[int],
    counts: Sequence[int],
    *,
    tile: tuple[int, int] | None = None,
    rows_per_strip: int | None = None,
    compression: int = COMPRESSION_NONE,
) -> Tags:
    """Tags of an 8-bit greyscale image stored in tiles (``tile=(w, h)``) or strips."""
    tags: Tags = {
        IMAGE_WIDTH: (LONG, [width]),
        IMAGE_LENGTH: (LONG, [height]),
        BITS_PER_SAMPLE: (SHORT, [8]),
        COMPRESSION: (SHORT, [compression]),
        PHOTOMETRIC: (SHORT, [1]),
        SAMPLES_PER_PIXEL: (SHORT, [1]),
        PLANAR_CONFIG: (SHORT, [1]),
    }
    if tile is not None:
        tags[TILE_WIDTH] = (LONG, [tile[0]])
        tags[TILE_LENGTH] = (LONG, [tile[1]])
        tags[TILE_OFFSETS] = (LONG, list(offsets))
        tags[TILE_BYTE_COUNTS] = (LONG, list(counts))
    else:
        tags[ROWS_PER_STRIP] = (LONG, [rows_per_strip or height])
        tags[STRIP_OFFSETS] = (LONG, list(offsets))
        tags[STRIP_BYTE_COUNTS] = (LONG, list(counts))
    return tags


def build_tiff(payload: bytes, ifds: Sequence[Tags], links: Sequence[int | None] | None = None) -> bytes:
    """Header, ``payload`` at offset 8, then the IFDs one after another.

    ``links[i]`` is the index of the IFD that IFD ``i`` points to next (None ends the chain); by default each
    points to the one after it. An index at or before ``i`` makes a cycle.
    """
    starts, at = [], 8 + len(payload) + (len(payload) & 1)
    for tags in ifds:
        starts.append(at)
        at += _ifd_size(tags)
    chain = list(links) if links is not None else [*range(1, len(ifds)), None]
    out = b"II*\x00" + struct.pack("<I", starts[0]) + payload + b"\0" * (len(payload) & 1)
    for i, tags in enumerate(ifds):
        nxt = chain[i]
        out += _ifd_bytes(starts[i], tags, 0 if nxt is None else starts[nxt])
    return out


def payload_offset() -> int:
    """Where ``build_tiff`` puts the payload: right after the 8-byte header."""
    return 8


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def tiff_bomb(folder: Path, side: int = 1_000_000, *, tiled: bool = True, name: str = "bomb.tif") -> Path:
    """Declares ``side × side`` pixels; holds one deflated 256² tile (or one strip) of zeros."""
    data = zlib.compress(bytes(256 * 256), 9)
    if tiled:
        tags = image_tags(side, side, [8], [len(data)], tile=(256, 256), compression=COMPRESSION_DEFLATE)
    else:
        tags = image_tags(side, side, [8], [len(data)], rows_per_strip=side, compression=COMPRESSION_DEFLATE)
    return _write(folder, name, build_tiff(data, [tags]))


def strip_decode_bomb(folder: Path, width: int, height: int, strips: int, name: str = "strips.tif") -> Path:
    """An untiled TIFF of ``width × height`` whose ``strips`` strips all point at the same few deflated bytes."""
    data = zlib.compress(bytes(1024), 9)
    rows = -(-height // strips)
    tags = image_tags(
        width, height, [8] * strips, [len(data)] * strips, rows_per_strip=rows, compression=COMPRESSION_DEFLATE
    )
    return _write(folder, name, build_tiff(data, [tags]))


def cyclic_tiff(folder: Path, src: Path, cycle: int = 1, name: str = "cyclic.tif") -> Path:
    """A 64×64 real-pixel strip TIFF with ``cycle`` IFDs whose last next-IFD offset points back to the first."""
    pixels = real_pixels(src, 64, 64).tobytes()
    tags = image_tags(64, 64, [8], [len(pixels)])
    links = [*range(1, cycle), 0]
    return _write(folder, name, build_tiff(pixels, [tags] * cycle, links))


def first_ifd_past_eof(folder: Path, name: str = "ifd_past_eof.tif") -> Path:
    """A TIFF header whose first-IFD offset is far beyond the end of the file."""
    return _write(folder, name, b"II*\x00" + struct.pack("<I", 10_000_000) + bytes(64))


def huge_tile(folder: Path, src: Path, tile: int = 65536, name: str = "huge_tile.tif") -> Path:
    """A 64×64 image that claims one ``tile × tile`` tile, backed by 64×64 real pixels."""
    pixels = real_pixels(src, 64, 64).tobytes()
    tags = image_tags(64, 64, [8], [len(pixels)], tile=(tile, tile))
    return _write(folder, name, build_tiff(pixels, [tags]))


def offsets_past_eof(folder: Path, src: Path, *, tiled: bool, name: str = "past_eof.tif") -> Path:
    """A 64×64 image whose (only) tile/strip offset lies 10 MB past the end of a ~4 kB file."""
    pixels = real_pixels(src, 64, 64).tobytes()
    if tiled:
        tags = image_tags(64, 64, [10_000_000], [64 * 64], tile=(64, 64))
    else:
        tags = image_tags(64, 64, [10_000_000], [len(pixels)])
    return _write(folder, name, build_tiff(pixels, [tags]))


def count_past_eof(folder: Path, src: Path, name: str = "count_past_eof.tif") -> Path:
    """A strip TIFF whose strip starts inside the file but whose byte count runs ~4 GB past its end."""
    pixels = real_pixels(src, 64, 64).tobytes()
    tags = image_tags(64, 64, [8], [0xFFFF_FFF0])
    return _write(folder, name, build_tiff(pixels, [tags]))


def missing_tiles(folder: Path, src: Path, name: str = "missing_tiles.tif") -> Path:
    """A 512×512 tiled image (4 tiles of 256²) that lists only one tile."""
    pixels = real_pixels(src, 256, 256).tobytes()
    tags = image_tags(512, 512, [8], [len(pixels)], tile=(256, 256))
    return _write(folder, name, build_tiff(pixels, [tags]))


def valid_handmade_tiff(folder: Path, src: Path, name: str = "handmade.tif") -> Path:
    """The builder's control: a correct 64×64 strip TIFF of real pixels (must ingest)."""
    pixels = real_pixels(src, 64, 64).tobytes()
    return _write(folder, name, build_tiff(pixels, [image_tags(64, 64, [8], [len(pixels)])]))


# -- the catalogue the tests walk through -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BadFile:
    """A malformed file and what its rejection must say: ``words`` are groups of alternatives, every group
    must match (case-insensitive) somewhere in the reason; ``code`` is the expected error code."""

    path: Path
    words: tuple[tuple[str, ...], ...]
    code: str = "invalid_image"

    def problems(self, reason: str | None) -> list[str]:
        text = (reason or "").lower()
        return [f"none of {group} in {reason!r}" for group in self.words if not any(w.lower() in text for w in group)]


TRUNCATED = ("truncated", "past the end", "malformed", "no image data")
LIMIT = "limit_exceeded"


def bad_image_files(folder: Path, samples: dict[str, Path]) -> dict[str, BadFile]:
    """Every malformed *file* of the issue, written into ``folder`` (which must exist), by file name."""
    work = folder / "sources"
    work.mkdir(exist_ok=True)
    coins = samples["coins.png"]
    files = [
        BadFile(truncated(samples["retina.jpg"], folder / "retina_half.jpg"), (("truncated",),)),
        BadFile(truncated(samples["astronaut.jpg"], folder / "astronaut_half.jpg"), (("truncated",),)),
        BadFile(truncated(coins, folder / "coins_half.png"), (("truncated",),)),
        BadFile(truncated(samples["immunohistochemistry.png"], folder / "ihc_tenth.png", 0.1), (("truncated",),)),
        BadFile(truncated(samples["moon_16bit.tif"], folder / "moon_half.tif"), (TRUNCATED,)),
        BadFile(
            truncated(pyramid_tiff(samples["retina.jpg"], work / "p.tif"), folder / "pyramid_half.tif"), (TRUNCATED,)
        ),
        BadFile(
            truncated(tiled_tiff(samples["immunohistochemistry.png"], work / "t.tif"), folder / "tiled_half.tif"),
            (TRUNCATED,),
        ),
        BadFile(truncated(strip_tiff(coins, work / "s.tif"), folder / "strip_half.tif"), (TRUNCATED,)),
        BadFile(text_as_tif(folder), (("not a supported image", "not an image", "unrecognised"),)),
        BadFile(zero_byte(folder), (("empty", "0 bytes"),)),
        BadFile(tiff_bomb(folder), (("max_image_pixels",), ("1000000x1000000", "1,000,000,000,000")), LIMIT),
        BadFile(
            tiff_bomb(folder, tiled=False, name="bomb_strip.tif"),
            (("max_image_pixels", "max_decode_pixels"), ("1000000x1000000", "1,000,000,000,000")),
            LIMIT,
        ),
        BadFile(strip_decode_bomb(folder, 60_000, 60_000, 60), (("max_decode_pixels",),), LIMIT),
        BadFile(png_bomb(folder), (("max_decode_pixels",), ("100000x100000", "10,000,000,000")), LIMIT),
        BadFile(first_ifd_past_eof(folder), (TRUNCATED,)),
        BadFile(huge_tile(folder, coins), (("tile",), ("malformed", "larger"))),
        BadFile(huge_tile(folder, coins, 0, name="zero_tile.tif"), (("tile",),)),
        BadFile(offsets_past_eof(folder, coins, tiled=True), (("past the end",),)),
        BadFile(offsets_past_eof(folder, coins, tiled=False, name="strip_past_eof.tif"), (("past the end",),)),
        BadFile(count_past_eof(folder, coins), (("past the end",),)),
        BadFile(missing_tiles(folder, coins), (("tiles",),)),
    ]
    return {f.path.name: f for f in files}
