"""The app's access boundary (server/boundary.py, server/apidocs.py): Host check against DNS rebinding, CORS for
tiles only, foreign-Origin writes refused on every unsafe route, /docs self-hosted under the CSP."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.responses import PlainTextResponse

import gigavision as gv
from gigavision.config import ServerSettings
from gigavision.errors import ConfigError
from gigavision.server import apidocs
from gigavision.server.boundary import AccessBoundary, BoundaryPolicy
from gigavision.server.main import SecurityHeaders, create_app

BASE = "http://localhost:8000"
SERVER = {"allowed_hosts": ["gv.example.org", ".lab.example:8443"], "cors_origins": ["https://viewer.example"]}
FOREIGN = "https://evil.example"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("boundary") / "ws"
    gv.init_workspace(path).close()
    return path


@pytest.fixture(scope="module")
def served(root: Path) -> Iterator[tuple[TestClient, str]]:
    from PIL import Image
    from skimage import data

    Image.fromarray(data.coins()).save(root.parent / "coins.png")  # a real 384 x 303 scan
    ws = gv.open_workspace(root, server=SERVER, job_workers=0)
    (result,) = ws.ingest([root.parent / "coins.png"])
    assert result.id
    with TestClient(create_app(ws), base_url=BASE) as client:
        yield client, result.id
    ws.close()


def assert_error(resp: Any, status: int, code: str) -> str:
    """``resp`` (the TestClient's response: httpx's, or the httpx2 fork's) is a refusal in the app's error format."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["x-content-type-options"] == "nosniff"  # refusals carry the security headers too
    error = resp.json()["error"]
    assert error["code"] == code
    return str(error["message"])


def test_host_header_must_name_this_server(served: tuple[TestClient, str]) -> None:
    client, _ = served
    for host in ["evil.example", "evil.example:8000", "gv.example.org.evil.example", "127.0.0.1.evil.example",
                 "[::2]:8000", "10.0.0.1", "localhost:99999", "lab.example:8000", "x.lab.example", ""]:  # fmt: skip
        message = assert_error(client.get("/healthz", headers={"Host": host}), 400, "invalid_host")
        assert "allowed_hosts" in message or "Host" in message
    assert "evil.example" in assert_error(
        client.get("/api/v1/images", headers={"Host": "evil.example"}), 400, "invalid_host"
    )
    for host in ["localhost", "localhost:8000", "LOCALHOST.:1", "127.0.0.1:8000", "127.5.6.7", "[::1]:8000",
                 "[::ffff:127.0.0.1]", "gv.example.org", "GV.example.org:9000", "lab.example:8443",
                 "a.b.lab.example:8443"]:  # fmt: skip
        assert client.get("/healthz", headers={"Host": host}).status_code == 200, host


def test_the_address_a_connection_arrived_at_names_the_server() -> None:
    """``http://10.0.0.5:8000`` typed in a browser: an IP literal cannot be rebound, so it needs no setting."""

    async def ok(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("ok")(scope, receive, send)

    boundary = SecurityHeaders(AccessBoundary(ok, BoundaryPolicy.from_settings(ServerSettings())))
    client = TestClient(boundary, base_url="http://10.0.0.5:8000")  # scope["server"]: 10.0.0.5 (no lifespan)
    assert client.get("/").status_code == 200
    for host in ("10.0.0.6:8000", "rebound.example:8000"):
        assert_error(client.get("/", headers={"Host": host}), 400, "invalid_host")
    assert client.post("/", headers={"Origin": "http://10.0.0.5:8000"}).status_code == 200
    assert_error(client.post("/", headers={"Origin": "http://10.0.0.6:8000"}), 403, "forbidden")


def test_host_check_defaults_and_bad_settings(root: Path) -> None:
    ws = gv.open_workspace(
        root, server={"allowed_hosts": []}
    )  # nothing configured: loopback only (TestClient's "testserver" too)
    try:
        with TestClient(create_app(ws)) as client:
            assert_error(client.get("/healthz"), 400, "invalid_host")
            assert client.get("/healthz", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    finally:
        ws.close()
    bad = [{"allowed_hosts": ["https://gv.example.org/"]}, {"allowed_hosts": ["gv.*.org"]},
           {"cors_origins": ["viewer.example"]}, {"cors_origins": ["https://viewer.example/path"]}]  # fmt: skip
    for server in bad:  # the app's policy, made from the settings when the app is made
        with pytest.raises(ConfigError, match=r"\[server\] (allowed_hosts|cors_origins): '"):
            BoundaryPolicy.from_settings(ServerSettings.model_validate(server))
    ws = gv.open_workspace(root, server=bad[0], job_workers=0)
    try:
        with pytest.raises(ConfigError, match=r"gv\.example\.org"):  # the server does not start
            create_app(ws)
    finally:
        ws.close()


def test_cors_only_for_tiles_and_configured_origins(served: tuple[TestClient, str], root: Path) -> None:
    client, image_id = served
    for origin in (FOREIGN, "https://viewer.example"):  # the API is never readable cross-origin
        api = client.get("/api/v1/images", headers={"Origin": origin})
        assert api.status_code == 200 and "access-control-allow-origin" not in api.headers
        preflight = client.options("/api/v1/images", headers={"Origin": origin, "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in preflight.headers
    tiles = [f"/iiif/3/{image_id}/info.json", f"/iiif/3/{image_id}/full/64,/0/default.jpg", f"/dzi/{image_id}.dzi"]
    for path in tiles:
        ok = client.get(path, headers={"Origin": "https://viewer.example"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://viewer.example"
        assert "origin" in ok.headers["vary"].lower()  # shared caches keep one answer per origin
        foreign = client.get(path, headers={"Origin": FOREIGN})
        assert foreign.status_code == 200 and "access-control-allow-origin" not in foreign.headers
        own = client.get(path)  # the viewer's own request: no CORS header, but caches are told it varies
        assert "access-control-allow-origin" not in own.headers and "origin" in own.headers["vary"].lower()
    preflight = client.options(
        tiles[1], headers={"Origin": "https://viewer.example", "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "https://viewer.example"

    ws = gv.open_workspace(root, server={"cors_origins": ["*"], "allowed_hosts": ["testserver"]}, job_workers=0)
    try:
        with TestClient(create_app(ws)) as anyone:
            assert anyone.get(tiles[0], headers={"Origin": FOREIGN}).headers["access-control-allow-origin"] == "*"
            assert (
                "access-control-allow-origin" not in anyone.get("/api/v1/images", headers={"Origin": FOREIGN}).headers
            )
    finally:
        ws.close()


def unsafe_requests(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every unsafe method of every route, path parameters filled with a plain value.
    ``app.routes`` holds included routers unexpanded (FastAPI >= 0.137): ``iter_route_contexts`` walks them."""
    found = set()
    for route in iter_route_contexts(client.app.routes):  # type: ignore[attr-defined]
        for method in (route.methods or set()) - {"GET", "HEAD", "OPTIONS"}:
            found.add((method, route.path or ""))
    # the walk sees every write the schema documents (so it cannot go quiet), plus undocumented ones
    schema = client.get("/openapi.json").json()["paths"]
    documented = {(m.upper(), p) for p, ops in schema.items() for m in ops if m.upper() not in ("GET", "HEAD")}
    assert documented <= found, documented - found
    return sorted((method, re.sub(r"\{[^}]+\}", "x", path)) for method, path in found)


def test_unsafe_methods_from_a_foreign_origin_are_refused_on_every_route(served: tuple[TestClient, str]) -> None:
    client, _ = served
    routes = unsafe_requests(client)
    assert len(routes) >= 20 and {m for m, _ in routes} >= {"POST", "PUT", "PATCH", "DELETE"}
    refused = 0
    for method, path in routes:
        resp = client.request(method, path, headers={"Origin": FOREIGN}, json={})
        assert_error(resp, 403, "forbidden")
        refused += 1
    assert refused == len(routes)
    # other spellings of a foreign page: Referer only, an opaque origin, another port or scheme of this host
    write = ("PUT", "/api/v1/labels/cell")
    foreign = [{"Referer": f"{FOREIGN}/page.html"}, {"Origin": "null"}, {"Origin": "http://localhost:9999"},
               {"Origin": "https://localhost:8000"}, {"Origin": "http://localhost"}, {"Origin": "garbage"}]  # fmt: skip
    for headers in foreign:
        assert_error(client.request(*write, headers=headers, json={"kind": "polygon"}), 403, "forbidden")
    assert "cell" not in client.get("/api/v1/labels").json()  # nothing was written


def test_same_origin_and_originless_writes_pass(served: tuple[TestClient, str]) -> None:
    client, _ = served
    body = {"kind": "polygon", "color": "#ff0000"}
    for i, headers in enumerate(({"Origin": BASE}, {"Referer": f"{BASE}/?image=1"}, {})):
        resp = client.put(f"/api/v1/labels/same{i}", headers=headers, json=body)
        assert resp.status_code == 200, resp.text
    assert {"same0", "same1", "same2"} <= set(client.get("/api/v1/labels").json())
    # an allowed name is its own origin
    resp = client.put(
        "/api/v1/labels/named", headers={"Host": "gv.example.org", "Origin": "http://gv.example.org"}, json=body
    )
    assert resp.status_code == 200, resp.text


def test_docs_are_self_hosted_under_the_csp(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = apidocs.ASSETS if all((apidocs.ASSETS / n).is_file() for n in apidocs.REQUIRED) else None
    if built is None:  # a checkout without `make web`: stand-in files (the browser test runs the real ones)
        built = tmp_path / "docs"
        built.mkdir()
        (built / "swagger-ui-bundle.js").write_text("window.SwaggerUIBundle = function () {};\n")
        (built / "swagger-ui.css").write_text("body {}\n")
    monkeypatch.setattr(apidocs, "ASSETS", built)
    ws = gv.open_workspace(root, job_workers=0)
    try:
        with TestClient(create_app(ws)) as client:
            page = client.get("/docs")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            html = page.text
            urls = re.findall(r'<script src="([^"]+)"', html) + re.findall(r'<link[^>]+href="([^"]+)"', html)
            assert any(u.endswith("swagger-ui-bundle.js") for u in urls) and any(u.endswith(".css") for u in urls)
            assert "//" not in "".join(urls)  # no CDN: every asset is a path on this server
            for url in urls:
                if url.endswith((".js", ".css")):
                    assert client.get(url).status_code == 200, url
            csp = page.headers["content-security-policy"]
            script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src")).split()
            inline = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
            assert len(inline) == 1 and "'unsafe-inline'" not in script_src and "'self'" in script_src
            digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
            assert f"'sha256-{digest}'" in script_src
            # every other page keeps the strict policy; ReDoc (a CDN bundle) and the OAuth2 page are not served
            assert "sha256" not in client.get("/healthz").headers["content-security-policy"]
            assert client.get("/redoc").status_code == 404 and client.get("/docs/oauth2-redirect").status_code == 404
            assert client.get("/openapi.json").status_code == 200

        monkeypatch.setattr(apidocs, "ASSETS", tmp_path / "missing")
        with TestClient(create_app(ws)) as client:
            page = client.get("/docs")
            assert page.status_code == 200 and "make web" in page.text
    finally:
        ws.close()
