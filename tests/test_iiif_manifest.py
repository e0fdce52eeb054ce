"""IIIF Presentation 3 manifests (issue 16): an image with a box, a polygon, a point, a mask and a tag as a Manifest
with W3C Web Annotations whose selectors hold the stored level-0 coordinates; paging past the cap; a dataset version
as a Collection of exactly its images with their frozen annotations.

The server builds its documents as plain dicts (iiif-prezi3 pins an old Pillow, so it is installed for the tests
only); every document a route returns here goes through ``iiif_doc``, which checks it with iiif-prezi3's models."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import iiif_prezi3
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from PIL import Image

import gigavision as gv
from gigavision.formats import iiif_manifest
from gigavision.server.main import create_app

BASE = "http://127.0.0.1"
HOLED = [[[100, 100], [180, 100], [180, 160], [100, 160], [100, 100]], [[120, 120], [140, 120], [140, 140], [120, 120]]]
SCHEMA = {"coin": "box", "rim": "polygon", "centre": "point", "stain": "mask", "silver": "tag", "cell": "box"}
RECORDS: list[dict[str, Any]] = [
    {
        "kind": "box",
        "label": "coin",
        "bbox": [10.5, 20, 50, 60.25],
        "score": 0.875,
        "status": "accepted",
        "source": "model:m1",
    },
    {"kind": "polygon", "label": "rim", "geometry": {"type": "Polygon", "coordinates": HOLED}, "status": "accepted"},
    {"kind": "point", "label": "centre", "geometry": {"type": "Point", "coordinates": [300.4, 40.6]}},
    # a 2 x 3 mask at (200, 200): an L of 4 pixels (COCO RLE of [[1, 0], [1, 0], [1, 1]], pycocotools-encoded)
    {"kind": "mask", "label": "stain", "bbox": [200, 200, 202, 203], "mask": {"size": [3, 2], "counts": "032N"}},
    {"kind": "tag", "label": "silver", "status": "accepted", "source": "user:ana", "attributes": {"era": "roman"}},
    {"kind": "box", "label": "coin", "bbox": [5, 5, 9, 9], "status": "rejected"},
]


@pytest.fixture
def api(workspace: gv.Workspace, samples: dict[str, Path]) -> Iterator[tuple[TestClient, str, list[int]]]:
    (r,) = workspace.ingest([samples["coins.png"]])  # a real 384 x 303 scan
    assert r.id is not None
    with TestClient(create_app(workspace), base_url=BASE) as client:
        for label, kind in SCHEMA.items():
            extra = {"coin": {"color": "#ff8800"}, "silver": {"attributes": {"era": ["greek", "roman"]}}}.get(label, {})
            assert client.put(f"/api/v1/labels/{label}", json={"kind": kind, **extra}).status_code == 200
        added = client.post(f"/api/v1/images/{r.id}/annotations", json={"annotations": RECORDS})
        assert added.status_code == 201, added.text
        yield client, r.id, added.json()["ids"]


MODELS = {
    "Manifest": iiif_prezi3.Manifest,
    "Canvas": iiif_prezi3.Canvas,
    "AnnotationPage": iiif_prezi3.AnnotationPage,
    "Collection": iiif_prezi3.Collection,
}


def iiif_doc(response: Response) -> dict[str, Any]:
    """The response's document, checked by iiif-prezi3's pydantic models (the Presentation 3 schema): they accept it,
    and write it back unchanged, so it holds no key they do not know and no value they would write otherwise (they
    turn a plain-string label into a language map, drop unknown keys, invent missing ids). ``@context`` is only on
    the document itself, as iiif-prezi3 writes it."""
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    written = json.loads(MODELS[doc["type"]](**doc).json())
    assert _no_empty_pages(written) == _no_empty_pages(doc)
    assert doc["@context"] == iiif_manifest.PRESENTATION_CONTEXT and json.dumps(doc).count('"@context"') == 1
    return doc


def _no_empty_pages(value: Any) -> Any:
    """Without empty AnnotationPage ``items``: the models read a page reference (id and type, for the viewer to
    fetch) as a page with ``items: []``; Mirador needs the reference without them."""
    if isinstance(value, list):
        return [_no_empty_pages(v) for v in value]
    if isinstance(value, dict):
        empty = value.get("type") == "AnnotationPage" and value.get("items") == []
        return {k: _no_empty_pages(v) for k, v in value.items() if not (empty and k == "items")}
    return value


def by_label(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["body"][0]["value"]: a for a in items}


def selectors(annotation: dict[str, Any]) -> dict[str, str | dict[str, Any]]:
    return {s["type"]: s.get("value", s) for s in annotation["target"]["selector"]}


def svg_numbers(svg: str) -> list[float]:
    (path,) = re.findall(r'^<svg xmlns="http://www.w3.org/2000/svg"><path d="([^"]+)" fill="none"[^>]*/></svg>$', svg)
    return [float(v) for v in re.findall(r"-?[0-9.]+", path)]


def test_manifest_validates_and_maps_every_kind(api: tuple[TestClient, str, list[int]]) -> None:
    client, image_id, ids = api
    r = client.get(f"/iiif/3/{image_id}/manifest.json")
    assert r.headers["content-type"] == "application/json"
    doc = iiif_doc(r)
    assert doc["id"] == f"{BASE}/iiif/3/{image_id}/manifest.json" and doc["label"] == {"none": ["coins.png"]}
    (canvas,) = doc["items"]
    assert (canvas["width"], canvas["height"]) == (384, 303)
    ((painting,),) = (page["items"] for page in canvas["items"])
    assert painting["motivation"] == "painting" and painting["target"] == canvas["id"]
    (service,) = painting["body"]["service"]
    assert service == {"id": f"{BASE}/iiif/3/{image_id}", "type": "ImageService3", "profile": "level2"}
    info = client.get(f"{service['id']}/info.json").json()
    assert (info["id"], info["width"], info["height"]) == (service["id"], 384, 303)
    (thumb,) = doc["thumbnail"]
    with Image.open(io.BytesIO(client.get(thumb["id"]).content)) as img:
        assert img.format == "JPEG" and img.size == (thumb["width"], thumb["height"]) == (256, 202)

    (page,) = canvas["annotations"]  # few annotations: embedded
    assert iiif_doc(client.get(page["id"]))["items"] == page["items"]  # and served at their page's id
    items = by_label(page["items"])
    assert set(items) == {"coin", "rim", "centre", "stain", "silver"}  # the rejected box is left out
    assert [a["id"] for a in page["items"]] == [f"{BASE}/api/v1/annotations/{i}" for i in ids[:5]]
    assert all(a["motivation"] == "commenting" for a in page["items"])
    assert items["coin"]["body"][1]["value"] == "coin (box, accepted, score 0.875, model:m1)"
    assert items["silver"]["body"][1]["value"] == "silver (tag, accepted, user:ana); era: roman"

    box = selectors(items["coin"])
    assert box["FragmentSelector"] == "xywh=10,20,40,41"  # whole pixels enclosing [10.5, 20, 50, 60.25]
    assert svg_numbers(str(box["SvgSelector"])) == [10.5, 20, 50, 20, 50, 60.25, 10.5, 60.25]
    assert 'stroke="#ff8800"' in str(box["SvgSelector"])  # the class colour
    rim = svg_numbers(str(selectors(items["rim"])["SvgSelector"]))  # exterior then the hole, each closed by Z
    assert rim == [100, 100, 180, 100, 180, 160, 100, 160, 120, 120, 140, 120, 140, 140]
    point = selectors(items["centre"])
    assert point["PointSelector"] == {"type": "PointSelector", "x": 300, "y": 41}
    assert svg_numbers(str(point["SvgSelector"]))[:2] == [300.4 - 4, 40.6]  # the cross's arm, centred on it
    stain = svg_numbers(str(selectors(items["stain"])["SvgSelector"]))  # the mask's pixel outline
    assert sorted(zip(stain[::2], stain[1::2], strict=True)) == sorted(
        [(200, 200), (201, 200), (201, 202), (202, 202), (202, 203), (200, 203)]
    )
    assert items["silver"]["target"] == canvas["id"]  # a tag is about the whole image

    served = iiif_doc(client.get(canvas["id"]))  # every document's id is where it is served
    assert served == {"@context": doc["@context"], **canvas}
    as_jsonld = client.get(f"/iiif/3/{image_id}/manifest.json", headers={"Accept": "application/ld+json"})
    assert as_jsonld.headers["content-type"] == f'application/ld+json;profile="{doc["@context"]}"'
    assert iiif_doc(as_jsonld) == doc


def test_unknown_images_are_404(api: tuple[TestClient, str, list[int]]) -> None:
    client, image_id, _ = api
    for path in (f"/iiif/3/{'0' * 64}/manifest.json", "/iiif/3/coins.png/manifest.json", f"/iiif/3/{'0' * 64}/canvas"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
    past = client.get(f"/iiif/3/{image_id}/annotations.json", params={"page": 2})
    assert past.status_code == 404 and "5 annotations on 1 page(s)" in past.json()["error"]["message"]
    # the tile route beside it is untouched
    assert client.get(f"/iiif/3/{image_id}/full/64,/0/default.jpg").headers["content-type"] == "image/jpeg"


def test_many_annotations_are_paged_and_capped(
    api: tuple[TestClient, str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, image_id, ids = api
    monkeypatch.setattr(iiif_manifest, "PAGE_SIZE", 2)  # 5 annotations: pages of 2, 2, 1; the canvas lists 2
    monkeypatch.setattr(iiif_manifest, "LISTED_PAGES", 2)
    doc = iiif_doc(client.get(f"/iiif/3/{image_id}/manifest.json"))
    refs = doc["items"][0]["annotations"]
    first = f"{BASE}/iiif/3/{image_id}/annotations.json"
    assert refs == [{"id": first, "type": "AnnotationPage"}, {"id": f"{first}?page=2", "type": "AnnotationPage"}]
    assert doc["summary"]["en"][0].startswith("The canvas lists the first 4 of 5 annotations")
    seen, url = [], first
    while url:  # the next links lead past the listed pages to the last one
        page = iiif_doc(client.get(url))
        assert page["id"] == url
        seen += [a["id"] for a in page["items"]]
        url = page.get("next", {}).get("id")
    assert seen == [f"{BASE}/api/v1/annotations/{i}" for i in ids[:5]]
    assert page["id"] == f"{first}?page=3" and page["prev"]["id"] == f"{first}?page=2"


def test_dataset_version_is_a_collection_of_its_images(
    api: tuple[TestClient, str, list[int]], samples: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, coins, _ = api
    ws: gv.Workspace = client.app.state.workspace  # type: ignore[attr-defined]
    ihc, _unlabelled = (r.id for r in ws.ingest([samples["immunohistochemistry.png"], samples["astronaut.jpg"]]))
    record = {"kind": "box", "label": "cell", "bbox": [1, 2, 30, 40], "status": "accepted"}
    assert client.post(f"/api/v1/images/{ihc}/annotations", json={"annotations": [record]}).status_code == 201
    made = client.post("/api/v1/datasets", json={"name": "coins", "filters": ["has=annotations"], "split": "all=1"})
    assert made.status_code == 201, made.text
    # a label added after the version was frozen is in the live manifest only
    late = {"kind": "box", "label": "coin", "bbox": [60, 60, 90, 90], "status": "accepted", "source": "late"}
    assert client.post(f"/api/v1/images/{coins}/annotations", json={"annotations": [late]}).status_code == 201

    root = f"{BASE}/iiif/3/datasets/coins/1"
    collection = iiif_doc(client.get("/iiif/3/datasets/coins/latest/collection.json"))  # latest: ids name version 1
    assert collection["id"] == f"{root}/collection.json"
    wanted = sorted([("coins.png", coins), ("immunohistochemistry.png", ihc)])
    assert [(m["label"]["none"][0], m["id"]) for m in collection["items"]] == [
        (name, f"{root}/images/{i}/manifest.json") for name, i in wanted
    ]
    frozen = iiif_doc(client.get(f"{root}/images/{coins}/manifest.json"))
    assert frozen["partOf"] == [{"id": f"{root}/collection.json", "type": "Collection"}]
    (canvas,) = frozen["items"]
    (embedded,) = canvas["annotations"]
    assert iiif_doc(client.get(embedded["id"]))["items"] == embedded["items"]
    assert iiif_doc(client.get(canvas["id"])) == {"@context": frozen["@context"], **canvas}
    described = [a["body"][1]["value"] for a in embedded["items"]]
    assert [d.split(" (")[0] for d in described] == ["coin", "rim", "silver"]  # the version froze accepted labels
    assert not [d for d in described if "late" in d]  # ... before the late box
    live = iiif_doc(client.get(f"/iiif/3/{coins}/manifest.json"))
    assert [a for a in live["items"][0]["annotations"][0]["items"] if ", late)" in a["body"][1]["value"]]
    assert ["Dataset", "coins@1"] in [[m["label"]["en"][0], m["value"]["none"][0]] for m in frozen["metadata"]]
    assert client.get(f"{root}/images/{_unlabelled}/manifest.json").status_code == 404  # not in the version
    assert client.get("/iiif/3/datasets/coins/2/collection.json").status_code == 404

    monkeypatch.setattr(iiif_manifest, "COLLECTION_PAGE", 1)  # a big version: sub-collections
    top = iiif_doc(client.get(f"{root}/collection.json"))
    assert [c["id"] for c in top["items"]] == [f"{root}/collection.json?page=1", f"{root}/collection.json?page=2"]
    second = iiif_doc(client.get(top["items"][1]["id"]))
    assert [m["id"] for m in second["items"]] == [f"{root}/images/{wanted[1][1]}/manifest.json"]


def test_viewers_elsewhere_may_read_manifests(tmp_path: Path, samples: dict[str, Path]) -> None:
    viewer = "https://viewer.example"
    gv.init_workspace(tmp_path / "ws").close()
    with gv.open_workspace(tmp_path / "ws", server={"cors_origins": [viewer]}, job_workers=0) as ws:
        (r,) = ws.ingest([samples["coins.png"]])
        with TestClient(create_app(ws), base_url=BASE) as client:
            got = client.get(f"/iiif/3/{r.id}/manifest.json", headers={"Origin": viewer})
            assert got.headers["access-control-allow-origin"] == viewer and iiif_doc(got)["type"] == "Manifest"
