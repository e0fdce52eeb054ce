"""The HTTP surface: IIIF and Deep Zoom tiles against read_region, passthrough, caching, REST images."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import gigavision as gv
from gigavision.demo import make_slide
from gigavision.server.main import create_app


def decode(body: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(body)) as im:
        arr = np.asarray(im.convert("RGB") if im.mode not in ("L", "1") else im)
    return arr if arr.ndim == 3 else arr[:, :, None]


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int32) - b.astype(np.int32)).mean())


@pytest.fixture(scope="module")
def slide_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_slide(tmp_path_factory.mktemp("slide") / "slide.tif", 6000, 4000, mpp=0.5, seed=1)


@pytest.fixture
def served(
    workspace: gv.Workspace, slide_file: Path, samples: dict[str, Path]
) -> Iterator[tuple[TestClient, gv.Workspace, dict[str, str]]]:
    results = workspace.ingest([slide_file, samples["retina.jpg"], samples["moon_16bit.tif"]])
    ids = {r.name: r.id for r in results if r.id}
    with TestClient(create_app(workspace)) as client:
        yield client, workspace, ids


def test_image_list_get_and_paging(served: tuple[TestClient, gv.Workspace, dict[str, str]]) -> None:
    client, _, ids = served
    page = client.get("/api/v1/images", params={"limit": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 2 and page["offset"] == 0
    rest = client.get("/api/v1/images", params={"offset": 2, "limit": 2}).json()
    assert [i["name"] for i in page["items"] + rest["items"]] == ["slide.tif", "retina.jpg", "moon_16bit.tif"]
    one = client.get(f"/api/v1/images/{ids['slide.tif']}").json()
    assert (one["width"], one["height"], one["mpp_x"]) == (6000, 4000, pytest.approx(0.5))
    assert one["urls"]["dzi"] == f"/dzi/{ids['slide.tif']}.dzi" and len(one["levels"]) >= 5
    thumb = client.get(one["urls"]["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert max(decode(thumb.content).shape[:2]) == 512
    missing = client.get("/api/v1/images/" + "0" * 64)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_iiif_info_and_tiles_match_read_region(
    served: tuple[TestClient, gv.Workspace, dict[str, str]],
) -> None:
    client, ws, ids = served
    image_id = ids["slide.tif"]
    info = client.get(f"/iiif/3/{image_id}/info.json", headers={"Origin": "https://viewer.example"})
    # no cross-origin read unless [server] cors_origins names the origin (tests/test_boundary.py)
    assert info.status_code == 200 and "access-control-allow-origin" not in info.headers
    body = info.json()
    assert body["id"].endswith(f"/iiif/3/{image_id}") and (body["width"], body["height"]) == (6000, 4000)
    src = ws.open_source(image_id)
    # an aligned tile at full resolution: the stored JPEG bytes, decoded equal to the reader's pixels
    tile = client.get(f"/iiif/3/{image_id}/512,256,256,256/256,/0/default.jpg")
    assert tile.status_code == 200 and tile.headers["x-gigavision-tile"] == "stored"
    assert np.array_equal(decode(tile.content), src.read_window(0, 512, 256, 256, 256))
    # an aligned tile at scale factor 4
    tile4 = client.get(f"/iiif/3/{image_id}/1024,1024,1024,1024/256,/0/default.jpg")
    assert tile4.headers.get("x-gigavision-tile") == "stored"
    assert np.array_equal(decode(tile4.content), src.read_window(2, 256, 256, 256, 256))
    # unaligned: decoded and resampled from the best level, close to a direct read
    odd = client.get(f"/iiif/3/{image_id}/1000,700,900,600/450,/0/default.png")
    assert odd.status_code == 200 and "x-gigavision-tile" not in odd.headers
    expected = src.read_window(1, 500, 350, 450, 300)
    assert decode(odd.content).shape == (300, 450, 3) and mean_abs(decode(odd.content), expected) < 2


def test_iiif_transformations(served: tuple[TestClient, gv.Workspace, dict[str, str]]) -> None:
    client, ws, ids = served
    base = f"/iiif/3/{ids['retina.jpg']}"
    src = ws.open_source(ids["retina.jpg"])
    ref = src.read_window(0, 100, 200, 300, 200)
    plain = decode(client.get(f"{base}/100,200,300,200/max/0/default.png").content)
    assert np.array_equal(plain, ref)  # PNG: lossless, exact
    rot = decode(client.get(f"{base}/100,200,300,200/max/90/default.png").content)
    assert np.array_equal(rot, np.rot90(ref, -1))
    mirrored = decode(client.get(f"{base}/100,200,300,200/max/!0/default.png").content)
    assert np.array_equal(mirrored, ref[:, ::-1])
    gray = decode(client.get(f"{base}/100,200,300,200/max/0/gray.png").content)
    assert gray.shape == (200, 300, 1)
    bitonal = decode(client.get(f"{base}/100,200,300,200/max/0/bitonal.png").content)
    assert set(np.unique(bitonal)) <= {0, 1, 255}
    webp = client.get(f"{base}/square/!128,128/0/default.webp")
    assert webp.headers["content-type"] == "image/webp" and decode(webp.content).shape == (128, 128, 3)
    up = client.get(f"{base}/0,0,100,100/^200,/0/default.jpg")
    assert decode(up.content).shape == (200, 200, 3)
    assert client.get(f"{base}/0,0,100,100/200,/0/default.jpg").status_code == 400
    link = client.get(f"{base}/pct:0,0,50,50/!100,100/0/default.jpg").headers["link"]
    assert f"{base}/0,0,706,706/100,100/0/default.jpg>" in link and 'rel="canonical"' in link


def test_non_8bit_images_render_through_the_display_window(
    served: tuple[TestClient, gv.Workspace, dict[str, str]],
) -> None:
    client, _, ids = served
    tile = client.get(f"/iiif/3/{ids['moon_16bit.tif']}/full/max/0/default.png")
    arr = decode(tile.content)
    assert arr.dtype == np.uint8 and arr.shape[:2] == (512, 512)
    assert arr.min() < 40 and arr.max() > 215  # stretched to the full 8-bit range, not clipped to white


def test_deep_zoom_descriptor_and_tiles(served: tuple[TestClient, gv.Workspace, dict[str, str]]) -> None:
    client, ws, ids = served
    image_id = ids["slide.tif"]
    dzi = client.get(f"/dzi/{image_id}.dzi")
    assert dzi.status_code == 200 and 'TileSize="256"' in dzi.text and 'Width="6000" Height="4000"' in dzi.text
    top = math.ceil(math.log2(6000))
    src = ws.open_source(image_id)
    deep = client.get(f"/dzi/{image_id}_files/{top}/3_2.jpeg")
    assert deep.headers.get("x-gigavision-tile") == "stored"
    assert np.array_equal(decode(deep.content), src.read_window(0, 768, 512, 256, 256))
    edge = client.get(f"/dzi/{image_id}_files/{top}/23_15.jpeg")  # last column/row: 6000-5888, 4000-3840
    assert decode(edge.content).shape == (160, 112, 3)
    assert mean_abs(decode(edge.content), src.read_window(0, 5888, 3840, 112, 160)) < 2
    one = client.get(f"/dzi/{image_id}_files/0/0_0.jpeg")
    assert decode(one.content).shape == (1, 1, 3)
    mid = client.get(f"/dzi/{image_id}_files/{top - 3}/1_0.jpeg")  # 1/8 scale (750x500): pyramid level 3
    assert mid.headers.get("x-gigavision-tile") == "stored"
    assert np.array_equal(decode(mid.content), src.read_window(3, 256, 0, 256, 256))
    assert client.get(f"/dzi/{image_id}_files/{top}/99_0.jpeg").status_code == 404


def test_tiles_are_immutable_and_conditional(served: tuple[TestClient, gv.Workspace, dict[str, str]]) -> None:
    client, _, ids = served
    url = f"/dzi/{ids['slide.tif']}_files/10/1_1.jpeg"
    first = client.get(url)
    assert "immutable" in first.headers["cache-control"] and first.headers["etag"]
    again = client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert first.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in first.headers["content-security-policy"]


def test_renderer_cache_serves_repeats(served: tuple[TestClient, gv.Workspace, dict[str, str]]) -> None:
    client, _, ids = served
    renderer = client.app.state.renderer  # type: ignore[attr-defined]
    url = f"/iiif/3/{ids['retina.jpg']}/10,10,500,500/250,/0/default.jpg"
    a = client.get(url).content
    hits = renderer.cache.hits
    assert client.get(url).content == a and renderer.cache.hits == hits + 1


def test_upload_then_duplicate(
    served: tuple[TestClient, gv.Workspace, dict[str, str]], samples: dict[str, Path]
) -> None:
    client, ws, _ = served
    data = samples["coins.png"].read_bytes()
    first = client.post("/api/v1/images", files={"file": ("../../coins.png", data, "image/png")})
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["status"] == "added" and body["name"] == "coins.png" and (body["width"], body["height"]) == (384, 303)
    second = client.post("/api/v1/images", files={"file": ("other.png", data, "image/png")})
    assert second.status_code == 200 and second.json()["status"] == "duplicate" and second.json()["id"] == body["id"]
    assert ws.list_images()[1] == 4
    assert list((ws.root / "cache" / "uploads").iterdir()) == []  # spooled uploads are cleaned up


def test_health_openapi_and_index(served: tuple[TestClient, gv.Workspace, dict[str, str]]) -> None:
    client, _, _ = served
    assert client.get("/healthz").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    assert {"/api/v1/images", "/api/v1/images/{image_id}", "/iiif/3/{image_id}/info.json"} <= set(spec["paths"])
    index = client.get("/")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert client.head("/").status_code == 200  # health checkers often use HEAD
