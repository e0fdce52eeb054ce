"""Multi-annotator QC on SQLite and PostgreSQL: items, assignment, submission, agreement, consensus,
adjudication, per-annotator quality, bad input and concurrent submissions."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from scipy import ndimage
from skimage import data, measure

import gigavision as gv
from gigavision.active.agreement import MatchOptions, f1_score, fleiss_kappa, match_annotations
from gigavision.active.quality import QualityControl
from gigavision.annotations import Annotations
from gigavision.errors import Conflict, InvalidInput, NotFound


def coin_boxes(level: int) -> Annotations:
    """Boxes around the coins of scikit-image's coins scan, thresholded at ``level``: how an annotator with a
    given eye for faint coins would box them (real objects, real disagreement at the margins)."""
    labelled = measure.label(ndimage.binary_opening(data.coins() > level, iterations=2))
    regions = [r for r in measure.regionprops(labelled) if r.area > 150]
    return Annotations.from_boxes([[r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]] for r in regions], "coin")


@pytest.fixture
def image_id(workspace: gv.Workspace, samples: dict[str, Path]) -> str:
    (r,) = workspace.ingest([samples["coins.png"]])
    assert r.id is not None
    return r.id


@pytest.fixture
def qc(workspace: gv.Workspace) -> QualityControl:
    return QualityControl(workspace)


def new_item(qc: QualityControl, image_id: str, people: list[str], **kw: Any) -> int:
    (item,) = qc.add_items(image_id, kw.pop("kind", "box"), actor="lead", **kw)
    qc.assign([item["id"]], annotators=people, actor="lead")
    return int(item["id"])


def statuses(ws: gv.Workspace, image_id: str, source: str) -> list[str]:
    return [r["status"] for r in ws.annotations.query_records(image_id, sources=[source])]


def test_agreeing_annotators_get_an_automatic_consensus(
    workspace: gv.Workspace, qc: QualityControl, image_id: str
) -> None:
    item = new_item(qc, image_id, ["ana", "bo"], labels=["coin"])
    ana = Annotations.from_boxes([[10, 10, 50, 50], [100, 100, 140, 150]], "coin")
    bo = Annotations.from_boxes([[12, 10, 52, 50], [100, 102, 140, 150], [200, 200, 220, 220]], "coin")
    first = qc.submit(item, "ana", ana)
    assert first["status"] == "open" and first["agreement"] is None and first["consensus"] == []
    done = qc.submit(item, "bo", bo)
    # 2 matches of 2 + 3 boxes: F1 = 0.8, exactly the default threshold
    assert done["status"] == "agreed" and done["agreement"] == pytest.approx(0.8)
    assert done["pairwise"] == {"annotators": ["ana", "bo"], "matrix": [[1.0, 0.8], [0.8, 1.0]]}
    assert done["decided_by"] is None and done["decided_at"] is not None
    consensus = done["consensus"]
    assert [c["bbox"] for c in consensus] == [[11, 10, 51, 50], [100, 101, 140, 150]]
    assert {(c["source"], c["status"], c["label"]) for c in consensus} == {("consensus", "accepted", "coin")}
    assert done["vs_consensus"] == {"ana": 1.0, "bo": pytest.approx(0.8)}
    assert statuses(workspace, image_id, "user:ana") == ["accepted", "accepted"]
    assert statuses(workspace, image_id, "user:bo") == ["accepted", "accepted", "rejected"]
    bo_labels = next(s for s in done["submissions"] if s["annotator"] == "bo")["labels"]
    assert [x["verdict"] for x in bo_labels] == ["accepted", "accepted", "rejected"]
    assert qc.consensus(item_id=item) == qc.consensus(image_id=image_id) == consensus
    assert qc.queue() == ([], 0)


def test_real_boxes_consensus_is_the_mean_of_matched_pairs(
    workspace: gv.Workspace, qc: QualityControl, image_id: str
) -> None:
    item = new_item(qc, image_id, ["ana", "bo"])
    ana, bo = coin_boxes(110), coin_boxes(120)
    qc.submit(item, "ana", ana)
    done = qc.submit(item, "bo", bo)
    expected_f1 = f1_score(ana, bo)
    assert 0.85 < expected_f1 < 1 and done["agreement"] == pytest.approx(expected_f1)
    pairs = match_annotations(ana, bo).pairs
    expected = sorted(((ana.xyxy[i] + bo.xyxy[j]) / 2).tolist() for i, j in pairs)
    assert sorted(c["bbox"] for c in done["consensus"]) == expected  # halves: exact in floating point
    assert len(done["consensus"]) == len(pairs) < min(len(ana), len(bo)) + 1


def test_verdicts_survive_an_interrupted_marking(
    workspace: gv.Workspace, qc: QualityControl, image_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision commits the verdicts; applying them to the annotations can be resumed."""
    item = new_item(qc, image_id, ["ana", "bo"], threshold=0.6)  # F1 2/3 passes
    monkeypatch.setattr(QualityControl, "mark", lambda self, item_id: 0)  # the process dies after the decision
    qc.submit(item, "ana", Annotations.from_boxes([[10, 10, 50, 50], [60, 60, 90, 90]], "coin"))
    assert qc.submit(item, "bo", Annotations.from_boxes([[10, 10, 50, 50]], "coin"))["status"] == "agreed"
    assert statuses(workspace, image_id, "user:ana") == ["proposed", "proposed"]
    monkeypatch.undo()
    assert qc.mark(item) == 3 and qc.mark(item) == 0
    assert statuses(workspace, image_id, "user:ana") == ["accepted", "rejected"]
    assert statuses(workspace, image_id, "user:bo") == ["accepted"]


def test_disagreement_is_adjudicated_by_a_third_person(
    workspace: gv.Workspace, qc: QualityControl, image_id: str
) -> None:
    item = new_item(qc, image_id, ["ana", "cy"])
    ana, cy = coin_boxes(110), coin_boxes(140)  # cy also boxes the faint halves: F1 ≈ 0.62
    qc.submit(item, "ana", ana)
    disputed = qc.submit(item, "cy", cy)
    assert disputed["status"] == "adjudication" and disputed["agreement"] == pytest.approx(f1_score(ana, cy))
    assert disputed["consensus"] == [] and disputed["vs_consensus"] is None
    assert statuses(workspace, image_id, "user:ana") == ["proposed"] * len(ana)
    queue, total = qc.queue()
    assert total == 1 and queue[0]["id"] == item and queue[0]["pairwise"]["annotators"] == ["ana", "cy"]
    assert qc.queue(adjudicator="ana") == ([], 0)  # she labelled it
    assert qc.queue(adjudicator="dee")[1] == 1

    with pytest.raises(InvalidInput, match=r"ana labelled item .* cannot adjudicate"):
        qc.adjudicate(item, "ana", choose="cy")
    with pytest.raises(InvalidInput, match="bo did not label item"):
        qc.adjudicate(item, "dee", choose="bo")
    with pytest.raises(InvalidInput, match="exactly one of"):
        qc.adjudicate(item, "dee")
    qc.assign([item], annotators=["dee"], role="adjudicator", actor="lead")
    with pytest.raises(Conflict, match="assigned to adjudicator dee"):
        qc.adjudicate(item, "eve", choose="ana")
    decided = qc.adjudicate(item, "dee", choose="ana")
    assert decided["status"] == "adjudicated" and decided["decided_by"] == "dee"
    assert decided["adjudicator"]["name"] == "dee" and decided["adjudicator"]["status"] == "submitted"
    assert sorted(c["bbox"] for c in decided["consensus"]) == sorted(ana.xyxy.tolist())
    assert {c["status"] for c in decided["consensus"]} == {"adjudicated"}
    assert statuses(workspace, image_id, "user:ana") == ["accepted"] * len(ana)
    cy_status = statuses(workspace, image_id, "user:cy")
    matched = int(match_annotations(cy, ana).matched_a.sum())
    assert cy_status.count("accepted") == matched and cy_status.count("rejected") == len(cy) - matched
    assert decided["vs_consensus"] == {"ana": 1.0, "cy": pytest.approx(f1_score(cy, ana))}
    with pytest.raises(Conflict, match="already adjudicated by dee"):
        qc.adjudicate(item, "dee", choose="cy")
    assert qc.queue() == ([], 0)

    # a second dispute, decided with the adjudicator's own labels
    other = new_item(qc, image_id, ["ana", "cy"])
    qc.submit(other, "ana", ana)
    qc.submit(other, "cy", cy)
    own = Annotations.from_boxes([[0, 0, 30, 30]], "coin")
    decided = qc.adjudicate(other, "dee", annotations=own)
    assert [c["bbox"] for c in decided["consensus"]] == [[0, 0, 30, 30]]
    assert decided["decision"] == {"how": "labels", "chosen": None}

    rows = {r.annotator: r.as_dict() for r in qc.annotators()}
    peer = f1_score(ana, cy)
    assert rows["ana"] | {"peer_agreement": None} == {
        "annotator": "ana",
        "assigned": 2,
        "submitted": 2,
        "pending": 0,
        "evaluated": 2,
        "agreed": 0,
        "disputed": 2,
        "decided": 2,
        "chosen": 1,
        "adjudicated": 0,
        "adjudicating": 0,
        "peer_agreement": None,
        "consensus_agreement": pytest.approx((1.0 + f1_score(ana, own)) / 2),
        "tag_kappa": None,
    }
    assert rows["ana"]["peer_agreement"] == pytest.approx(peer) == rows["cy"]["peer_agreement"]
    assert rows["cy"]["chosen"] == 0 and rows["dee"]["adjudicated"] == 2 and rows["dee"]["assigned"] == 0
    summary = qc.summary(kind="box")
    assert summary["by_status"] == {"adjudicated": 2} and summary["kinds"]["box"]["disputed"] == 2
    assert summary["kinds"]["box"]["pairs"] == [{"a": "ana", "b": "cy", "items": 2, "f1": pytest.approx(peer)}]


def coin_outlines(level: int) -> Annotations:
    """Outlines of the coins (polygons traced at a threshold), as an annotator with a polygon tool would draw."""
    labelled = measure.label(ndimage.binary_opening(data.coins() > level, iterations=2))
    rings = [
        max(measure.find_contours(labelled == r.label, 0.5), key=len)[:, ::-1]
        for r in measure.regionprops(labelled)
        if r.area > 150
    ]
    return Annotations.from_polygons([shapely.Polygon(ring).buffer(0) for ring in rings], "coin")


def test_polygon_consensus_and_adjudication_with_own_drafts(
    workspace: gv.Workspace, qc: QualityControl, image_id: str
) -> None:
    agreed = new_item(qc, image_id, ["ana", "bo"], kind="polygon")
    ana, bo = coin_outlines(110), coin_outlines(120)
    qc.submit(agreed, "ana", ana)
    done = qc.submit(agreed, "bo", bo)
    assert done["status"] == "agreed" and done["agreement"] == pytest.approx(f1_score(ana, bo))
    pairs = match_annotations(ana, bo).pairs
    fused = [shapely.geometry.shape(c["geometry"]) for c in done["consensus"]]
    assert len(fused) == len(pairs)
    # two members tie on mean IoU: each fused outline is the first submitter's (ana's) outline of that coin
    assert all(any(f.equals(ana.geometry[i]) for i in pairs[:, 0]) for f in fused)

    disputed = new_item(qc, image_id, ["ana", "cy"], kind="polygon", regions=[[0, 0, 200, 150]])
    centre = (ana.xyxy[:, :2] + ana.xyxy[:, 2:]) / 2
    qc.submit(disputed, "ana", ana[(centre[:, 0] < 200) & (centre[:, 1] < 150)])
    qc.submit(disputed, "cy", Annotations.empty())
    assert qc.item(disputed)["status"] == "adjudication"
    drafts = Annotations.from_polygons(
        [[(10, 10), (60, 10), (60, 60)], [(300, 10), (350, 10), (350, 60)]], "coin", source="user:dee"
    )
    workspace.annotations.add(image_id, drafts, actor="dee")  # the second lies outside the item's region
    decided = qc.adjudicate(disputed, "dee", own=True)
    assert [c["bbox"] for c in decided["consensus"]] == [[10, 10, 60, 60]]
    assert statuses(workspace, image_id, "user:dee") == ["accepted", "proposed"]
    assert decided["vs_consensus"] == {"ana": 0.0, "cy": 0.0}


def test_tag_items_with_three_raters_and_kappa(
    workspace: gv.Workspace, qc: QualityControl, samples: dict[str, Path]
) -> None:
    names = ["retina.jpg", "coins.png", "astronaut.jpg", "immunohistochemistry.png"]
    ids = [r.id for r in workspace.ingest([samples[n] for n in names])]
    answers = {  # image -> (ana, bo, cy)
        0: ("healthy", "healthy", "healthy"),
        1: ("disease", "disease", "healthy"),
        2: ("healthy", "healthy", "disease"),
        3: ("disease", "disease", "disease"),
    }
    items = []
    for image in ids:
        assert image is not None
        (item,) = qc.add_items(image, "tag", labels=["healthy", "disease"], required=3, actor="lead")
        items.append(item["id"])
    qc.assign(items, pool=["ana", "bo", "cy"], actor="lead")
    for i, item in enumerate(items):
        for name, tag in zip(("ana", "bo", "cy"), answers[i], strict=True):
            if name == "ana":  # ana tags in the viewer; her proposals on the image are collected
                workspace.annotations.add(ids[i], Annotations.from_tags([tag], source="user:ana"), actor="ana")
                qc.submit(item, "ana")
            else:
                qc.submit(item, name, Annotations.from_tags([tag]))
    got = [qc.item(i) for i in items]
    assert [g["status"] for g in got] == ["agreed", "adjudication", "adjudication", "agreed"]
    assert [g["agreement"] for g in got] == pytest.approx([1, 1 / 3, 1 / 3, 1])  # Fleiss' P_i per item
    assert [c["label"] for c in got[0]["consensus"]] == ["healthy"]
    qc.adjudicate(items[1], "dee", annotations=Annotations.from_tags(["disease"]))
    qc.adjudicate(items[2], "dee", choose="ana")
    assert [c["label"] for c in qc.consensus(item_id=items[2])] == ["healthy"]
    assert {c["status"] for c in qc.consensus(item_id=items[2])} == {"adjudicated"}

    summary = qc.summary(kind="tag")["kinds"]["tag"]
    # counts (healthy, disease) per image: 3-0, 1-2, 2-1, 0-3 -> P̄ 2/3, Pe 1/2 -> κ 1/3
    assert (
        summary["fleiss_kappa"] == pytest.approx(1 / 3) == pytest.approx(fleiss_kappa([[3, 0], [1, 2], [2, 1], [0, 3]]))
    )
    pairs = {(p["a"], p["b"]): p["kappa"] for p in summary["pairs"]}
    assert pairs == {("ana", "bo"): 1.0, ("ana", "cy"): pytest.approx(0.0), ("bo", "cy"): pytest.approx(0.0)}
    rows = {r.annotator: r.as_dict() for r in qc.annotators(kind="tag")}
    # consensus: healthy, disease, healthy, disease; cy said healthy, healthy, disease, disease -> κ 0
    assert rows["ana"]["tag_kappa"] == 1.0 and rows["bo"]["tag_kappa"] == 1.0
    assert rows["cy"]["tag_kappa"] == pytest.approx(0.0) and rows["cy"]["consensus_agreement"] == 0.5
    assert rows["dee"]["adjudicated"] == 2
    # ana's collected tag was marked against the consensus like any submission
    assert statuses(workspace, ids[1], "user:ana") == ["accepted"]
    assert statuses(workspace, ids[2], "user:cy") == ["rejected"]


def test_grid_items_collect_proposals_by_region(
    workspace: gv.Workspace, qc: QualityControl, samples: dict[str, Path]
) -> None:
    (r,) = workspace.ingest([samples["retina.jpg"]])  # 1411 × 1411
    assert r.id is not None
    items = qc.add_items(r.id, "box", grid=(512, 512), actor="lead")
    assert len(items) == 9 and items[0]["region"] == [0, 0, 512, 512] and items[-1]["region"] == [1024] * 2 + [1411] * 2
    with pytest.raises(InvalidInput, match="lies outside the image"):
        qc.add_items(r.id, "box", regions=[[1000, 1000, 1500, 1200]], actor="lead")
    first = items[0]["id"]
    qc.assign([first], annotators=["ana", "bo"], actor="lead")
    # box centres (35, 35) inside the first cell; (520, 120), (545, 545), (730, 730) outside it
    cells = [[10, 10, 60, 60], [480, 100, 560, 140], [490, 490, 600, 600], [700, 700, 760, 760]]
    workspace.annotations.add(r.id, Annotations.from_boxes(cells, "vessel", source="user:ana"), actor="ana")
    mine = qc.submit(first, "ana")
    mine_labels = next(s for s in mine["submissions"] if s["annotator"] == "ana")["labels"]
    assert [x["bbox"] for x in mine_labels] == [[10, 10, 60, 60]]  # only the box whose centre is in the cell
    with pytest.raises(InvalidInput, match="centre outside item"):
        qc.submit(first, "bo", Annotations.from_boxes([[500, 10, 600, 50]], "vessel"))
    assert qc.list_items(image_id=r.id, status="open")[1] == 9
    assert [i["id"] for i in qc.list_items(annotator="ana")[0]] == [first]


def test_labels_stay_hidden_while_open_and_resubmission_replaces(
    workspace: gv.Workspace, qc: QualityControl, image_id: str
) -> None:
    item = new_item(qc, image_id, ["ana", "bo"])
    qc.submit(item, "ana", Annotations.from_boxes([[0, 0, 10, 10]], "coin"))
    seen_by_bo = {s["annotator"]: s for s in qc.item(item, viewer="bo")["submissions"]}
    assert seen_by_bo["ana"]["status"] == "submitted" and seen_by_bo["ana"]["labels"] is None
    assert qc.item(item, viewer="bo")["labels_hidden"] is True
    assert qc.item(item)["submissions"][0]["labels"] is None
    assert qc.agreement(item)["pairwise"] is None
    own = {s["annotator"]: s for s in qc.item(item, viewer="ana")["submissions"]}["ana"]["labels"]
    assert [x["bbox"] for x in own] == [[0, 0, 10, 10]]
    old_id = own[0]["id"]
    again = qc.submit(item, "ana", Annotations.from_boxes([[20, 20, 40, 40]], "coin"))
    assert [x["bbox"] for x in again["submissions"][0]["labels"]] == [[20, 20, 40, 40]]
    assert [h["action"] for h in workspace.annotations.history(old_id)] == ["create", "delete"]
    qc.submit(item, "bo", Annotations.from_boxes([[20, 20, 40, 41]], "coin"))
    revealed = qc.item(item, viewer="bo")
    assert revealed["labels_hidden"] is False and all(s["labels"] for s in revealed["submissions"])
    with pytest.raises(Conflict, match="submissions closed"):
        qc.submit(item, "ana", Annotations.empty())


def test_pool_assignment_balances_work(qc: QualityControl, image_id: str) -> None:
    items = [i["id"] for i in qc.add_items(image_id, "point", regions=[[0, 0, 100, 100]] * 6, actor="lead")]
    assert qc.unstaffed() == items
    report = qc.assign(items, pool=["ana", "bo", "cy"], actor="lead")
    load: dict[str, int] = {}
    for r in report:
        assert len(r.added) == 2 == len(set(r.added))
        for name in r.added:
            load[name] = load.get(name, 0) + 1
    assert load == {"ana": 4, "bo": 4, "cy": 4}
    assert qc.unstaffed() == []
    again = qc.assign(items, pool=["ana", "bo", "cy"], actor="lead")
    assert all(r.added == [] for r in again)
    on_first = report[0].added
    explicit = qc.assign(items[:1], annotators=["ana", "dee"], actor="lead")[0]
    assert explicit.kept == [n for n in ["ana", "dee"] if n in on_first]
    assert explicit.added == [n for n in ["ana", "dee"] if n not in on_first]
    (needy,) = qc.add_items(image_id, "point", required=3, actor="lead")
    with pytest.raises(InvalidInput, match=r"needs 3 more annotator.*only 2 pool member"):
        qc.assign([needy["id"]], pool=["ana", "bo"], actor="lead")


def test_bad_input_is_refused_with_the_reason(qc: QualityControl, image_id: str) -> None:
    checks: list[tuple[Callable[[], Any], type[Exception], str]] = [
        (lambda: qc.add_items(image_id, "box", required=1, actor="lead"), InvalidInput, "required must be"),
        (lambda: qc.add_items(image_id, "box", threshold=1.5, actor="lead"), InvalidInput, "threshold must be"),
        (lambda: qc.add_items(image_id, "box", threshold=-0.1, actor="lead"), InvalidInput, "threshold must be"),
        (lambda: qc.add_items(image_id, "cube", actor="lead"), InvalidInput, "kind must be"),
        (lambda: qc.add_items(image_id, "box", regions=[[0, 0, 500, 10]], actor="lead"), InvalidInput, "outside"),
        (lambda: qc.add_items(image_id, "box", regions=[[5, 5, 5, 9]], actor="lead"), InvalidInput, "x1 > x0"),
        (lambda: qc.add_items(image_id, "box", regions=[[1, 2, 3]], actor="lead"), InvalidInput, "four numbers"),
        (lambda: qc.add_items(image_id, "box", grid=(0, 10), actor="lead"), InvalidInput, "at least 1×1"),
        (lambda: qc.add_items(image_id, "box", grid=(10.5, 10), actor="lead"), InvalidInput, "whole numbers"),
        (lambda: qc.add_items(image_id, "box", regions=["0,0,9,9"], actor="lead"), InvalidInput, "four numbers"),
        (lambda: qc.add_items("0" * 64, "box", actor="lead"), NotFound, "no image"),
        (lambda: qc.add_items(image_id, "box", actor="a:b"), InvalidInput, "actor name"),
        (lambda: qc.add_items(image_id, "box", actor="consensus"), InvalidInput, "reserved"),
        (lambda: qc.submit(999, "ana"), NotFound, "no QC item with id 999"),
        (lambda: qc.adjudicate(999, "dee", choose="ana"), NotFound, "no QC item"),
        (lambda: qc.item(999), NotFound, "no QC item"),
        (lambda: qc.assign([999], annotators=["ana"], actor="lead"), NotFound, "no QC item"),
        (lambda: qc.list_items(status="done"), InvalidInput, "status must be"),
    ]
    for call, error, message in checks:
        with pytest.raises(error, match=message):
            call()
    item = new_item(qc, image_id, ["ana", "bo"], labels=["coin"])
    with pytest.raises(InvalidInput, match=r"cy is not assigned to item \d+ \(its annotators: ana, bo\)"):
        qc.submit(item, "cy", Annotations.empty())
    with pytest.raises(InvalidInput, match=r"label 'dust'; item .* takes coin"):
        qc.submit(item, "ana", Annotations.from_boxes([[0, 0, 5, 5]], "dust"))
    with pytest.raises(InvalidInput, match=r"is a polygon; item .* takes box annotations only"):
        qc.submit(item, "ana", Annotations.from_polygons([[(0, 0), (5, 0), (5, 5)]], "coin"))
    with pytest.raises(Conflict, match="still open"):
        qc.adjudicate(item, "dee", choose="ana")
    with pytest.raises(Conflict, match="adjudicators are assigned to adjudication items only"):
        qc.assign([item], annotators=["dee"], role="adjudicator", actor="lead")
    with pytest.raises(InvalidInput, match="a name is given twice"):
        qc.assign([item], annotators=["cy", "cy"], actor="lead")
    qc.submit(item, "ana", Annotations.empty())
    agreed = qc.submit(item, "bo", Annotations.empty())  # both saw nothing: F1 1.0, an empty consensus
    assert agreed["status"] == "agreed" and agreed["agreement"] == 1.0 and agreed["consensus"] == []
    with pytest.raises(Conflict, match="agreed automatically"):
        qc.adjudicate(item, "dee", choose="ana")
    with pytest.raises(Conflict, match="annotators are assigned to open items only"):
        qc.assign([item], annotators=["cy"], actor="lead")
    (tag_item,) = qc.add_items(image_id, "tag", regions=[[0, 0, 100, 100]], actor="lead")
    qc.assign([tag_item["id"]], annotators=["ana", "bo"], actor="lead")
    with pytest.raises(InvalidInput, match="tags have no position"):
        qc.submit(tag_item["id"], "ana")
    with pytest.raises(InvalidInput, match="a tag is given twice"):
        qc.submit(tag_item["id"], "ana", Annotations.from_tags(["x", "x"]))


@pytest.mark.parametrize("extra", [0, 2])
def test_concurrent_submissions_write_one_consensus(
    workspace: gv.Workspace, qc: QualityControl, image_id: str, extra: int
) -> None:
    """All annotators submit at the same moment; exactly ``required`` submissions count and the consensus
    is written once (``extra`` annotators beyond the required two race for the last places)."""
    people = ["ana", "bo", "cy", "dee"][: 2 + extra]
    labels = {name: coin_boxes(110 + 2 * k) for k, name in enumerate(people)}
    items = [new_item(qc, image_id, people) for _ in range(3)]
    for item in items:
        barrier = threading.Barrier(len(people))
        outcome: dict[str, Any] = {}

        def hand_in(
            name: str, item: int = item, barrier: threading.Barrier = barrier, outcome: dict[str, Any] = outcome
        ) -> None:
            barrier.wait()
            try:
                outcome[name] = qc.submit(item, name, labels[name])["status"]
            except Conflict as exc:
                outcome[name] = exc

        threads = [threading.Thread(target=hand_in, args=(n,)) for n in people]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        accepted = [n for n, v in outcome.items() if isinstance(v, str)]
        assert len(accepted) == 2 and all(isinstance(outcome[n], Conflict) for n in people if n not in accepted)
        final = qc.item(item)
        raters = final["pairwise"]["annotators"]
        assert sorted(raters) == sorted(accepted) and final["status"] == "agreed"
        expected = len(match_annotations(labels[raters[0]], labels[raters[1]], MatchOptions()).pairs)
        assert len(qc.consensus(item_id=item)) == expected
    every = workspace.annotations.query_records(image_id, sources=["consensus"])
    assert len(every) == sum(len(qc.consensus(item_id=i)) for i in items)
    assert np.unique([r["id"] for r in every]).size == len(every)
