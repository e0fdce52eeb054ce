"""Malformed inputs for the bad-input tests, each written by a small generator into a folder.

Everything is either cut from a real bundled image (scikit-image samples) or a hand-built header around a few
bytes of real pixels: truncations, lies in headers (decompression bombs), cyclic IFD chains, tiles larger than
any real tile, offsets past the end of the file. The TIFF builder writes classic little-endian TIFF by hand so
a test controls every offset.
"""

from __future__ import annotations

import functools
import json
import random
import struct
import zipfile
import zlib
from collections.abc import Iterator, Sequence
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


# -- fuzzing: thousands of malformed files from real seeds ----------------------------------------------------
# benchmarks/fuzz_files.py uploads ≥ 10,000 of these to a running server; tests/test_file_fuzz.py a few
# hundred through the TestClient. Every file is a real encoded image (or annotation archive) that was cut,
# bit-flipped, spliced, or whose header was made to lie, or a bomb built around a few real bytes.
# Deterministic: one seed gives the same files in the same order.
@dataclass(frozen=True, slots=True)
class FuzzFile:
    """One generated file: ``route`` is ``upload`` (POST /api/v1/images) or ``import`` (POST
    /api/v1/imports with ``import_format``); ``how`` says what was done to which seed."""

    name: str
    data: bytes
    route: str
    how: str
    import_format: str | None = None


def _encode(arr: np.ndarray, fmt: str, **options: object) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(arr).save(out, format=fmt, **options)
    return out.getvalue()


def _tifffile(arr: np.ndarray, **options: object) -> bytes:
    import io

    import tifffile

    out = io.BytesIO()
    tifffile.imwrite(out, arr, **options)
    return out.getvalue()


def fuzz_seeds(folder: Path, samples: dict[str, Path]) -> dict[str, bytes]:
    """Small real files of every format the fuzzer mutates, by name (the extension says the format)."""
    from PIL import Image

    from tests.formats import write_dicom_gray, write_dicom_wsi

    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(samples["coins.png"]) as im:
        coins = np.asarray(im.convert("L"))
    with Image.open(samples["immunohistochemistry.png"]) as im:
        ihc = np.asarray(im.convert("RGB"))[:256, :256]
    with Image.open(samples["astronaut.jpg"]) as im:
        astro = np.asarray(im.convert("RGB"))[100:292, 150:342]
    seeds = {
        "coins.png": _encode(coins, "PNG"),
        "ihc.png": _encode(ihc, "PNG"),
        "astronaut.jpg": _encode(astro, "JPEG", quality=85),
        "astronaut_progressive.jpg": _encode(astro, "JPEG", quality=80, progressive=True),
        "coins_strips.tif": _tifffile(coins, rowsperstrip=16, photometric="minisblack"),
        "ihc_tiled.tif": _tifffile(ihc, tile=(64, 64), compression="zlib", photometric="rgb"),
        "ihc_bigtiff.tif": _tifffile(ihc, tile=(64, 64), bigtiff=True, photometric="rgb"),
    }
    big = folder / "ihc_512.png"
    Image.fromarray(np.asarray(Image.open(samples["immunohistochemistry.png"]).convert("RGB"))).save(big)
    seeds["ihc_pyramid.tif"] = pyramid_tiff(big, folder / "ihc_pyramid.tif").read_bytes()
    seeds["coins.dcm"] = write_dicom_gray(folder / "coins.dcm", coins[:128, :128], 0.1).read_bytes()
    seeds["ihc_wsi.dcm"] = write_dicom_wsi(folder / "ihc_wsi.dcm", ihc[:128, :128], 64, 0.5).read_bytes()
    return seeds


# generic mutations: any bytes
def _truncate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    cut = rng.choice([rng.randrange(1, 64), rng.randrange(1, 2048), rng.randrange(1, len(data))])
    return data[: min(cut, len(data) - 1)], f"truncated at {cut}"


def _bitflip(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(data)
    n = rng.choice([1, 2, 4, 16, 64])
    span = len(out) if rng.random() < 0.5 else min(len(out), 2048)  # half the time: where headers live
    for _ in range(n):
        i = rng.randrange(span)
        out[i] ^= 1 << rng.randrange(8)
    return bytes(out), f"{n} bits flipped in the first {span} bytes"


def _overwrite(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(data)
    value = rng.choice([b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\xff", b"\x00\x00\x00\x00"])
    for _ in range(rng.choice([1, 3, 10])):
        i = rng.randrange(min(len(out), 4096))
        out[i : i + len(value)] = value
    return bytes(out[: len(data)]), f"bytes set to {value.hex()}"


def _splice(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    a = rng.randrange(len(data))
    b = min(len(data), a + rng.randrange(1, 4096))
    if rng.random() < 0.5:
        return data[:a] + data[b:], f"bytes {a}:{b} removed"
    return data[:b] + data[a:b] * rng.choice([2, 10]) + data[b:], f"bytes {a}:{b} repeated"


LIES = [0, 1, 2, 3, 255, 256, 65535, 65536, 100_000, 2**31 - 1, 2**31, 2**32 - 1]


# header lies, format by format: the rest of the file stays valid (CRCs recomputed)
def _png_lie(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    field = rng.choice(["width", "height", "both", "depth", "colour"])
    if field == "depth":
        depth = rng.choice([0, 3, 7, 9, 32, 255])
    elif field == "colour":
        colour = rng.choice([1, 5, 7, 255])
    else:
        value = rng.choice([*LIES, width + 1, height * 1000])
        width = value if field in ("width", "both") else width
        height = value if field in ("height", "both") else height
    ihdr = struct.pack(">IIBB", width & 0xFFFFFFFF, height & 0xFFFFFFFF, depth, colour) + data[26:29]
    out = data[:8] + _png_chunk(b"IHDR", ihdr) + data[33:]
    return out, f"IHDR {field}: {width}x{height} depth {depth} colour {colour}"


def _jpeg_lie(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        at = data.find(marker)
        if at > 0:
            break
    else:
        return _bitflip(data, rng)
    out = bytearray(data)
    field = rng.choice(["height", "width", "both", "components", "precision", "length"])
    value = rng.choice([0, 1, 2, 65535, 65500, 30000, 4097])
    if field in ("height", "both"):
        out[at + 5 : at + 7] = struct.pack(">H", value)
    if field in ("width", "both"):
        out[at + 7 : at + 9] = struct.pack(">H", value)
    if field == "components":
        out[at + 9] = rng.choice([0, 2, 4, 255])
    if field == "precision":
        out[at + 4] = rng.choice([0, 12, 16, 255])
    if field == "length":
        out[at + 2 : at + 4] = struct.pack(">H", rng.choice([0, 2, 65535]))
    return bytes(out), f"SOF {field} = {value}"


def _tiff_entries(data: bytes) -> list[tuple[int, int, int, int]]:
    """(entry offset, tag, type, count) of the first IFD of a classic or BigTIFF file (little-endian)."""
    if data[:4] == b"II*\x00":
        ifd = struct.unpack_from("<I", data, 4)[0]
        n = struct.unpack_from("<H", data, ifd)[0]
        return [(ifd + 2 + 12 * i, *struct.unpack_from("<HHI", data, ifd + 2 + 12 * i)) for i in range(n)]
    if data[:4] == b"II+\x00":
        ifd = struct.unpack_from("<Q", data, 8)[0]
        n = struct.unpack_from("<Q", data, ifd)[0]
        return [(ifd + 8 + 20 * i, *struct.unpack_from("<HHQ", data, ifd + 8 + 20 * i)) for i in range(n)]
    return []


def _tiff_lie(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    try:
        entries = _tiff_entries(data)
    except struct.error:
        entries = []
    if not entries:
        return _bitflip(data, rng)
    big = data[2] == 0x2B
    out = bytearray(data)
    what = rng.choice(["value", "value", "count", "next_ifd", "entry_count"])
    at, tag, typ, count = rng.choice(entries)
    interesting = [e for e in entries if e[1] in (256, 257, 258, 259, 273, 277, 278, 279, 322, 323, 324, 325)]
    if interesting and what == "value":
        at, tag, typ, count = rng.choice(interesting)
    value = rng.choice([*LIES, len(data), len(data) + 1, 2**40 if big else 2**32 - 16])
    if what == "value":
        field = at + (12 if big else 8)
        if big:
            out[field : field + 8] = struct.pack("<Q", value % 2**64)
        elif typ == SHORT and count <= 2:
            out[field : field + 2] = struct.pack("<H", value % 2**16)
        else:
            out[field : field + 4] = struct.pack("<I", value % 2**32)
        return bytes(out), f"tag {tag} value = {value}"
    if what == "count":
        if big:
            out[at + 4 : at + 12] = struct.pack("<Q", value % 2**64)
        else:
            out[at + 4 : at + 8] = struct.pack("<I", value % 2**32)
        return bytes(out), f"tag {tag} count = {value}"
    ifd = struct.unpack_from("<Q" if big else "<I", data, 8 if big else 4)[0]
    if what == "entry_count":
        if big:
            out[ifd : ifd + 8] = struct.pack("<Q", value % 2**64)
        else:
            out[ifd : ifd + 2] = struct.pack("<H", value % 2**16)
        return bytes(out), f"IFD entry count = {value}"
    last = entries[-1][0] + (20 if big else 12)
    target = rng.choice([ifd, 0, len(data) + 100, 3, ifd + 1])  # a cycle, the end, past EOF, misaligned
    if big:
        out[last : last + 8] = struct.pack("<Q", target)
    else:
        out[last : last + 4] = struct.pack("<I", target)
    return bytes(out), f"next IFD = {target}"


def _dicom_lie(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    field = rng.choice(
        [
            "Rows",
            "Columns",
            "NumberOfFrames",
            "BitsAllocated",
            "SamplesPerPixel",
            "TotalPixelMatrixColumns",
            "PixelData",
        ]
    )
    if field == "PixelData":
        ds.PixelData = ds.PixelData[: rng.randrange(len(ds.PixelData))]
        value: object = f"{len(ds.PixelData)} bytes"
    elif field == "NumberOfFrames":
        value = rng.choice([0, 2, 1000, 2**31 - 1])
        ds.NumberOfFrames = value
    elif field in ("Rows", "Columns"):
        value = rng.choice([0, 1, 3, 4097, 65535])
        setattr(ds, field, value)
    elif field == "BitsAllocated":
        value = rng.choice([0, 1, 7, 12, 32, 64])
        ds.BitsAllocated = value
    elif field == "SamplesPerPixel":
        value = rng.choice([0, 2, 4, 255])
        ds.SamplesPerPixel = value
    else:
        value = rng.choice([0, 1, 65535, 2**31 - 1, 2**32 - 1])
        ds.TotalPixelMatrixColumns = value
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue(), f"{field} = {value}"


def _lie(name: str, data: bytes, rng: random.Random) -> tuple[bytes, str]:
    if name.endswith(".png"):
        return _png_lie(data, rng)
    if name.endswith(".jpg"):
        return _jpeg_lie(data, rng)
    if name.endswith(".tif"):
        return _tiff_lie(data, rng)
    if name.endswith(".dcm"):
        return _dicom_lie(data, rng)
    return _bitflip(data, rng)


MUTATIONS = {"truncate": _truncate, "bitflip": _bitflip, "overwrite": _overwrite, "splice": _splice}


def _jpeg_bomb(side: int) -> bytes:
    """A baseline JPEG header declaring ``side × side`` (≤ 65535) with the scan of a real 8×8 image."""
    real = _encode(np.full((8, 8), 128, np.uint8), "JPEG")
    at = real.find(b"\xff\xc0")
    return real[: at + 5] + struct.pack(">HH", side, side) + real[at + 9 :]


def _bigtiff_bomb(side: int) -> bytes:
    """A BigTIFF whose only IFD declares ``side × side`` pixels in 256² deflate tiles, one tile stored."""
    tile = zlib.compress(bytes(256 * 256), 9)
    tags = [  # (tag, type, count, value): LONG8 = 16
        (IMAGE_WIDTH, 16, 1, side),
        (IMAGE_LENGTH, 16, 1, side),
        (BITS_PER_SAMPLE, SHORT, 1, 8),
        (COMPRESSION, SHORT, 1, COMPRESSION_DEFLATE),
        (PHOTOMETRIC, SHORT, 1, 1),
        (SAMPLES_PER_PIXEL, SHORT, 1, 1),
        (TILE_WIDTH, SHORT, 1, 256),
        (TILE_LENGTH, SHORT, 1, 256),
        (TILE_OFFSETS, 16, 1, 16),
        (TILE_BYTE_COUNTS, 16, 1, len(tile)),
    ]
    ifd_at = 16 + len(tile) + (len(tile) & 1)
    body = struct.pack("<Q", len(tags))
    for tag, typ, count, value in tags:
        body += struct.pack("<HHQQ", tag, typ, count, value)
    head = b"II+\x00" + struct.pack("<HHQ", 8, 0, ifd_at)
    return head + tile + b"\0" * (len(tile) & 1) + body + struct.pack("<Q", 0)


@functools.cache
def _png_deflate_bomb(side: int) -> bytes:
    """A *valid* ``side × side`` greyscale PNG of zeros: a few hundred kB that inflate to side² bytes."""
    row = b"\x00" + bytes(side)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _dicom_bomb(seed: bytes, frames: int, side: int) -> bytes:
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(seed), force=True)
    ds.Rows = ds.Columns = side
    ds.NumberOfFrames = frames
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def _bomb(seeds: dict[str, bytes], rng: random.Random) -> tuple[str, bytes, str]:
    """A decompression bomb: a header declaring far more pixels than it holds (or, rarely, a real one)."""
    kind = rng.choice(["png", "png", "jpeg", "tiff", "tiff-strip", "bigtiff", "dicom", "strips", "png-real"])
    side = rng.choice([5000, 20_000, 65_535, 100_000, 1_000_000, 2**31 - 1])
    if kind == "png":
        ihdr = struct.pack(">IIBBBBB", side, side, 8, rng.choice([0, 2, 6]), 0, 0, 0)
        idat = zlib.compress(b"\x00" + bytes(64), 9)
        data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
        return "png", data, f"PNG bomb {side}x{side}"
    if kind == "png-real":
        side = rng.choice([3000, 5000])
        return "png", _png_deflate_bomb(side), f"real PNG of zeros {side}x{side} (inflates to {side * side:,} B)"
    if kind == "jpeg":
        side = min(side, 65_535)
        return "jpg", _jpeg_bomb(side), f"JPEG bomb {side}x{side}"
    if kind in ("tiff", "tiff-strip"):
        data = zlib.compress(bytes(256 * 256), 9)
        side = min(side, 2**32 - 1)
        if kind == "tiff":
            tags = image_tags(side, side, [8], [len(data)], tile=(256, 256), compression=COMPRESSION_DEFLATE)
        else:
            tags = image_tags(side, side, [8], [len(data)], rows_per_strip=side, compression=COMPRESSION_DEFLATE)
        return "tif", build_tiff(data, [tags]), f"TIFF bomb ({kind}) {side}x{side}"
    if kind == "bigtiff":
        side = rng.choice([side, 2**40])
        return "tif", _bigtiff_bomb(side), f"BigTIFF bomb {side}x{side}"
    if kind == "strips":
        w = rng.choice([20_000, 60_000])
        data = zlib.compress(bytes(1024), 9)
        strips = rng.choice([10, 60, 1000])
        rows = -(-w // strips)
        tags = image_tags(
            w, w, [8] * strips, [len(data)] * strips, rows_per_strip=rows, compression=COMPRESSION_DEFLATE
        )
        return "tif", build_tiff(data, [tags]), f"strip decode bomb {w}x{w} in {strips} strips"
    frames = rng.choice([1, 1000, 2**31 - 1])
    return "dcm", _dicom_bomb(seeds["coins.dcm"], frames, min(side, 65_535)), f"DICOM bomb {frames} frames of {side}²"


# -- archives and annotation files (the import route) ----------------------------------------------------------
def _zip(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    import io

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return out.getvalue()


def coco_doc(width: int = 384, height: int = 303, name: str = "coins.png") -> bytes:
    doc = {
        "images": [{"id": 1, "file_name": name, "width": width, "height": height}],
        "categories": [{"id": 1, "name": "coin"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 30, 40, 50]},
            {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [[100, 100, 150, 100, 125, 140]]},
        ],
    }
    return json.dumps(doc).encode()


def _overlapping_zip(payload: bytes, copies: int, same_name: bool) -> bytes:
    """Central-directory entries that all point at one local file: members overlap (a "non-recursive" zip
    bomb's trick, https://www.bamsoftware.com/hacks/zipbomb/)."""
    one = _zip([("annotations.json", payload)])
    end = one.rfind(b"PK\x05\x06")
    cd_at = struct.unpack_from("<I", one, end + 16)[0]
    entry = one[cd_at:end]
    entries = b""
    for i in range(copies):
        name = b"annotations.json" if same_name else f"copy{i:06d}.json".encode()
        fixed = bytearray(entry[:46])
        fixed[28:30] = struct.pack("<H", len(name))
        entries += bytes(fixed) + name + entry[46 + struct.unpack_from("<H", entry, 28)[0] :]
    eocd = bytearray(one[end : end + 22])
    eocd[8:10] = eocd[10:12] = struct.pack("<H", min(copies, 0xFFFF))
    eocd[12:16] = struct.pack("<I", len(entries))
    return one[:cd_at] + entries + bytes(eocd)


def _declared_huge_zip(payload: bytes, size: int) -> bytes:
    """Local header and central directory both claim ``size`` uncompressed bytes for a small member."""
    out = bytearray(_zip([("annotations.json", payload)]))
    out[22:26] = struct.pack("<I", size)
    cd = out.rfind(b"PK\x01\x02")
    out[cd + 24 : cd + 28] = struct.pack("<I", size)
    return bytes(out)


@functools.cache
def _deflate_bomb_member(size: int) -> bytes:
    """A zip of one ``size``-byte member of zeros (about size/1000 bytes compressed)."""
    import io

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf, zf.open("zeros.json", "w") as member:
        block = bytes(1 << 20)
        for _ in range(size >> 20):
            member.write(block)
    return out.getvalue()


@functools.cache
def _many_members(n: int) -> bytes:
    return _zip([(f"m/{i:06d}.json", b"") for i in range(n)], zipfile.ZIP_STORED)


def _archive(seeds: dict[str, bytes], rng: random.Random) -> tuple[bytes, str, str]:
    """A hostile or broken zip for the import route: (bytes, format, what it is)."""
    doc = coco_doc()
    kind = rng.choice(
        [
            "nested", "overlap", "overlap-names", "huge-declared", "traversal", "many", "bomb", "prefix-clash",
            "symlink", "long-names", "bad-crc", "encrypted-flag", "mutated", "mutated", "images",
        ]
    )  # fmt: skip
    if kind == "nested":
        data, depth = _zip([("annotations.json", doc)]), rng.choice([1, 3, 10])
        for i in range(depth):
            data = _zip([(f"level{i}.zip", data)])
        return data, "coco", f"zip nested {depth} deep"
    if kind in ("overlap", "overlap-names"):
        copies = rng.choice([2, 100, 5000])
        return _overlapping_zip(doc, copies, kind == "overlap"), "coco", f"{copies} overlapping members ({kind})"
    if kind == "huge-declared":
        size = rng.choice([2**31, 2**32 - 1, 10**9])
        return _declared_huge_zip(doc, size), "coco", f"member declares {size:,} bytes"
    if kind == "traversal":
        name = rng.choice(["../evil.json", "/abs.json", "a/../../evil.json", "C:\\evil.json", "..\\..\\evil.json"])
        return _zip([("annotations.json", doc), (name, doc)]), "coco", f"member {name!r}"
    if kind == "many":
        n = rng.choice([1000, 20_000, 100_001])
        return _many_members(n), "coco", f"{n:,} members"
    if kind == "bomb":
        size = rng.choice([64 << 20, 256 << 20])
        return _deflate_bomb_member(size), "coco", f"one member of {size >> 20} MiB of zeros"
    if kind == "prefix-clash":
        return _zip([("a", b"x"), ("a/annotations.json", doc)]), "coco", "members 'a' and 'a/annotations.json'"
    if kind == "symlink":
        import io

        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as zf:
            zf.writestr("annotations.json", doc)
            link = zipfile.ZipInfo("images/coins.png")
            link.external_attr = (0o120777) << 16
            zf.writestr(link, "/etc/passwd")
        return out.getvalue(), "coco", "symlink member"
    if kind == "long-names":
        name = rng.choice(["é" * 200, "x" * 300, "d/" * 500 + "a.json", "nul\x00.json"])
        return _zip([("annotations.json", doc), (name + ".json", doc)]), "coco", f"member name of {len(name)} chars"
    if kind == "bad-crc":
        data = bytearray(_zip([("annotations.json", doc)], zipfile.ZIP_STORED))
        data[14] ^= 0xFF
        return bytes(data), "coco", "CRC mismatch"
    if kind == "encrypted-flag":
        data = bytearray(_zip([("annotations.json", doc)]))
        data[6] |= 1
        cd = data.rfind(b"PK\x01\x02")
        data[cd + 8] |= 1
        return bytes(data), "coco", "encrypted flag set"
    if kind == "images":  # an imagefolder archive holding a mutated image: the import job ingests it
        seed = rng.choice([n for n in seeds if not n.endswith(".dcm")])
        mutated, how = MUTATIONS[rng.choice(list(MUTATIONS))](seeds[seed], rng)
        return _zip([(f"cells/{seed}", mutated), ("cells/ok.png", seeds["coins.png"])]), "imagefolder", f"{seed} {how}"
    base = _zip([("annotations.json", doc), ("images/coins.png", seeds["coins.png"])])
    mutated, how = MUTATIONS[rng.choice(list(MUTATIONS))](base, rng)
    return mutated, "coco", f"zip {how}"


def _json_doc(rng: random.Random) -> tuple[bytes, str]:
    kind = rng.choice(["mutated", "mutated", "deep", "numbers", "types"])
    if kind == "deep":
        depth = rng.choice([1000, 100_000])
        return b'{"images": ' + b"[" * depth + b"]" * depth + b"}", f"arrays nested {depth} deep"
    if kind == "numbers":
        bad = rng.choice(["1e999", "-1e999", "NaN", "Infinity", "123456789012345678901234567890", "-0"])
        text = coco_doc().decode().replace("20, 30, 40, 50", f"{bad}, 30, 40, 50")
        return text.encode(), f"bbox number {bad}"
    if kind == "types":
        text = json.dumps(
            {"images": rng.choice([{}, "x", [1], [{"id": None}]]), "annotations": rng.choice([None, 1, [[]]])}
        )
        return text.encode(), "wrong types"
    mutated, how = MUTATIONS[rng.choice(list(MUTATIONS))](coco_doc(), rng)
    return mutated, f"JSON {how}"


def fuzz_files(seeds: dict[str, bytes], count: int, seed: int = 0, imports: float = 0.3) -> Iterator[FuzzFile]:
    """``count`` malformed files, about ``imports`` of them for the import route; deterministic per ``seed``."""
    rng = random.Random(seed)
    images = [n for n in seeds]
    for i in range(count):
        if rng.random() < imports:
            if rng.random() < 0.75:
                data, fmt, how = _archive(seeds, rng)
                yield FuzzFile(f"fuzz{i:05d}.zip", data, "import", how, fmt)
            else:
                data, how = _json_doc(rng)
                yield FuzzFile(f"fuzz{i:05d}.json", data, "import", how, "coco")
            continue
        roll = rng.random()
        if roll < 0.06:
            ext, data, how = _bomb(seeds, rng)
            yield FuzzFile(f"fuzz{i:05d}.{ext}", data, "upload", how)
            continue
        name = rng.choice(images)
        if roll < 0.4:
            data, how = _lie(name, seeds[name], rng)
        else:
            kind = rng.choice(list(MUTATIONS))
            data, how = MUTATIONS[kind](seeds[name], rng)
        ext = name.rsplit(".", 1)[1]
        yield FuzzFile(f"fuzz{i:05d}.{ext}", data, "upload", f"{name}: {how}")


def _set_tiff_field(data: bytes, tag: int, *, count: int | None = None, value: int | None = None) -> bytes:
    """A classic little-endian TIFF with one entry of its first IFD changed (count and/or inline value)."""
    out = bytearray(data)
    for at, t, typ, _n in _tiff_entries(data):
        if t == tag:
            if count is not None:
                out[at + 4 : at + 8] = struct.pack("<I", count)
            if value is not None:
                out[at + 8 : at + 10 if typ == SHORT else at + 12] = struct.pack("<H" if typ == SHORT else "<I", value)
            return bytes(out)
    raise KeyError(tag)


def _dicom_with(seed: bytes, **values: object) -> bytes:
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(seed), force=True)
    for key, value in values.items():
        setattr(ds, key, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def found_by_fuzzing(seeds: dict[str, bytes]) -> dict[str, bytes]:
    """One file per server error the fuzzers found (each answered 500 before its fix), by upload name."""
    strips, tiled = seeds["coins_strips.tif"], seeds["ihc_tiled.tif"]
    return {
        "compression_pair.tif": _set_tiff_field(tiled, COMPRESSION, count=2),  # a tuple where int() wanted a number
        "offsets_count.tif": _set_tiff_field(strips, STRIP_OFFSETS, count=2),  # 2 offsets, 19 byte counts
        "tile_rows.tif": _set_tiff_field(tiled, TILE_LENGTH, count=100_000),  # divided by zero
        "one_bit.tif": _set_tiff_field(tiled, BITS_PER_SAMPLE, value=1),  # booleans cannot be subtracted
        "bits12.dcm": _dicom_with(seeds["coins.dcm"], BitsAllocated=12),  # pixel type "uint12"
        "no_columns.dcm": _dicom_with(seeds["ihc_wsi.dcm"], Columns=0),  # divided by zero
        "three_columns.dcm": _dicom_with(seeds["coins.dcm"], Columns=3),  # frames of another shape
        "no_frames.dcm": _dicom_with(seeds["ihc_wsi.dcm"], NumberOfFrames=0),
    }
