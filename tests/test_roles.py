"""Roles (issue 13): every route declares a permission, every route × every role is allowed or 403 as declared,
identity comes from the login, and an annotator never receives another annotator's labels of an open QC item."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

import gigavision as gv
from gigavision.server.auth import PUBLIC, declared_permission
from gigavision.server.main import create_app
from gigavision.store import users as users_module
from gigavision.store.roles import ROLE_PERMISSIONS, ROLES

PASSWORD = "correct horse battery"
PEOPLE = {"ada": "admin", "max": "manager", "rey": "reviewer", "ana": "annotator", "bo": "annotator", "vic": "viewer"}
# Routes that are not FastAPI routes: the OpenAPI document and static files (no data).
STATIC_ROUTES = {"/openapi.json", "/assets", "/docs/static"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, samples: dict[str, Path]) -> Iterator[dict[str, Any]]:
    """One workspace with a user of every role (bearer tokens: no CSRF needed), an image and a QC item."""
    mp = pytest.MonkeyPatch()
    mp.setattr(users_module, "HASHER", PasswordHasher(time_cost=1, memory_cost=8192))
    ws = gv.init_workspace(tmp_path_factory.mktemp("roles") / "ws")
    (r,) = ws.ingest([samples["coins.png"]])  # 384 × 303
    for label in ("x", "y", "z", "q", "lesion"):  # the matrix adds a class: the schema is not empty after it
        ws.labels.set(label, "box")
    app = create_app(ws)
    accounts = app.state.auth.accounts
    app.state.auth.cache.seconds = 0
    tokens = {}
    for name, role in PEOPLE.items():
        accounts.add(name, role, PASSWORD)
        tokens[name] = {"Authorization": f"Bearer {accounts.add_token(name, 'test')[0]}"}
    with TestClient(app) as client:
        yield {"client": client, "app": app, "ws": ws, "image": r.id, "tokens": tokens}
    ws.close()
    mp.undo()


def declarations(app: FastAPI) -> dict[tuple[str, str], str | None]:
    """(method, path) → the permission its route declares (None: none). FastAPI ≥ 0.16x keeps included routers
    as such in ``app.routes``: ``iter_route_contexts`` yields every effective route, prefix included."""
    found: dict[tuple[str, str], str | None] = {}
    for ctx in iter_route_contexts(app.routes):
        if isinstance(ctx.original_route, APIRoute):
            declared = {declared_permission(d) for d in ctx.dependant.dependencies} - {None}
            assert len(declared) <= 1, f"{ctx.path} declares {declared}"
            for method in ctx.methods or ():
                path = re.sub(r"\{(\w+):\w+\}", r"{\1}", str(ctx.path))  # as OpenAPI writes {path:path}
                found[method, path] = next(iter(declared), None)
    return found


def test_every_route_declares_a_permission(site: dict[str, Any]) -> None:
    app = site["app"]
    found = declarations(app)
    missing = sorted(f"{m} {p}" for (m, p), perm in found.items() if perm is None)
    assert not missing, f"routes without Allow(...)/Public(): {missing}"
    others = {str(c.path) for c in iter_route_contexts(app.routes) if not isinstance(c.original_route, APIRoute)}
    assert others <= STATIC_ROUTES, f"routes outside FastAPI's dependency system: {others - STATIC_ROUTES}"
    # the OpenAPI list is covered: every operation in the schema is a declared route
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            assert found.get((method.upper(), path)), f"{method} {path}"
    public = sorted(f"{m} {p}" for (m, p), perm in found.items() if perm == PUBLIC)
    assert public == sorted(
        ["GET /healthz", "GET /", "HEAD /", "GET /login", "POST /api/v1/login", "POST /api/v1/logout", "GET /docs"]
    )


def fill(path: str, site: dict[str, Any], annotation: int) -> str:
    values = {
        "image_id": site["image"],
        "annotation_id": str(annotation),
        "item_id": "999999",
        "job_id": "0" * 32,
        "model_id": "no-model",
        "name": "no-class",
        "version": "1",
        "path": "x.txt",
        "region": "full",
        "size": "64,",
        "rotation": "0",
        "quality": "default",
        "fmt": "jpg",
        "level": "0",
        "col": "0",
        "row": "0",
    }
    return re.sub(r"\{(\w+)(?::path)?\}", lambda m: values[m.group(1)], path)


def test_every_route_and_role(site: dict[str, Any]) -> None:
    """Without a login every non-public route is a 401; with one, a 403 exactly when the role lacks the
    route's permission (whatever the request's other faults: the check comes first)."""
    client, app, tokens = site["client"], site["app"], site["tokens"]
    made = client.post(
        f"/api/v1/images/{site['image']}/annotations",
        json={"annotations": [{"kind": "box", "label": "x", "bbox": [1, 1, 9, 9]}]},
        headers=tokens["ada"],
    )
    annotation = made.json()["ids"][0]
    checked = 0
    for (method, path), permission in sorted(declarations(app).items()):
        if method == "HEAD" or (method, path) == ("POST", "/api/v1/logout"):
            continue  # HEAD: GET's twin; logout with a token ends nothing and is public by design
        url = fill(path, site, annotation)
        anonymous = client.request(method, url)
        if permission == PUBLIC:
            assert anonymous.status_code not in (401, 403), f"{method} {path}: {anonymous.status_code}"
            continue
        assert anonymous.status_code == 401, f"{method} {path} without a login: {anonymous.status_code}"
        for name, role in PEOPLE.items():
            r = client.request(method, url, headers=tokens[name])
            refused = r.status_code == 403 and "may not" in r.json()["error"]["message"]
            allowed = permission in ROLE_PERMISSIONS[role]
            assert refused != allowed, f"{method} {path} as {role}: {r.status_code} {r.text[:200]}"
            assert r.status_code != 401
            checked += 1
    assert checked > 40 * len(PEOPLE)


def test_viewer_cannot_write(site: dict[str, Any]) -> None:
    unsafe = [(m, p) for (m, p), perm in declarations(site["app"]).items() if m not in ("GET", "HEAD")]
    writable = [f"{m} {p}" for m, p in unsafe if declarations(site["app"])[m, p] in ROLE_PERMISSIONS["viewer"]]
    assert writable == [], "a viewer may call these unsafe routes"
    assert set(ROLES) == {"admin", "manager", "reviewer", "annotator", "viewer"}


def test_csrf_on_cookie_logins(site: dict[str, Any]) -> None:
    client, image = site["client"], site["image"]
    with TestClient(site["app"]) as browser:
        me = browser.post("/api/v1/login", json={"name": "rey", "password": PASSWORD}).json()
        body = {"annotations": [{"kind": "box", "label": "x", "bbox": [1, 1, 9, 9]}]}
        url = f"/api/v1/images/{image}/annotations"
        no_token = browser.post(url, json=body)
        assert no_token.status_code == 403 and "X-CSRF-Token" in no_token.json()["error"]["message"]
        wrong = browser.post(url, json=body, headers={"X-CSRF-Token": "guess"})
        assert wrong.status_code == 403
        assert browser.post(url, json=body, headers={"X-CSRF-Token": me["csrf"]}).status_code == 201
        assert browser.get(url).status_code == 200  # safe methods need no token
    assert client.get(url).status_code == 401


def test_identity_comes_from_the_login(site: dict[str, Any]) -> None:
    client, image, tokens = site["client"], site["image"], site["tokens"]
    url = f"/api/v1/images/{image}/annotations"
    record = {"kind": "box", "label": "y", "bbox": [20, 20, 40, 40]}
    spoof = client.post(url, json={"annotations": [record], "actor": "ada"}, headers=tokens["rey"])
    assert spoof.status_code == 403 and "acts only as itself (rey)" in spoof.json()["error"]["message"]
    (new,) = client.post(url, json={"annotations": [record]}, headers=tokens["rey"]).json()["ids"]
    client.patch(f"/api/v1/annotations/{new}", json={"version": 1, "changes": {"label": "z"}}, headers=tokens["max"])
    history = client.get(f"/api/v1/annotations/{new}/history", headers=tokens["vic"]).json()
    assert [(h["action"], h["actor"]) for h in history] == [("create", "rey"), ("update", "max")]
    # an annotator edits only their own annotations
    denied = client.patch(
        f"/api/v1/annotations/{new}", json={"version": 2, "changes": {"label": "q"}}, headers=tokens["ana"]
    )
    assert denied.status_code == 403 and "only their own" in denied.json()["error"]["message"]
    # jobs record who queued them
    job = client.post("/api/v1/exports", json={"format": "coco", "actor": "anonymous"}, headers=tokens["max"])
    assert job.status_code == 202 and job.json()["created_by"] == "max"
    # schema changes are logged under the login
    assert client.put("/api/v1/labels/roof", json={"kind": "polygon"}, headers=tokens["max"]).status_code == 200
    events = client.get("/api/v1/labels/events", headers=tokens["vic"]).json()
    assert events[0]["actor"] == "max"


def test_annotator_never_sees_others_labels_of_an_open_item(site: dict[str, Any]) -> None:
    client, image, tokens = site["client"], site["image"], site["tokens"]
    made = client.post(
        "/api/v1/qc/items",
        json={"image_id": image, "kind": "box", "regions": [[100, 100, 300, 300]], "labels": []},
        headers=tokens["max"],
    )
    assert made.status_code == 201 and made.json()["items"][0]["created_by"] == "max"
    item = made.json()["items"][0]["id"]
    staffed = client.post(
        "/api/v1/qc/assignments", json={"item_ids": [item], "annotators": ["ana", "bo"]}, headers=tokens["max"]
    )
    assert staffed.status_code == 200
    lesion = {"kind": "box", "label": "lesion", "bbox": [150, 150, 200, 200]}
    # bo draws a label (a draft, not yet handed in) and hands in another one
    draft = client.post(
        f"/api/v1/images/{image}/annotations",
        json={"annotations": [{**lesion, "bbox": [250, 250, 280, 280], "status": "proposed", "source": "user:bo"}]},
        headers=tokens["bo"],
    )
    assert draft.status_code == 201, draft.text
    draft = draft.json()["ids"][0]
    submitted = client.post(f"/api/v1/qc/items/{item}/submit", json={"annotations": [lesion]}, headers=tokens["bo"])
    assert submitted.status_code == 200, submitted.text
    as_bo = client.get(f"/api/v1/qc/items/{item}", headers=tokens["bo"]).json()
    bo_ids = [r["id"] for s in as_bo["submissions"] if s["annotator"] == "bo" for r in s["labels"]] + [draft]

    def seen_by(who: str) -> set[int]:
        page = client.get(f"/api/v1/images/{image}/annotations", headers=tokens[who]).json()
        inside = client.get(
            f"/api/v1/images/{image}/annotations", params={"bbox": "100,100,300,300"}, headers=tokens[who]
        ).json()
        return {r["id"] for r in page["items"]} | {r["id"] for r in inside["items"]}

    assert not seen_by("ana") & set(bo_ids)
    assert set(bo_ids) <= seen_by("bo") and set(bo_ids) <= seen_by("rey")

    def in_manifest(who: str) -> set[int]:  # IIIF: live annotation ids end in their REST id
        canvas = client.get(f"/iiif/3/{image}/manifest.json", headers=tokens[who]).json()["items"][0]
        return {int(a["id"].rsplit("/", 1)[1]) for a in canvas["annotations"][0]["items"]}

    assert not in_manifest("ana") & set(bo_ids) and set(bo_ids) <= in_manifest("rey")
    # the overlay's counts (and total) leave bo's labels out for ana too, not only the items
    view = {"bbox": "100,100,300,300", "sample": "true", "counts": "true", "limit": 1}
    ana_view, rey_view = (
        client.get(f"/api/v1/images/{image}/annotations", params=view, headers=tokens[who]).json()
        for who in ("ana", "rey")
    )
    assert rey_view["label_counts"].get("lesion", 0) - ana_view["label_counts"].get("lesion", 0) == len(bo_ids)
    assert ana_view["total"] == sum(ana_view["label_counts"].values()) == rey_view["total"] - len(bo_ids)
    for i in bo_ids:
        for url in (f"/api/v1/annotations/{i}", f"/api/v1/annotations/{i}/history"):
            assert client.get(url, headers=tokens["ana"]).status_code == 404
        write = client.patch(f"/api/v1/annotations/{i}", json={"version": 1, "changes": {}}, headers=tokens["ana"])
        assert write.status_code == 404
    as_ana = client.get(f"/api/v1/qc/items/{item}", params={"actor": "bo"}, headers=tokens["ana"])
    assert as_ana.status_code == 403  # asking to look as someone else
    as_ana = client.get(f"/api/v1/qc/items/{item}", headers=tokens["ana"]).json()
    assert [s["labels"] for s in as_ana["submissions"] if s["annotator"] == "bo"] == [None]
    assert client.get(f"/api/v1/qc/items/{item}/consensus", headers=tokens["ana"]).json()["items"] == []
    for url in ("/api/v1/datasets", "/api/v1/jobs", "/api/v1/qc/annotators"):
        assert client.get(url, headers=tokens["ana"]).status_code == 403
    assert client.post("/api/v1/exports", json={"format": "coco"}, headers=tokens["ana"]).status_code == 403
    listed = client.get("/api/v1/qc/items", params={"annotator": "bo"}, headers=tokens["ana"]).json()
    assert listed["total"] >= 1 and all("ana" in [a["name"] for a in i["annotators"]] for i in listed["items"])

    # once ana hands in too, the item is decided and everyone sees both labellings
    done = client.post(f"/api/v1/qc/items/{item}/submit", json={"annotations": [lesion]}, headers=tokens["ana"])
    assert done.json()["status"] == "agreed"
    assert set(bo_ids) - {draft} <= seen_by("ana")
