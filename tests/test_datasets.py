"""Dataset versions on SQLite and PostgreSQL: freezing, immutability, content hashes, grouped / stratified /
near-duplicate-aware splits, kept splits across versions, diff, CLI and REST.

Images are real photographs from the ``samples`` fixture: 8 dihedral centre crops of each of four photos
(32 distinct images) plus three near-duplicates of ``coins.png`` (the PNG, a 75 % resize re-encoded as JPEG
quality 60, and a JPEG at quality 25 of full size).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import imagehash
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import update

import gigavision as gv
from gigavision.annotations import Annotations
from gigavision.cli.main import main
from gigavision.datasets import DatasetVersion, create_version, diff_versions, list_versions, open_version
from gigavision.errors import Conflict, InvalidInput, NotFound
from gigavision.server.main import create_app
from gigavision.store.schema import ImageRow

PHOTOS = ("astronaut.jpg", "coffee.webp", "immunohistochemistry.png", "retina.jpg")
DUPLICATES = ("coins.png", "coins_small.jpg", "coins_q25.jpg")


@pytest.fixture(scope="session")
def dataset_files(samples: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("dataset-images")
    paths = []
    for photo in PHOTOS:
        arr = np.asarray(Image.open(samples[photo]).convert("RGB"))
        h, w = arr.shape[:2]
        side = min(h, w) // 2
        crop = arr[(h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
        for k in range(8):
            r = np.rot90(crop, k // 2)
            r = r[:, ::-1] if k % 2 else r
            path = out / f"{photo.split('.')[0]}_{k}.png"
            Image.fromarray(np.ascontiguousarray(r)).save(path)
            paths.append(path)
    coins = Image.open(samples["coins.png"])
    coins.save(out / "coins.png")
    coins.resize((coins.width * 3 // 4, coins.height * 3 // 4), Image.Resampling.LANCZOS).save(
        out / "coins_small.jpg", quality=60
    )
    coins.save(out / "coins_q25.jpg", quality=25)
    return [*paths, *(out / n for n in DUPLICATES)]


def ingest(ws: gv.Workspace, files: list[Path]) -> dict[str, str]:
    """name -> image id."""
    results = ws.ingest(files)
    assert all(r.status == "added" for r in results), [r.reason for r in results if r.status != "added"]
    return {r.name: str(r.id) for r in results}


def tag(ws: gv.Workspace, image_id: str, label: str, status: str = "accepted", source: str = "user:ana") -> int:
    (new,) = ws.annotations.add(image_id, Annotations.from_tags([label], status=[status], source=[source]), "ana")
    return new


@pytest.fixture
def images(workspace: gv.Workspace, dataset_files: list[Path]) -> dict[str, str]:
    return ingest(workspace, dataset_files)


def classes_by_name(ids: dict[str, str]) -> dict[str, str]:
    """A fixed class per image: a : b : c = 5 : 2 : 1 over the crops; the near-duplicates are all "a"."""
    out = {}
    for i, name in enumerate(sorted(n for n in ids if n not in DUPLICATES)):
        out[name] = "a" if i % 8 < 5 else "b" if i % 8 < 7 else "c"
    return out | dict.fromkeys(DUPLICATES, "a")


def splits_by_name(version: DatasetVersion) -> dict[str, str]:
    return {e.name: str(e.split) for e in version.images()}


# -- creating, reading back, hashing ------------------------------------------------------------------------
def test_create_freezes_consensus_and_reads_back(workspace: gv.Workspace, images: dict[str, str]) -> None:
    ws = workspace
    ws.labels.set("a", "tag", color="#00ff00")
    ws.labels.set("b", "tag")
    ws.labels.set("c", "tag")
    ws.labels.set("cell", "box")
    for name, label in classes_by_name(images).items():
        tag(ws, images[name], label)
    astronaut = images["astronaut_0.png"]
    boxes = Annotations.from_boxes([[1, 2, 30, 40], [50, 50, 60, 70]], "cell", status=["adjudicated", "proposed"])
    box_ids = ws.annotations.add(astronaut, boxes, actor="bo")

    calls: list[tuple[int, int, str]] = []
    v1 = create_version(ws, "photos", actor="ana", progress=lambda d, t, m: calls.append((d, t, m)))
    assert (v1.ref, v1.name, v1.version, v1.created_by) == ("photos@1", "photos", 1, "ana")
    assert len(v1) == 35 and v1.counts["images"] == 35
    # default statuses: accepted + adjudicated (consensus); the proposed box is not frozen
    assert v1.counts["annotations"] == 35 + 1
    assert v1.counts["labels"] == {"a": 23, "b": 8, "c": 4, "cell": 1}
    assert v1.spec["statuses"] == ["accepted", "adjudicated"]
    assert calls[-1] == (1, 1, "done") and ("perceptual hashes" in {m for _, _, m in calls})
    assert any(m == "freezing annotations" and d == t == 35 for d, t, m in calls)

    # 35 images at 0.8/0.1/0.1: exact counts; the three near-duplicates are one group
    per_split = {s: p["images"] for s, p in v1.counts["splits"].items()}
    assert per_split == {"train": 28, "val": 4, "test": 3} or per_split == {"train": 28, "val": 3, "test": 4}
    assert sum(per_split.values()) == 35
    assert v1.counts["groups"] == 33 and v1.counts["near_duplicates"] == {"pairs": 2, "images": 3}
    assert v1.counts["splits"]["train"]["achieved"] == pytest.approx(28 / 35, abs=1e-6)

    # AnnotatedImages: schema, images in (name, id) order, frozen annotations with their ids and versions
    assert [c["name"] for c in v1.classes()] == ["a", "b", "c", "cell"]
    assert v1.classes()[0] == {"name": "a", "kind": "tag", "color": "#00ff00", "parent": None, "attributes": {}}
    entries = list(v1.images())
    assert [e.name for e in entries] == sorted(images)
    assert {e.id for e in entries} == set(images.values())
    assert entries[0].name == "astronaut_0.png" and (entries[0].width, entries[0].height) == (256, 256)
    frozen = v1.annotations(astronaut)
    assert sorted(frozen.label.tolist()) == ["a", "cell"] and box_ids[0] in frozen.id.tolist()
    assert box_ids[1] not in frozen.id.tolist()
    assert all(r["version"] == 1 for r in v1.records(astronaut))
    train = list(v1.images("train"))
    assert len(train) == per_split["train"] and {e.split for e in train} == {"train"}

    # refs: NAME, NAME@latest, NAME@N
    assert open_version(ws, "photos").ref == open_version(ws, "photos@latest").ref == "photos@1"
    assert open_version(ws, "photos@1").content_hash == v1.content_hash

    # the same content again: refused, naming the version that has it; forced: same hash, next number
    with pytest.raises(Conflict, match=r"photos@1 already holds exactly this content"):
        create_version(ws, "photos")
    v2 = create_version(ws, "photos", allow_duplicate=True)
    assert v2.ref == "photos@2" and v2.content_hash == v1.content_hash
    # proposed annotations included on request: a different hash
    v3 = create_version(ws, "photos", statuses=["accepted", "adjudicated", "proposed"])
    assert v3.counts["annotations"] == 37 and v3.content_hash != v1.content_hash
    assert [v.ref for v in list_versions(ws)] == ["photos@1", "photos@2", "photos@3"]
    assert open_version(ws, "photos").ref == "photos@3"

    with pytest.raises(NotFound, match="has no version 7; its versions: 1-3"):
        open_version(ws, "photos@7")
    with pytest.raises(NotFound, match="no dataset named 'nope'; datasets: photos"):
        open_version(ws, "nope")
    with pytest.raises(NotFound, match="is not in dataset photos@1"):
        v1.annotations("0" * 64)


def test_content_hash_is_independent_of_creation_details(workspace: gv.Workspace, images: dict[str, str]) -> None:
    """Same images, annotations, schema and split ratios: the same hash under another name, actor or spec."""
    for name, label in classes_by_name(images).items():
        tag(workspace, images[name], label)
    a = create_version(workspace, "one", split="train=0.5,test=0.5", actor="ana")
    b = create_version(workspace, "two", split={"train": 0.5, "test": 0.5}, actor="bo", filters=["image=*"])
    assert a.content_hash == b.content_hash and splits_by_name(a) == splits_by_name(b)
    c = create_version(workspace, "three", split="train=0.5,test=0.5", seed=7)
    assert splits_by_name(c) != splits_by_name(a) and c.content_hash != a.content_hash
    assert create_version(workspace, "four", split="train=0.5,test=0.5", seed=7).content_hash == c.content_hash


def test_versions_never_change(workspace: gv.Workspace, images: dict[str, str]) -> None:
    ws = workspace
    ws.labels.set("cell", "polygon")
    ws.labels.set("cells", "tag")  # class kinds are enforced: the tag and the box get classes of their kind
    ws.labels.set("cell box", "box")
    astronaut, coffee = images["astronaut_0.png"], images["coffee_0.png"]
    square = [(10, 10), (50, 10), (50, 40), (10, 40)]
    ids = ws.annotations.add(
        astronaut, Annotations.from_polygons([square, square], "cell", status=["accepted", "accepted"]), "ana"
    )
    keep = tag(ws, coffee, "cells")
    v1 = create_version(ws, "cells", filters=["has=annotations"])
    assert len(v1) == 2 and v1.counts["annotations"] == 3
    before = v1.records(astronaut)
    first_key = {e["id"]: e["annotations_sha"] for e in v1.page()[0]}

    # edit the live annotations and the schema: delete one, relabel another, add a third
    ws.labels.set("nucleus", "polygon")
    ws.annotations.delete(ids[0], 1, actor="bo")
    ws.annotations.update(ids[1], 1, {"label": "nucleus"}, actor="bo")
    (added,) = ws.annotations.add(
        astronaut, Annotations.from_boxes([[0, 0, 5, 5]], "cell box", status=["accepted"]), actor="bo"
    )

    again = open_version(ws, "cells@1")
    assert again.records(astronaut) == before and again.content_hash == v1.content_hash
    assert sorted(again.annotations(astronaut).id.tolist()) == sorted(ids)
    assert again.annotations(astronaut).geometry[0].equals(Annotations.from_polygons([square], "x").geometry[0])

    v2 = create_version(ws, "cells", filters=["has=annotations"])
    assert v2.content_hash != v1.content_hash
    records = {r["id"]: r for r in v2.records(astronaut)}
    assert set(records) == {ids[1], added} and records[ids[1]]["label"] == "nucleus"
    assert records[ids[1]]["version"] == 2
    # the unchanged image shares its frozen blob with the first version
    second_key = {e["id"]: e["annotations_sha"] for e in v2.page()[0]}
    assert second_key[coffee] == first_key[coffee] and second_key[astronaut] != first_key[astronaut]
    stored = sorted(p for p in Path(ws.settings.workspace, "blobs", "datasets").rglob("*.json.gz"))
    assert len(stored) == 3  # coffee, astronaut v1, astronaut v2
    payload = json.loads(gzip.decompress(stored[0].read_bytes()))
    assert payload["format"] == "gigavision.frozen-annotations/1" and len(payload["records"]) >= 1

    d = diff_versions(ws, "cells@1", "cells@2")
    assert (d["a"], d["b"], d["same_content"]) == ("cells@1", "cells@2", False)
    assert d["images"]["added"]["count"] == d["images"]["removed"]["count"] == d["images"]["moved"]["count"] == 0
    assert d["images"]["unchanged"] == 2
    assert {k: d["annotations"][k] for k in ("added", "removed", "changed", "unchanged")} == {
        "added": 1,
        "removed": 1,
        "changed": 1,
        "unchanged": 1,
    }
    (change,) = d["annotations"]["images"]["items"]
    assert change == {
        "id": astronaut,
        "name": "astronaut_0.png",
        "added": [added],
        "removed": [ids[0]],
        "changed": [ids[1]],
    }
    assert d["classes"]["added"] == ["nucleus"] and d["spec"] == {"base": {"a": None, "b": "cells@1"}}
    assert keep not in change["changed"]


# -- splits -------------------------------------------------------------------------------------------------
def test_near_duplicates_always_share_a_split(workspace: gv.Workspace, images: dict[str, str]) -> None:
    thumbs = [imagehash.phash(Image.open(workspace.thumbnail_path(images[n]))) for n in DUPLICATES]
    assert max(thumbs[0] - thumbs[1], thumbs[0] - thumbs[2], thumbs[1] - thumbs[2]) <= 4  # really near-identical
    assert len({images[n] for n in DUPLICATES}) == 3  # three different files (different sha256)
    split = "train=0.34,val=0.33,test=0.33"
    for seed in range(6):
        v = create_version(workspace, f"dups-{seed}", split=split, seed=seed)
        placed = splits_by_name(v)
        assert len({placed[n] for n in DUPLICATES}) == 1, (seed, {n: placed[n] for n in DUPLICATES})
        assert v.counts["near_duplicates"]["images"] == 3
        groups = {e["group"] for e in v.page(limit=100)[0] if e["name"] in DUPLICATES}
        assert len(groups) == 1
    # without near-duplicate control they are three independent units, and some seed separates them
    separated = 0
    for seed in range(6):
        v = create_version(workspace, f"free-{seed}", split=split, seed=seed, dup_distance=-1)
        assert v.counts["groups"] == 35 and v.counts["near_duplicates"] == {"pairs": 0, "images": 0}
        separated += len({splits_by_name(v)[n] for n in DUPLICATES}) > 1
    assert separated >= 1
    # exact-hash mode (0) still joins them: their hashes are identical
    assert create_version(workspace, "exact", split=split, dup_distance=0).counts["near_duplicates"]["images"] == 3


def test_stratified_split_keeps_class_proportions(workspace: gv.Workspace, images: dict[str, str]) -> None:
    labels = classes_by_name(images)
    for name, label in labels.items():
        tag(workspace, images[name], label)
    per_class = Counter(labels.values())
    assert per_class == {"a": 23, "b": 8, "c": 4}
    ratios = {"train": 0.5, "val": 0.25, "test": 0.25}
    for seed in (0, 1, 2):
        v = create_version(workspace, f"strat-{seed}", split=ratios, stratify=True, seed=seed)
        placed = splits_by_name(v)
        got = Counter((labels[n], placed[n]) for n in labels)
        for c, n_c in per_class.items():
            for s, r in ratios.items():
                assert abs(got[(c, s)] - r * n_c) <= 1.0, (seed, c, s, got)
        assert v.counts["splits"]["val"]["classes"] == {c: got[(c, "val")] for c in "abc" if got[(c, "val")]}
        assert v.spec["stratify"] is True
        # every class is present in every split
        assert all(got[(c, s)] >= 1 for c in per_class for s in ratios)
    v = create_version(workspace, "plain", split=ratios)
    assert {s: p["images"] for s, p in v.counts["splits"].items()} in (
        {"train": 18, "val": 9, "test": 8},
        {"train": 18, "val": 8, "test": 9},
        {"train": 17, "val": 9, "test": 9},
    )


def test_group_by_metadata_keeps_patients_together(workspace: gv.Workspace, images: dict[str, str]) -> None:
    patients = {n: f"p{i % 7}" for i, n in enumerate(sorted(images)) if not n.startswith("retina")}
    with workspace.session.begin() as s:
        for name, patient in patients.items():
            s.execute(update(ImageRow).where(ImageRow.id == images[name]).values(meta={"patient": patient}))
    v = create_version(workspace, "patients", group_by="meta:patient", split="train=0.6,val=0.2,test=0.2")
    placed = splits_by_name(v)
    by_patient: dict[str, set[str]] = {}
    for name, patient in patients.items():
        by_patient.setdefault(patient, set()).add(placed[name])
    assert all(len(s) == 1 for s in by_patient.values()), by_patient
    assert len({next(iter(s)) for s in by_patient.values()}) > 1  # patients spread over splits
    assert v.counts["ungrouped"] == 8  # the retina crops have no patient: each is its own unit
    # the coins near-duplicates belong to patients p2, p3 and p4: those three patients become one group
    assert {patients[n] for n in DUPLICATES} == {"p2", "p3", "p4"}
    assert len({placed[n] for n, p in patients.items() if p in ("p2", "p3", "p4")}) == 1
    assert v.counts["groups"] == 5 + 8 and v.spec["group_by"] == "meta:patient"
    only = create_version(workspace, "p3", filters=["meta:patient=p3"])
    assert sorted(e.name for e in only.images()) == sorted(n for n, p in patients.items() if p == "p3")


def test_new_versions_keep_splits_and_diff_reports_changes(workspace: gv.Workspace, images: dict[str, str]) -> None:
    ws = workspace
    v1 = create_version(ws, "grow", filters=["image=astronaut_*,coffee_*"], split="train=0.5,val=0.25,test=0.25")
    assert len(v1) == 16 and v1.spec["base"] is None
    v2 = create_version(ws, "grow", split="train=0.5,val=0.25,test=0.25")
    assert len(v2) == 35 and v2.spec["base"] == "grow@1"
    first, second = splits_by_name(v1), splits_by_name(v2)
    assert all(second[n] == s for n, s in first.items())  # no image changed sides
    assert (v2.counts["kept"], v2.counts["moved"]) == (16, 0)
    assert abs(v2.counts["splits"]["train"]["images"] - 17.5) <= 1.5
    d = diff_versions(ws, v1, v2, limit=5)
    assert d["images"]["added"]["count"] == 19 and len(d["images"]["added"]["items"]) == 5
    assert d["images"]["added"]["truncated"] is True
    assert d["images"]["added"]["items"][0]["name"] == "coins.png"  # (name, id) order
    assert d["images"]["moved"]["count"] == 0 and d["images"]["unchanged"] == 16
    assert d["spec"]["filters"] == {"a": {"image": ["astronaut_*", "coffee_*"]}, "b": {}}

    # reshuffled: a fresh assignment, reported as moves
    v3 = create_version(ws, "grow", split="train=0.5,val=0.25,test=0.25", reshuffle=True, seed=3)
    moved = diff_versions(ws, "grow@2", "grow@3")["images"]["moved"]
    assert moved["count"] > 0 and v3.spec["base"] is None
    assert all(m["from"] == second[m["name"]] and m["to"] == splits_by_name(v3)[m["name"]] for m in moved["items"])
    # removed images: a narrower filter
    v4 = create_version(ws, "grow", filters=["image=retina_*"], split="train=0.5,val=0.25,test=0.25")
    d = diff_versions(ws, "grow@3", v4.ref)
    assert d["images"]["removed"]["count"] == 27 and d["images"]["unchanged"] == 8


def test_filters_select_images_and_annotations(workspace: gv.Workspace, images: dict[str, str]) -> None:
    ws = workspace
    coffee, retina = images["coffee_0.png"], images["retina_0.png"]
    tag(ws, coffee, "cup", source="user:ana")
    tag(ws, coffee, "bean", source="model:det@3")
    ws.annotations.add(retina, Annotations.from_boxes([[5, 5, 9, 9]], "cup", status=["accepted"]), "ana")
    tag(ws, retina, "vessel", status="proposed")

    v = create_version(ws, "f1", filters=["has=annotations", "source=user:*"])
    assert [e.name for e in v.images()] == ["coffee_0.png"]  # the retina box's source is "unknown"
    assert v.annotations(coffee).label.tolist() == ["cup"]
    v = create_version(ws, "f1x", filters=["has=annotations", "source=!model:*"])  # people's labels only
    assert v.annotations(coffee).label.tolist() == ["cup"] and v.annotations(retina).label.tolist() == ["cup"]
    v = create_version(ws, "f2", filters=["label=cup", "kind=box"])
    assert len(v) == 35 and v.counts["annotations"] == 1 and [c["name"] for c in v.classes()] == ["cup"]
    assert v.classes()[0]["kind"] == "box"  # not in the schema: the kind it is used with
    v = create_version(ws, "f3", filters=["status=proposed", "has=annotations"])
    assert [e.name for e in v.images()] == ["retina_0.png"] and v.spec["statuses"] == ["proposed"]
    v = create_version(ws, "f4", filters=[f"image_id={coffee},{retina}", "image=coffee*"])
    assert [e.name for e in v.images()] == ["coffee_0.png"]
    v = create_version(ws, "f5", filters={"image": ["retina_1.png", "retina_2.png"]}, split="all=1")
    assert [e.split for e in v.images()] == ["all", "all"] and v.counts["splits"]["all"]["achieved"] == 1.0

    with pytest.raises(InvalidInput, match="the filters select no images"):
        create_version(ws, "f6", filters=["image=*.tif"])
    with pytest.raises(InvalidInput, match="either --status or --filter status"):
        create_version(ws, "f7", filters=["status=accepted"], statuses=["proposed"])


def test_qc_submissions_are_not_frozen_twice(workspace: gv.Workspace, images: dict[str, str]) -> None:
    """Multi-annotator QC marks matching submissions accepted; only their consensus is frozen by default."""
    from gigavision.store.schema import Base, utcnow

    if "qc_labels" not in Base.metadata.tables:
        pytest.skip("no multi-annotator QC tables in this tree")
    coffee = images["coffee_0.png"]
    ana = tag(workspace, coffee, "cup", source="user:ana")
    bo = tag(workspace, coffee, "cup", source="user:bo")
    consensus = tag(workspace, coffee, "cup", source="consensus")
    items, links = Base.metadata.tables["qc_items"], Base.metadata.tables["qc_labels"]
    with workspace.engine.begin() as conn:
        item = conn.execute(
            items.insert().values(
                image_id=coffee,
                kind="tag",
                labels=[],
                required=2,
                threshold=0.8,
                params={},
                status="agreed",
                version=2,
                created_by="lead",
                created_at=utcnow(),
            )
        ).inserted_primary_key[0]
        conn.execute(
            links.insert(),
            [
                {"item_id": item, "annotation_id": ana, "annotator": "ana", "role": "submission"},
                {"item_id": item, "annotation_id": bo, "annotator": "bo", "role": "submission"},
                {"item_id": item, "annotation_id": consensus, "annotator": None, "role": "consensus"},
            ],
        )
    v = create_version(workspace, "qc", filters=["has=annotations"])
    assert v.annotations(coffee).id.tolist() == [consensus] and v.spec["qc_submissions"] is False
    everything = create_version(workspace, "qc-all", filters=["has=annotations"], qc_submissions=True)
    assert sorted(everything.annotations(coffee).id.tolist()) == sorted([ana, bo, consensus])


def test_split_helpers() -> None:
    from gigavision.datasets.splits import UnionFind, assign_splits, group_order_key, near_duplicate_pairs

    rng = np.random.default_rng(1)
    base = rng.integers(0, 2**63, 300, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, 300).astype(np.uint64)
    hashes = np.concatenate([base, base[:50] ^ flips[:50], base[:10]])  # near copies and exact copies
    for distance in (0, 1, 4):
        pairs = near_duplicate_pairs(hashes, distance)
        uf = UnionFind(len(hashes))
        for i, j in pairs.tolist():
            uf.union(i, j)
        bits = np.array([[bin(int(a) ^ int(b)).count("1") for b in hashes] for a in hashes])
        brute = UnionFind(len(hashes))
        for i, j in zip(*np.nonzero(np.triu(bits <= distance, k=1)), strict=True):
            brute.union(int(i), int(j))
        assert uf.groups() == brute.groups()
        assert (pairs[:, 0] < pairs[:, 1]).all()
    assert len(near_duplicate_pairs(hashes[:1], 4)) == 0

    groups = [[i] for i in range(100)]
    keys = [group_order_key(0, [str(i)]) for i in range(100)]
    chosen = assign_splits(groups, [""] * 100, {"train": 0.7, "val": 0.2, "test": 0.1}, keys)
    assert Counter(chosen) == {0: 70, 1: 20, 2: 10}
    assert assign_splits(groups, [""] * 100, {"train": 0.7, "val": 0.2, "test": 0.1}, keys) == chosen
    fixed = assign_splits(groups, [""] * 100, {"train": 0.7, "val": 0.2, "test": 0.1}, keys, {0: 2, 1: 2})
    assert fixed[:2] == [2, 2] and Counter(fixed) == {0: 70, 1: 20, 2: 10}
    assert group_order_key(3, ["b", "a"]) == group_order_key(3, ["a", "b"]) != group_order_key(4, ["a", "b"])


def test_damaged_frozen_blob_is_an_error(sqlite_workspace: gv.Workspace, dataset_files: list[Path]) -> None:
    from gigavision.errors import ConfigError

    ids = ingest(sqlite_workspace, dataset_files[:2])
    first = next(iter(ids.values()))
    tag(sqlite_workspace, first, "x")
    v = create_version(sqlite_workspace, "fragile", split="all=1")
    assert [e.bands for e in v.images()] == [3, 3]
    sha = v.image(first)["annotations_sha"]
    blob = sqlite_workspace.root / "blobs" / "datasets" / "annotations" / sha[:2] / f"{sha}.json.gz"
    records = v.records(first)
    assert records[0]["label"] == "x"
    damaged = {"format": "gigavision.frozen-annotations/1", "records": [{**records[0], "label": "y"}]}
    blob.write_bytes(gzip.compress(json.dumps(damaged).encode()))
    with pytest.raises(ConfigError, match="are damaged"):
        v.records(first)


def test_create_as_a_job_reports_progress_and_cancels_cleanly(
    sqlite_workspace: gv.Workspace, dataset_files: list[Path], tmp_path: Path
) -> None:
    from gigavision.datasets.jobs import run_create
    from gigavision.jobs.context import JobCancelled, JobContext

    ingest(sqlite_workspace, dataset_files[:4])
    reports: list[tuple[float, str]] = []

    def context(cancel: bool) -> JobContext:
        return JobContext(
            sqlite_workspace, "job1", "ana", tmp_path / "job", lambda f, m: reports.append((f, m)), lambda: cancel
        )

    with pytest.raises(JobCancelled):
        run_create(context(cancel=True), {"name": "queued", "split": "a=0.5,b=0.5"})
    assert list_versions(sqlite_workspace) == []
    summary = run_create(context(cancel=False), {"name": "queued", "split": "a=0.5,b=0.5", "seed": 2})
    assert summary["ref"] == "queued@1" and summary["created_by"] == "ana" and summary["spec"]["seed"] == 2
    assert reports and reports[-1] == (1.0, "done")
    with pytest.raises(InvalidInput, match="unknown dataset parameters"):
        run_create(context(cancel=False), {"name": "queued", "splits": "a=1"})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filters": ["label"]}, "must look like key=value"),
        ({"filters": ["lable=x"]}, "unknown filter key 'lable' (did you mean 'label'?)"),
        ({"filters": ["label="]}, "has no values"),
        ({"filters": ["kind=cube"]}, "kind must be one of"),
        ({"filters": ["status=acepted"]}, "is not one of proposed"),
        ({"filters": ["has=labels"]}, "only has=annotations"),
        ({"filters": ["image_id=abc"]}, "filter image_id: no image with id or name 'abc'"),
        ({"split": "train=0.8,val=0.1"}, "must sum to 1, got 0.9"),
        ({"split": "train=0.8,train=0.2"}, "given twice"),
        ({"split": "Train=1"}, "split name 'Train'"),
        ({"split": "train=-0.5,val=1.5"}, "positive number"),
        ({"split": "train=x,val=1"}, "is not a number"),
        ({"split": "train"}, "each part must be name=ratio"),
        ({"group_by": "patient"}, "must be 'image' or 'meta:KEY'"),
        ({"dup_distance": 65}, "dup-distance must be 0..32"),
        ({"statuses": ["maybe"]}, "'maybe' is not one of"),
        ({"seed": -1}, "seed must be an integer"),
    ],
)
def test_bad_specs_are_clear_errors(sqlite_workspace: gv.Workspace, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        create_version(sqlite_workspace, "bad", **kwargs)  # type: ignore[arg-type]
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("ref", "error", "message"),
    [
        ("", InvalidInput, "NAME@N"),
        ("a b", InvalidInput, "dataset name 'a b'"),
        ("x" * 65, InvalidInput, "1-64 characters"),
        ("..", InvalidInput, "dataset name '..'"),
        ("ok@0", InvalidInput, "version number ≥ 1"),
        ("ok@v2", InvalidInput, "version number ≥ 1"),
        ("ok@2", NotFound, "no dataset named 'ok'; none created yet"),
    ],
)
def test_bad_refs(sqlite_workspace: gv.Workspace, ref: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(")):
        open_version(sqlite_workspace, ref)


# -- CLI and REST -------------------------------------------------------------------------------------------
def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli(sqlite_workspace: gv.Workspace, dataset_files: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    ids = ingest(sqlite_workspace, dataset_files[:10])
    for i, image_id in enumerate(ids.values()):
        tag(sqlite_workspace, image_id, "x" if i % 2 else "y")
    w = str(sqlite_workspace.root)
    code, out, _ = run(capsys, "-w", w, "dataset", "create", "cli", "--split", "train=0.8,test=0.2", "--json")
    assert code == 0
    created = json.loads(out)
    assert created["ref"] == "cli@1" and created["counts"]["images"] == 10
    assert {s: p["images"] for s, p in created["counts"]["splits"].items()} == {"train": 8, "test": 2}
    code, out, err = run(capsys, "-w", w, "dataset", "create", "cli", "--split", "train=0.8,test=0.2")
    assert code == 2 and "cli@1 already holds exactly this content" in err and len(err.strip().splitlines()) == 1
    code, out, err = run(
        capsys, "-w", w, "dataset", "create", "cli", "-f", "label=x", "-f", "has=annotations",
        "--status", "accepted,proposed", "--stratify", "--split", "train=0.8,test=0.2", "--seed", "4",
    )  # fmt: skip
    assert code == 0 and "created cli@2" in err and "content hash" in out
    code, out, _ = run(capsys, "-w", w, "dataset", "list", "--json")
    assert [i["ref"] for i in json.loads(out)["items"]] == ["cli@1", "cli@2"]
    code, out, _ = run(capsys, "-w", w, "dataset", "show", "cli@2", "--json")
    shown = json.loads(out)
    assert shown["counts"]["images"] == 5 and [c["name"] for c in shown["classes"]] == ["x"]
    assert shown["spec"]["filters"] == {"has": ["annotations"], "label": ["x"]}
    code, out, _ = run(capsys, "-w", w, "dataset", "diff", "cli@1", "cli", "--json")
    assert code == 0 and json.loads(out)["images"]["removed"]["count"] == 5
    code, out, _ = run(capsys, "-w", w, "dataset", "images", "cli@1", "--split", "test", "--json")
    assert code == 0 and json.loads(out)["total"] == 2
    code, out, _ = run(capsys, "-w", w, "dataset", "show", "cli")
    assert code == 0 and "cli@2" in out and "content hash" in out
    code, out, _ = run(capsys, "-w", w, "dataset", "diff", "cli@1", "cli@2")
    assert code == 0 and "5 removed" in out
    code, _, err = run(capsys, "-w", w, "dataset", "create", "cli", "-f", "lable=x")
    assert code == 2 and err.startswith("error: unknown filter key 'lable'") and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "-w", w, "dataset", "show", "cli@9")
    assert code == 2 and "has no version 9; its versions: 1-2" in err


@pytest.fixture
def api(workspace: gv.Workspace, images: dict[str, str]) -> Iterator[tuple[TestClient, dict[str, str]]]:
    for name, label in classes_by_name(images).items():
        tag(workspace, images[name], label)
    with TestClient(create_app(workspace)) as client:
        yield client, images


def test_rest_create_in_background(api: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = api
    r = client.post("/api/v1/datasets", json={"name": "bg", "split": "train=0.5,test=0.5", "background": True})
    assert r.status_code == 202 and r.json()["kind"] == "dataset"
    job = client.app.state.workspace.jobs.wait(r.json()["id"], timeout=60)  # type: ignore[attr-defined]
    assert job["status"] == "done" and job["result"]["ref"] == "bg@1" and job["result"]["counts"]["images"] == 35
    assert client.post("/api/v1/datasets", json={"name": "bad name!", "background": True}).status_code == 400


def test_rest(api: tuple[TestClient, dict[str, str]]) -> None:
    client, images = api
    r = client.post("/api/v1/datasets", json={"name": "web", "split": "train=0.6,val=0.2,test=0.2", "actor": "ana"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["ref"] == "web@1" and body["counts"]["images"] == 35 and body["created_by"] == "ana"
    assert [c["name"] for c in body["classes"]] == ["a", "b", "c"]
    r = client.post("/api/v1/datasets", json={"name": "web", "split": {"train": 0.6, "val": 0.2, "test": 0.2}})
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict" and "web@1" in r.json()["error"]["message"]
    r = client.post(
        "/api/v1/datasets", json={"name": "web", "filters": ["label=a", "has=annotations"], "stratify": True}
    )
    assert r.status_code == 201 and r.json()["ref"] == "web@2"

    listing = client.get("/api/v1/datasets").json()
    assert listing["count"] == 2 and [i["ref"] for i in listing["items"]] == ["web@1", "web@2"]
    assert client.get("/api/v1/datasets/web/versions").json()["count"] == 2
    shown = client.get("/api/v1/datasets/web/versions/1").json()
    assert shown["content_hash"] == body["content_hash"] and shown["spec"]["split"] == {
        "train": 0.6,
        "val": 0.2,
        "test": 0.2,
    }
    assert client.get("/api/v1/datasets/web/versions/latest").json()["ref"] == "web@2"

    page = client.get("/api/v1/datasets/web/versions/1/images", params={"split": "val", "limit": 3}).json()
    assert page["total"] == 7 and len(page["items"]) == 3 and {i["split"] for i in page["items"]} == {"val"}
    rest = client.get("/api/v1/datasets/web/versions/1/images", params={"split": "val", "offset": 3}).json()
    names = [i["name"] for i in page["items"] + rest["items"]]
    assert names == sorted(names) and len(set(names)) == 7
    image_id = images["coffee_3.png"]
    frozen = client.get(f"/api/v1/datasets/web/versions/1/images/{image_id}/annotations").json()
    assert frozen["count"] == 1 and frozen["items"][0]["label"] == classes_by_name(images)["coffee_3.png"]
    assert frozen["image"]["name"] == "coffee_3.png"

    d = client.get("/api/v1/datasets/diff", params={"a": "web@1", "b": "web@2"}).json()
    assert d["images"]["removed"]["count"] == 35 - 23 and d["classes"]["removed"] == ["b", "c"]

    for url, status, fragment in (
        ("/api/v1/datasets/web/versions/9", 404, "has no version 9"),
        ("/api/v1/datasets/nope/versions/1", 404, "no dataset named 'nope'"),
        ("/api/v1/datasets/web/versions/x1", 400, "must be a number"),
        ("/api/v1/datasets/bad%20name/versions/1", 400, "dataset name"),
        ("/api/v1/datasets/web/versions/1/images?split=holdout", 400, "has no split 'holdout'"),
        ("/api/v1/datasets/diff?a=web@1&b=web@5", 404, "has no version 5"),
        (f"/api/v1/datasets/web/versions/1/images/{'0' * 64}/annotations", 404, "is not in dataset web@1"),
    ):
        r = client.get(url)
        assert r.status_code == status and fragment in r.json()["error"]["message"], (url, r.text)
    for payload, fragment in (
        ({"name": "x y"}, "dataset name"),
        ({"name": "ok", "split": "train=0.5"}, "must sum to 1"),
        ({"name": "ok", "filters": ["colour=red"]}, "unknown filter key"),
    ):
        r = client.post("/api/v1/datasets", json=payload)
        assert r.status_code == 400 and fragment in r.json()["error"]["message"], r.text
