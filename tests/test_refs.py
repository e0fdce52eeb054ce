"""Ids and names the way users type them (issue 11, item 8).

Unique id prefixes (6+ characters) and unique names wherever an image is named (``Workspace.find_image``:
CLI, REST, QC, datasets, predict inputs), job id prefixes (``JobManager.find``), ambiguity as one clear
error listing the candidates; annotation lists paged with a cursor and a total; full values in piped
tables; palette colours for new label classes.

Two real images never share a 6-character id prefix in a test-sized workspace (that takes thousands of
images), so the ambiguity tests add a "twin": a copy of a real image's row under an id that shares a chosen
prefix with it. Everything else uses real ingested images.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

import gigavision as gv
from gigavision.annotations import Annotations
from gigavision.cli.main import main
from gigavision.errors import Ambiguous, InvalidInput, NotFound
from gigavision.jobs import JobContext, registry
from gigavision.server.main import create_app
from gigavision.store.labels import palette_color
from gigavision.store.refs import starts_with
from gigavision.store.schema import ImageRow, JobRow, utcnow


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def twin(ws: gv.Workspace, image_id: str, shared: int) -> str:
    """Copy ``image_id``'s row under a new id whose first ``shared`` characters are the same (and the next one
    differs), so a prefix of ``shared`` characters fits two images."""
    new_id = image_id[:shared] + ("0" if image_id[shared] != "0" else "1") + image_id[shared + 1 :]
    with ws.session.begin() as s:
        row = s.get(ImageRow, image_id)
        assert row is not None
        columns = {c.key: getattr(row, c.key) for c in ImageRow.__mapper__.column_attrs}
        s.add(ImageRow(**{**columns, "id": new_id, "name": "twin.png", "source_path": "elsewhere/twin.png"}))
    return new_id


@pytest.fixture
def two_images(workspace: gv.Workspace, samples: dict[str, Path]) -> dict[str, str]:
    results = workspace.ingest([samples["retina.jpg"], samples["coins.png"]])
    return {r.name: str(r.id) for r in results}


# -- the resolver --------------------------------------------------------------------------------------------
def test_find_image_by_id_prefix_and_name(workspace: gv.Workspace, two_images: dict[str, str]) -> None:
    retina = two_images["retina.jpg"]
    assert workspace.find_image(retina) == retina
    assert workspace.find_image(retina[:12]) == retina  # what `images list` shows
    assert workspace.find_image(retina[:6]) == retina  # the shortest prefix accepted
    assert workspace.find_image(retina[:9].upper()) == retina  # typed in capitals
    assert workspace.find_image(retina.upper()) == retina  # the whole id too, one at a time or many
    assert workspace.find_images([retina.upper()]) == {retina.upper(): retina}
    assert workspace.find_image("coins.png") == two_images["coins.png"]
    assert workspace.find_images([retina[:7], "coins.png"]) == {
        retina[:7]: retina,
        "coins.png": two_images["coins.png"],
    }
    with pytest.raises(NotFound, match="an id prefix needs at least 6 characters"):
        workspace.find_image(retina[:5])
    with pytest.raises(NotFound, match=r"no image with id or name 'nope\.png'"):
        workspace.find_image("nope.png")
    unknown = "f" * 64 if not retina.startswith("f") else "e" * 64
    with pytest.raises(NotFound):
        workspace.find_image(unknown[:10])


def test_ambiguous_prefix_lists_the_candidates(workspace: gv.Workspace, two_images: dict[str, str]) -> None:
    retina = two_images["retina.jpg"]
    other = twin(workspace, retina, 8)
    with pytest.raises(Ambiguous) as err:
        workspace.find_image(retina[:8])
    message = str(err.value)
    assert f"'{retina[:8]}' fits 2 images" in message
    assert f"{retina[:12]} (retina.jpg)" in message and f"{other[:12]} (twin.png)" in message
    assert err.value.code == "ambiguous" and err.value.http_status == 400
    assert workspace.find_image(retina[:9]) == retina and workspace.find_image(other[:9]) == other


def test_ambiguous_name_lists_where_each_came_from(
    sqlite_workspace: gv.Workspace, samples: dict[str, Path], tmp_path: Path
) -> None:
    for folder, sample in (("a", "retina.jpg"), ("b", "coins.png")):
        (tmp_path / folder).mkdir()
        shutil.copy(samples[sample], tmp_path / folder / "scan.png")
    a, b = (r.id for r in sqlite_workspace.ingest([tmp_path / "a" / "scan.png", tmp_path / "b" / "scan.png"]))
    assert a and b
    with pytest.raises(Ambiguous, match=r"2 images are named 'scan\.png'; use the image id instead") as err:
        sqlite_workspace.find_image("scan.png")
    assert f"{a[:12]} ({tmp_path / 'a' / 'scan.png'})" in str(err.value)
    assert f"{b[:12]} ({tmp_path / 'b' / 'scan.png'})" in str(err.value)


def test_prefix_lookup_is_an_index_range(workspace: gv.Workspace, two_images: dict[str, str]) -> None:
    """The prefix query walks the primary key's index on both databases instead of scanning every image."""
    stmt = select(ImageRow.id).where(starts_with(ImageRow.id, two_images["retina.jpg"][:6]))
    sql = str(stmt.compile(workspace.engine, compile_kwargs={"literal_binds": True}))
    with workspace.engine.connect() as conn:
        if workspace.engine.dialect.name == "sqlite":
            plan = " ".join(str(r[-1]) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
            assert "SEARCH images USING COVERING INDEX" in plan and "(id>? AND id<?)" in plan, plan
        else:
            conn.execute(text("SET enable_seqscan = off"))  # two rows: the planner would scan them regardless
            plan = " ".join(str(r[0]) for r in conn.execute(text(f"EXPLAIN {sql}")))
            assert "Index" in plan and "images_pkey" in plan, plan


# -- every place that names an image -------------------------------------------------------------------------
def test_cli_accepts_prefixes_and_names(
    tmp_path: Path, samples: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ws = str(tmp_path / "ws")
    run(capsys, "init", ws)
    code, out, _ = run(capsys, "-w", ws, "ingest", str(samples["retina.jpg"]), "--json")
    retina = json.loads(out)["images"][0]["id"]
    code, out, _ = run(capsys, "-w", ws, "images", "list")
    assert code == 0 and retina[:12] in out and retina[:13] not in out  # 12 characters shown…
    code, out, _ = run(capsys, "-w", ws, "images", "show", retina[:12], "--json")
    assert code == 0 and json.loads(out)["id"] == retina  # …and they work as the id
    records = tmp_path / "boxes.json"
    records.write_text(json.dumps([{"kind": "box", "label": "disc", "bbox": [10, 20, 110, 120]}]))
    code, out, _ = run(capsys, "-w", ws, "annotations", "add", retina[:8], str(records), "--json")
    assert code == 0 and json.loads(out)["count"] == 1
    code, out, _ = run(capsys, "-w", ws, "annotations", "list", "retina.jpg", "--json")
    assert code == 0 and [r["label"] for r in json.loads(out)["items"]] == ["disc"]
    code, out, _ = run(capsys, "-w", ws, "images", "meta", retina[:6], "site=b", "--json")
    assert code == 0 and json.loads(out)["meta"]["site"] == "b"

    with gv.open_workspace(ws) as opened:
        other = twin(opened, retina, 7)
    code, out, err = run(capsys, "-w", ws, "annotations", "list", retina[:7])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: '{retina[:7]}' fits 2 images")
    assert retina[:12] in err and other[:12] in err
    code, _, err = run(capsys, "-w", ws, "images", "show", retina[:5])
    assert code == 2 and "at least 6 characters" in err


def test_rest_accepts_prefixes_and_names(workspace: gv.Workspace, two_images: dict[str, str]) -> None:
    retina = two_images["retina.jpg"]
    with TestClient(create_app(workspace)) as client:
        one = client.get(f"/api/v1/images/{retina[:10]}")
        assert one.status_code == 200 and one.json()["id"] == retina
        assert client.get("/api/v1/images/coins.png").json()["id"] == two_images["coins.png"]
        added = client.post(
            f"/api/v1/images/{retina[:6]}/annotations",
            json={"annotations": [{"kind": "tag", "label": "dr2"}], "actor": "ana"},
        )
        assert added.status_code == 201
        page = client.get("/api/v1/images/retina.jpg/annotations").json()
        assert [r["label"] for r in page["items"]] == ["dr2"]
        meta = client.patch(f"/api/v1/images/{retina[:8]}/meta", json={"site": "b"})
        assert meta.status_code == 200 and meta.json()["id"] == retina
        assert client.get(f"/api/v1/images/{retina[:8]}/layers").json() == []

        # the full id's answers may be cached for good; a prefix's may change meaning later
        assert "immutable" in client.get(f"/api/v1/images/{retina}/thumbnail").headers["cache-control"]
        by_prefix = client.get(f"/api/v1/images/{retina[:8]}/thumbnail")
        assert by_prefix.status_code == 200 and by_prefix.headers["cache-control"] == "no-cache"
        # tiles are content-addressed and cached as immutable: full ids only
        assert client.get(f"/iiif/3/{retina[:12]}/info.json").status_code == 404
        assert client.get(f"/dzi/{retina[:12]}.dzi").status_code == 404

        twin(workspace, retina, 8)
        ambiguous = client.get(f"/api/v1/images/{retina[:8]}/annotations")
        assert ambiguous.status_code == 400
        error = ambiguous.json()["error"]
        assert error["code"] == "ambiguous" and retina[:12] in error["message"]
        assert client.get(f"/api/v1/images/{retina[:9]}").json()["id"] == retina


def test_quality_control_datasets_and_predict_inputs_take_refs(
    workspace: gv.Workspace, two_images: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from gigavision.active.quality import QualityControl
    from gigavision.datasets import create_version
    from gigavision.models.predict import open_input

    retina, coins = two_images["retina.jpg"], two_images["coins.png"]
    qc = QualityControl(workspace)
    (item,) = qc.add_items(retina[:8], "tag", actor="lead")
    assert item["image_id"] == retina
    assert qc.list_items(image_id="retina.jpg")[1] == 1 and qc.list_items(image_id=coins[:8])[1] == 0
    with pytest.raises(NotFound):
        qc.list_items(image_id="nope.png")

    workspace.annotations.add(retina, Annotations.from_tags(["dr2"], status=["accepted"]), "ana")
    workspace.annotations.add(coins, Annotations.from_tags(["dr0"], status=["accepted"]), "ana")
    version = create_version(workspace, "pick", filters=[f"image_id={retina[:10]},coins.png"])
    assert sorted(version.spec["filters"]["image_id"]) == sorted([retina, coins])  # stored as full ids
    assert version.image(retina[:8])["id"] == retina and version.records("coins.png")[0]["label"] == "dr0"
    with pytest.raises(InvalidInput, match="filter image_id: no image with id or name 'abc'"):
        create_version(workspace, "bad", filters=["image_id=abc"])

    monkeypatch.chdir(tmp_path)  # no file called retina.jpg here: the name is the workspace image
    source, image_id, owned = open_input(workspace, "retina.jpg")
    assert (image_id, owned, source.width) == (retina, False, 1411)
    assert open_input(workspace, retina[:8])[1] == retina
    with pytest.raises(NotFound, match="no such image file nor an image"):
        open_input(workspace, "nope.png")


# -- jobs ----------------------------------------------------------------------------------------------------
def echo_job(ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    (ctx.output_dir / "out.txt").write_text(str(params["n"]))
    return {"n": params["n"]}


@pytest.fixture
def echo_kind() -> Iterator[None]:
    registry.register("test.echo", echo_job)
    yield
    registry.KINDS.discard("test.echo")


@pytest.mark.usefixtures("echo_kind")
def test_job_id_prefixes(workspace: gv.Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workspace.jobs.run("test.echo", {"n": 1}, "ana")
    (job,) = workspace.jobs.list_jobs()[0]
    job_id = job["id"]
    assert workspace.jobs.find(job_id[:6]) == job_id
    assert workspace.jobs.get(job_id[:12])["id"] == job_id
    assert workspace.jobs.file_path(job_id[:8], "out.txt").read_text() == "1"
    with pytest.raises(InvalidInput, match="at least 6"):
        workspace.jobs.get(job_id[:4])
    with TestClient(create_app(workspace)) as client:
        assert client.get(f"/api/v1/jobs/{job_id[:10]}").json()["id"] == job_id
        assert client.get(f"/api/v1/jobs/{job_id[:10]}/files/out.txt").content == b"1"

    code, out, _ = run(capsys, "-w", str(workspace.root), "jobs", "list")
    assert code == 0 and job_id[:12] in out and job_id[:13] not in out
    code, out, _ = run(capsys, "-w", str(workspace.root), "jobs", "show", job_id[:12], "--json")
    assert code == 0 and json.loads(out)["id"] == job_id

    clash = job_id[:7] + ("0" if job_id[7] != "0" else "1") + job_id[8:]
    with workspace.session.begin() as s:
        s.add(JobRow(id=clash, kind="test.echo", status="queued", params={}, created_by="bo", created_at=utcnow()))
    with pytest.raises(Ambiguous, match=rf"'{job_id[:7]}' is the start of 2 job ids") as err:
        workspace.jobs.get(job_id[:7])
    assert f"{job_id[:12]} (test.echo, done)" in str(err.value) and f"{clash[:12]} (test.echo, queued)" in str(
        err.value
    )
    with TestClient(create_app(workspace)) as client:
        response = client.post(f"/api/v1/jobs/{job_id[:7]}/cancel")
        assert response.status_code == 400 and response.json()["error"]["code"] == "ambiguous"


# -- annotation pages ----------------------------------------------------------------------------------------
def _boxes(n: int) -> Annotations:
    return Annotations.from_boxes([[i, i, i + 10, i + 10] for i in range(n)], [f"c{i % 3}" for i in range(n)])


def test_annotation_pages_report_total_and_continue(workspace: gv.Workspace, two_images: dict[str, str]) -> None:
    retina = two_images["retina.jpg"]
    ids = workspace.annotations.add(retina, _boxes(25), "ana")
    first = workspace.annotations.query_page(retina, limit=10)
    assert (len(first.items), first.total, first.truncated) == (10, 25, True) and first.next_cursor
    seen, page = [r["id"] for r in first.items], first
    while page.next_cursor:
        page = workspace.annotations.query_page(retina, limit=10, cursor=page.next_cursor)
        assert page.total == 25
        seen += [r["id"] for r in page.items]
    assert seen == sorted(ids) and not page.truncated and len(page.items) == 5
    everything = workspace.annotations.query_page(retina)
    assert (len(everything.items), everything.total, everything.truncated, everything.next_cursor) == (
        25,
        25,
        False,
        None,
    )
    labelled = workspace.annotations.query_page(retina, labels=["c0"], limit=4)
    assert labelled.total == 9 and labelled.truncated  # the total counts what the filters keep
    assert workspace.annotations.query_page(retina, limit=10, with_total=False).total is None
    with pytest.raises(InvalidInput, match="cursor"):
        workspace.annotations.query_page(retina, cursor="abc")


def test_annotation_pages_over_rest_and_cli(
    sqlite_workspace: gv.Workspace, samples: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    ws = sqlite_workspace
    (result,) = ws.ingest([samples["retina.jpg"]])
    retina = str(result.id)
    ws.annotations.add(retina, _boxes(12), "ana")
    with TestClient(create_app(ws)) as client:
        url = f"/api/v1/images/{retina}/annotations"
        page = client.get(url, params={"limit": 5}).json()
        assert (page["count"], page["total"], page["truncated"]) == (5, 12, True)
        items = page["items"]
        while page["next_cursor"]:
            page = client.get(url, params={"limit": 5, "cursor": page["next_cursor"]}).json()
            items += page["items"]
        assert len({r["id"] for r in items}) == 12 and page["count"] == 2 and not page["truncated"]
        assert client.get(url, params={"total": "false", "limit": 5}).json()["total"] is None
        bad = client.get(url, params={"cursor": "x1"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_input"

    w = ("-w", str(ws.root))
    code, out, _ = run(capsys, *w, "annotations", "list", retina, "--limit", "5", "--json")
    page = json.loads(out)
    assert code == 0 and (page["count"], page["total"], page["truncated"]) == (5, 12, True)
    code, out, _ = run(capsys, *w, "annotations", "list", retina, "--limit", "5", "--cursor", page["next_cursor"])
    assert code == 0 and f"5 of 12 annotations; more with --cursor {int(page['next_cursor']) + 5}" in out


# -- piped output, label colours -------------------------------------------------------------------------------
def test_piped_tables_print_full_values(
    tmp_path: Path, samples: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    long_name = "fundus_" + "left-eye-follow-up-visit-" * 5 + "2024.jpg"  # 140 characters
    shutil.copy(samples["retina.jpg"], tmp_path / long_name)
    ws = str(tmp_path / "ws")
    run(capsys, "init", ws)
    run(capsys, "-w", ws, "ingest", str(tmp_path / long_name))
    code, out, _ = run(capsys, "-w", ws, "images", "list")  # captured stdout: not a terminal
    assert code == 0
    (row,) = [line for line in out.splitlines() if "fundus_" in line]
    assert long_name in row and "…" not in row


def test_new_label_classes_get_distinct_palette_colours(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sqlite_workspace: gv.Workspace
) -> None:
    w = ("-w", str(sqlite_workspace.root))
    for name in ("roof", "solar panel", "tree"):
        assert run(capsys, *w, "labels", "add", name, "--kind", "polygon")[0] == 0
    _, out, _ = run(capsys, *w, "labels", "list", "--json")
    colours = {name: c["color"] for name, c in json.loads(out).items()}
    assert colours == {name: palette_color(name) for name in ("roof", "solar panel", "tree")}
    assert len(set(colours.values())) == 3
    run(capsys, *w, "labels", "add", "roof", "--kind", "polygon", "--color", "#123456")
    run(capsys, *w, "labels", "add", "roof", "--kind", "polygon", "-a", "overhang=none,low")  # colour kept
    assert json.loads(run(capsys, *w, "labels", "list", "--json")[1])["roof"]["color"] == "#123456"
    with TestClient(create_app(sqlite_workspace)) as client:
        put = client.put("/api/v1/labels/vegetation", json={"kind": "box"})
        assert put.status_code == 200 and put.json()["color"] == palette_color("vegetation")
