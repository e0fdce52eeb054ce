"""The viewer's sample of a crowded viewport (``sample=true``): every class stays, spread over the view.

Before it, a viewport with more annotations than the limit answered the first ``limit`` by id, so a class
added last (40 mitosis proposals next to thousands of nuclei) vanished until zoomed in to 1:1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

import gigavision as gv
from gigavision.annotations import Annotations
from gigavision.server.main import create_app
from gigavision.store.annotations import fair_shares, spread_sample

SIZE = 60  # nuclei: a 60 × 60 grid of 8 px boxes, 16 px apart, over (0, 0)-(960, 960)


def test_fair_shares_keep_small_classes_whole() -> None:
    assert fair_shares(np.array([40, 20_000, 5_000]), 2000).tolist() == [40, 980, 980]
    assert fair_shares(np.array([10, 10]), 100).tolist() == [10, 10]
    assert fair_shares(np.array([700, 700, 700]), 2000).sum() == 2000


def test_spread_sample_covers_every_cell_and_is_stable() -> None:
    # 3,000 boxes crowded in the left two grid columns of a 1000 px view, 100 spread over the rest.
    rng = np.random.default_rng(0)
    crowd = np.c_[rng.uniform(0, 124, 3000), rng.uniform(0, 1000, 3000)]
    sparse = np.c_[rng.uniform(126, 1000, 100), rng.uniform(0, 1000, 100)]
    centres = np.r_[crowd, sparse]
    xyxy = np.c_[centres - 1, centres + 1]
    ids = np.arange(1, len(xyxy) + 1)
    labels = np.array(["nucleus"] * len(ids), dtype=object)
    picked = spread_sample(ids, labels, xyxy, 500, (0, 0, 1000, 1000))
    assert len(picked) == 500 and len(set(picked.tolist())) == 500
    # Every sparse box is kept (its cell has few), the crowd fills what is left.
    assert set(range(3000, 3100)) <= set(picked.tolist())
    # The same boxes again, in another order: the same choice (no blinking from one pan to the next).
    shuffled = rng.permutation(len(ids))
    again = spread_sample(ids[shuffled], labels[shuffled], xyxy[shuffled], 500, (0, 0, 1000, 1000))
    assert sorted(ids[shuffled][again].tolist()) == sorted(ids[picked].tolist())


@pytest.fixture
def crowded(workspace: gv.Workspace, samples: dict[str, Path]) -> Iterator[tuple[TestClient, str]]:
    ws = workspace  # SQLite and PostgreSQL
    (r,) = ws.ingest([samples["immunohistochemistry.png"]])
    assert r.id is not None
    xs, ys = np.meshgrid(np.arange(SIZE) * 16.0, np.arange(SIZE) * 16.0)
    boxes = np.c_[xs.ravel(), ys.ravel(), xs.ravel() + 8, ys.ravel() + 8]
    ws.annotations.add(r.id, Annotations.from_boxes(boxes, "nucleus"), actor="fixture")  # ids first
    mitoses = np.array([[400 + 10 * i, 500, 406 + 10 * i, 506] for i in range(40)], dtype=float)
    ws.annotations.add(r.id, Annotations.from_boxes(mitoses, "mitosis"), actor="fixture")  # ids last
    with TestClient(create_app(ws)) as client:
        yield client, r.id


def test_sampled_viewport_keeps_every_class_and_spreads(
    crowded: tuple[TestClient, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, image_id = crowded
    url = f"/api/v1/images/{image_id}/annotations"
    params = {"bbox": "0,0,1000,1000", "limit": "500", "total": "false"}

    first = client.get(url, params=params).json()
    assert Counter(i["label"] for i in first["items"]) == {"nucleus": 500}  # the old cap: mitoses vanish

    sampled = client.get(url, params={**params, "sample": "true"})
    assert sampled.status_code == 200, sampled.text
    page = sampled.json()
    assert page["count"] == 500 and page["total"] == SIZE * SIZE + 40
    assert page["truncated"] and page["next_cursor"] is None
    assert Counter(i["label"] for i in page["items"]) == {"nucleus": 460, "mitosis": 40}
    # Spread: nuclei from all four quadrants of the view, in id order, each with its version.
    quadrants = Counter((i["bbox"][0] >= 480, i["bbox"][1] >= 480) for i in page["items"] if i["label"] == "nucleus")
    assert len(quadrants) == 4 and min(quadrants.values()) > 80, quadrants
    ids = [i["id"] for i in page["items"]]
    assert ids == sorted(ids) and all(i["version"] == 1 for i in page["items"])

    # Everything fits: the same as without sampling.
    small = {"bbox": "0,0,100,100", "limit": "500"}
    assert (
        client.get(url, params={**small, "sample": "true"}).json()["items"]
        == client.get(url, params=small).json()["items"]
    )

    # Filters apply before sampling; a cursor makes no sense with a sample.
    only = client.get(url, params={**params, "sample": "true", "label": "mitosis"}).json()
    assert only["count"] == 40 and not only["truncated"]
    refused = client.get(url, params={**params, "sample": "true", "cursor": "5"})
    assert refused.status_code == 400 and "cursor" in refused.json()["error"]["message"]

    # One fixture for these too (each costs a crowded workspace on both databases).
    _counts_are_exact_when_the_sample_is_truncated(client, url)
    with monkeypatch.context() as patched:  # past the scan the sample reads: counts by GROUP BY
        patched.setattr("gigavision.store.annotations.SAMPLE_SCAN", 400)  # > limit
        _counts_are_exact_when_the_sample_is_truncated(client, url)
    _source_filter_draws_the_sample_from_one_kind(client, url)
    _source_patterns_read_the_same_in_sql_and_python(client, url)


def _counts_are_exact_when_the_sample_is_truncated(client: TestClient, url: str) -> None:
    """The legend's counts: every match per label in the view, not the sample's (issue 14, item 5)."""
    view = {"bbox": "0,0,480,700", "limit": "300", "sample": "true", "counts": "true", "total": "false"}
    page = client.get(url, params=view).json()
    everything = client.get(url, params={"bbox": view["bbox"], "limit": "100000"}).json()["items"]
    truth = Counter(i["label"] for i in everything)
    assert truth["mitosis"] > 0 and truth["nucleus"] > 1000  # crowded: the page is a sample
    assert page["count"] == 300 and page["truncated"] and page["total"] == truth.total()
    assert page["label_counts"] == dict(truth)
    assert Counter(i["label"] for i in page["items"]) != truth  # the sample's counts are not the view's

    # A hidden class still has its count (the legend's switch shows it); items and total are of the shown.
    only = client.get(url, params={**view, "label": "mitosis"}).json()
    assert only["label_counts"] == dict(truth) and only["total"] == truth["mitosis"]
    assert {i["label"] for i in only["items"]} == {"mitosis"} and not only["truncated"]
    hiding = client.get(url, params={**view, "exclude_label": "nucleus"}).json()
    assert hiding["label_counts"] == dict(truth) and hiding["items"] == only["items"]
    # Without sampling: one GROUP BY, the same counts; without counts=true, none.
    paged = client.get(url, params={"bbox": view["bbox"], "limit": "10", "counts": "true"}).json()
    assert paged["label_counts"] == dict(truth) and paged["total"] == truth.total() and paged["count"] == 10
    assert client.get(url, params={**view, "counts": "false"}).json()["label_counts"] is None


def _source_filter_draws_the_sample_from_one_kind(client: TestClient, url: str) -> None:
    """Model proposals crowd the view: ``source=!model:*`` samples the human labels only, all of them, and
    ``source=model:*`` only the model's; the viewer's model vs human switch sends these."""
    proposals = [
        {"kind": "box", "label": "nucleus", "bbox": [x, y, x + 5, y + 5], "source": "model:det-1"}
        for x in range(2, 500, 8)
        for y in range(2, 500, 16)
    ]  # 2,016: inside the 512 px image
    assert client.post(url, json={"annotations": proposals}).status_code == 201
    view = {"bbox": "0,0,1000,1000", "limit": "200", "sample": "true", "counts": "true"}

    models = client.get(url, params={**view, "source": "model:*"}).json()
    assert models["count"] == 200 and models["total"] == len(proposals) and models["truncated"]
    assert {i["source"] for i in models["items"]} == {"model:det-1"}
    assert models["label_counts"] == {"nucleus": len(proposals)}

    people = client.get(url, params={**view, "source": "!model:*", "label": "mitosis"}).json()
    assert people["count"] == 40 and not people["truncated"]  # every human mitosis, none crowded out
    assert all(not i["source"].startswith("model:") for i in people["items"])
    assert people["label_counts"] == {"nucleus": SIZE * SIZE, "mitosis": 40}

    nothing = client.get(url, params={**view, "source": "!*"}).json()
    assert nothing["count"] == 0 and nothing["label_counts"] == {}
    bare = client.get(url, params={**view, "source": "!"})
    assert bare.status_code == 400 and "!PATTERN" in bare.json()["error"]["message"]


def _source_patterns_read_the_same_in_sql_and_python(client: TestClient, url: str) -> None:
    """``*`` and ``?`` are the only wildcards; ``[``, ``%`` and ``_`` stand for themselves (SQLite GLOB and
    PostgreSQL LIKE read them otherwise) and case matters."""
    from gigavision.store.source_patterns import SourceFilter

    sources = ["model:a", "Model:b", "user:a_b", "user:axb", "x[1]", "x1", "100%", "1000"]
    odd = [{"kind": "box", "label": "odd", "bbox": [i, 0, i + 5, 5], "source": v} for i, v in enumerate(sources)]
    assert client.post(url, json={"annotations": odd}).status_code == 201
    cases = {
        ("model:*",): ["model:a"],
        ("!model:*",): ["Model:b", "user:a_b", "user:axb", "x[1]", "x1", "100%", "1000"],
        ("user:a_b",): ["user:a_b"],
        ("user:a_?",): ["user:a_b"],
        ("user:a?b",): ["user:a_b", "user:axb"],
        ("x[1]", "10?%"): ["x[1]", "100%"],
        ("*", "!user:*", "!x*", "!1*"): ["model:a", "Model:b"],
    }
    for patterns, expected in cases.items():
        page = client.get(url, params={"label": "odd", "source": list(patterns)}).json()
        stored = [i["source"] for i in page["items"]]
        in_memory = [v for v in sources if SourceFilter.parse(patterns).matches(v)]
        assert sorted(stored) == sorted(expected) == sorted(in_memory), patterns
