"""The one registry shape (gigavision.registry) behind readers, formats, merge methods, tasks and job kinds."""

from __future__ import annotations

import pytest

from gigavision.errors import InvalidImage, InvalidInput
from gigavision.formats.registry import FORMATS, get_format
from gigavision.images.registry import list_readers, open_image
from gigavision.registry import Registry
from gigavision.tiling.merge import MERGERS


def test_unknown_names_are_refused_the_same_way_everywhere(tmp_path) -> None:
    with pytest.raises(
        InvalidInput,
        match=r"unknown format 'tiff'; known: coco, csv, cvat, geojson, geoparquet, imagefolder, labelstudio, voc",
    ):
        get_format("tiff")
    with pytest.raises(InvalidInput, match=r"unknown merge method 'greedy'; known: ios, nms, none, soft_nms, wbf"):
        MERGERS.resolve("greedy")
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (4, 4)).save(image)
    with pytest.raises(InvalidImage, match=r"unknown reader 'nope'; known: .*pillow"):
        open_image(image, reader="nope")


def test_lazy_entries_are_imported_once_on_first_use() -> None:
    kinds: Registry[str] = Registry("thing")
    kinds.add("dumps", "json:dumps")
    import json

    assert kinds.load("dumps") is json.dumps
    assert list(kinds) == ["dumps"] and "dumps" in kinds
    kinds.discard("dumps")
    with pytest.raises(InvalidInput, match="unknown thing 'dumps'; known: none"):
        kinds.load("dumps")


def test_builtin_readers_and_formats_are_listed() -> None:
    assert {"coco", "voc", "yolo", "geojson", "imagefolder", "csv"} <= set(FORMATS)
    assert {"pillow", "tiff"} <= {entry.name for entry in list_readers()}


def test_threads_racing_for_the_first_lookup_all_see_the_builtins(tmp_path) -> None:
    """The first lookup imports the built-in entries; a thread arriving meanwhile waits for them instead of
    seeing a half-filled table ("unknown reader 'pillow'; known: none" from the tile server, found by the
    browser tests)."""
    import sys
    import threading

    module = tmp_path / "slow_builtins.py"
    module.write_text(
        "import time\nfrom tests.test_registry import RACE\ntime.sleep(0.2)\nRACE.add('only', 'json:dumps')\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        results: list[object] = []
        threads = [threading.Thread(target=lambda: results.append(RACE.load("only"))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("slow_builtins", None)
    import json

    assert results == [json.dumps] * 4


RACE: Registry[str] = Registry("race entry", builtins="slow_builtins")
