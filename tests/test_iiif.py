"""IIIF Image API 3.0 request parsing, following the examples of the specification."""

from __future__ import annotations

import pytest

from gigavision.errors import InvalidInput, LimitExceeded
from gigavision.geometry import Region
from gigavision.server.iiif import (
    NotImplementedFeature,
    info_json,
    parse_region,
    parse_request,
    parse_rotation,
    parse_size,
    scale_factors,
)

W, H = 6000, 4000
BIG = 10**9


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("full", Region(0, 0, W, H)),
        ("square", Region(1000, 0, 4000, 4000)),
        ("125,15,120,140", Region(125, 15, 120, 140)),
        ("pct:41.6,7.5,40,70", Region(2496, 300, 2400, 2800)),
        ("5900,3900,500,500", Region(5900, 3900, 100, 100)),  # cropped at the image edge
    ],
)
def test_regions(text: str, expected: Region) -> None:
    assert parse_region(text, W, H) == expected


@pytest.mark.parametrize("text", ["6000,0,10,10", "0,0,0,10", "1,2,3", "-1,0,5,5", "pct:a,b,c,d", "../etc", ""])
def test_bad_regions(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_region(text, W, H)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max", (1200, 800)),
        ("600,", (600, 400)),
        (",200", (300, 200)),
        ("pct:50", (600, 400)),
        ("300,300", (300, 300)),
        ("!600,600", (600, 400)),
        ("^2400,", (2400, 1600)),
        ("^max", (1200, 800)),
    ],
)
def test_sizes(text: str, expected: tuple[int, int]) -> None:
    assert parse_size(text, 1200, 800, BIG) == expected


def test_max_respects_max_area() -> None:
    w, h = parse_size("max", 40_000, 25_000, 4096 * 4096)
    assert w * h <= 4096 * 4096 and abs(w / h - 1.6) < 0.01


@pytest.mark.parametrize("text", ["2400,", "pct:150", "1201,800", ",", "0,", "abc", "!600,", "pct:-5"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_size(text, 1200, 800, BIG)


def test_size_over_tile_limit() -> None:
    with pytest.raises(LimitExceeded, match="max_tile_pixels"):
        parse_size("5000,5000", 6000, 6000, 4096 * 4096)


def test_rotation() -> None:
    assert parse_rotation("0") == (0, False)
    assert parse_rotation("!90") == (90, True)
    assert parse_rotation("270") == (270, False)
    assert parse_rotation("360") == (0, False)
    with pytest.raises(NotImplementedFeature):
        parse_rotation("22.5")
    for bad in ("-90", "400", "x", "!"):
        with pytest.raises(InvalidInput):
            parse_rotation(bad)


def test_request_and_canonical_form() -> None:
    req = parse_request("full", "max", "0", "default", "jpg", 1000, 800, BIG)
    assert req.canonical(1000, 800, (1000, 800)) == "full/max/0/default.jpg"
    req = parse_request("pct:10,10,50,50", "!250,250", "!90", "gray", "png", 1000, 800, BIG)
    assert req.canonical(1000, 800, (500, 400)) == "100,80,500,400/250,200/!90/gray.png"
    with pytest.raises(InvalidInput, match="quality"):
        parse_request("full", "max", "0", "sepia", "jpg", 10, 10, BIG)
    with pytest.raises(InvalidInput, match="format"):
        parse_request("full", "max", "0", "default", "tif", 10, 10, BIG)


def test_info_json_tiles_and_sizes() -> None:
    info = info_json("http://x/iiif/3/abc", 40_000, 25_000, 256, 4096 * 4096)
    assert info["type"] == "ImageService3" and info["profile"] == "level2"
    assert info["tiles"] == [{"width": 256, "height": 256, "scaleFactors": scale_factors(40_000, 25_000, 256)}]
    assert scale_factors(40_000, 25_000, 256)[-1] == 256  # 40000/256 ≈ 156 → fits one tile
    sizes = info["sizes"]
    assert isinstance(sizes, list) and all(s["width"] * s["height"] <= 4096 * 4096 for s in sizes)
