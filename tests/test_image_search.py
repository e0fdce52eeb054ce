"""The image list's search over REST (GET /api/v1/images?q=&label=&status=&meta=&pending_review=), on SQLite and
PostgreSQL: each filter narrows the page and its total, and they combine."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

import gigavision as gv
from gigavision.server.main import create_app
from gigavision.store.reviews import NewTask


def _names(client: TestClient, **params: str | int) -> tuple[set[str], int]:
    page = client.get("/api/v1/images", params=params)
    assert page.status_code == 200, page.text
    body = page.json()
    return {i["name"] for i in body["items"]}, body["total"]


def test_search_filters(workspace: gv.Workspace, samples: dict[str, Path]) -> None:
    results = workspace.ingest([samples[n] for n in ("coffee.webp", "coins.png", "retina.jpg")])
    ids = {Path(r.path).name: r.id for r in results}
    assert all(ids.values()), results
    with TestClient(create_app(workspace)) as client:
        box = {"kind": "box", "label": "coin", "bbox": [10, 10, 40, 40], "source": "model:m", "status": "proposed"}
        tag = {"kind": "tag", "label": "sky", "source": "user:ana", "status": "accepted"}
        for name, record in (("coins.png", box), ("retina.jpg", tag)):
            added = client.post(f"/api/v1/images/{ids[name]}/annotations", json={"annotations": [record]})
            assert added.status_code == 201, added.text
        patched = client.patch(f"/api/v1/images/{ids['retina.jpg']}/meta", json={"stain": "HE", "batch": 3})
        assert patched.status_code == 200, patched.text
        workspace.reviews.add([NewTask(image_id=ids["coins.png"], reason="selected")], actor="t")

        assert _names(client) == ({"coffee.webp", "coins.png", "retina.jpg"}, 3)
        assert _names(client, q="CoI") == ({"coins.png"}, 1)  # part of the name, any case
        assert _names(client, q="%") == (set(), 0)  # LIKE wildcards are literal
        assert _names(client, label="coin") == ({"coins.png"}, 1)
        assert _names(client, status="accepted") == ({"retina.jpg"}, 1)
        assert _names(client, label="coin", status="accepted") == (set(), 0)  # the same annotation
        assert _names(client, meta="stain=HE") == ({"retina.jpg"}, 1)
        assert _names(client, meta="batch=3") == ({"retina.jpg"}, 1)  # a number matches its text
        assert _names(client, pending_review="true") == ({"coins.png"}, 1)
        assert _names(client, pending_review="false") == ({"coffee.webp", "retina.jpg"}, 2)
        assert _names(client, q="o", limit=1)[1] == 2  # coffee and coins; a page of one keeps the total

        bad = client.get("/api/v1/images", params={"meta": "no-equals-sign"})
        assert bad.status_code == 400 and "meta" in bad.json()["error"]["message"]
