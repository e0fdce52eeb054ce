"""Hostile URLs and requests against the server: path traversal in every spelling, bad ids, out-of-range and
malformed IIIF / Deep Zoom parameters, malformed uploads and paging.

Each must be answered 4xx (or 501 for valid-but-unsupported IIIF features) with a JSON error body — never
500, never a file from outside the workspace. Paths are sent raw (see ``raw_url``) so neither the client nor
the test transport normalises dot-segments or re-encodes them; one test repeats them through uvicorn.
"""

from __future__ import annotations

import socket
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import gigavision as gv
from gigavision.server.main import create_app

PASSWD = Path("/etc/passwd")
HUGE = "1" + "0" * 400  # overflows a float


def secret_markers() -> list[bytes]:
    """Bytes that only appear when a response leaks /etc/passwd (or the workspace's own settings file)."""
    markers = [b"root:x:0:0", b"/bin/bash", b"/usr/sbin/nologin", b"[limits]", b"pyramid_threshold ="]
    if PASSWD.is_file():
        first = PASSWD.read_bytes().splitlines()[:1]
        markers += [line for line in first if len(line) > 8]
    return markers


@pytest.fixture
def served(sqlite_workspace: gv.Workspace, samples: dict[str, Path]) -> Iterator[tuple[TestClient, str]]:
    (r,) = sqlite_workspace.ingest([samples["coins.png"]])  # 384 x 303 grey
    assert r.id is not None
    with TestClient(create_app(sqlite_workspace), raise_server_exceptions=False) as client:
        yield client, r.id


def raw_url(base: str, target: str, url_type: type = httpx.URL) -> httpx.URL:
    """``base`` + ``target`` byte for byte: ``httpx.URL`` would drop dot-segments (RFC 3986), so the parsed
    path is replaced after parsing. Checked below so an httpx change cannot silently weaken the tests.

    ``url_type``: the client library's own URL class (Starlette's TestClient runs on ``httpx2`` when that
    fork is installed, as huggingface_hub, which timm needs, installs it)."""
    path, _, query = target.partition("?")
    url = url_type(base + "/")
    url._uri_reference = url._uri_reference._replace(path=path, query=query or None)
    assert url.raw_path == target.encode("ascii"), (url.raw_path, target)
    return url


def get_raw(client: httpx.Client, target: str, base: str = "http://testserver") -> httpx.Response:
    """GET ``target`` exactly as written (percent-escapes and dot-segments untouched), no redirects followed."""
    library = next(c.__module__ for c in type(client).__mro__ if c.__module__.startswith("httpx"))
    url_type = sys.modules[library.partition(".")[0]].URL
    return client.get(raw_url(base, target, url_type), follow_redirects=False)


def error_problems(resp: httpx.Response, allowed: tuple[int, ...], label: str) -> list[str]:
    """What is wrong with an error response (empty when it is a proper JSON error in ``allowed``)."""
    problems = []
    body = resp.content
    if any(m in body for m in secret_markers()):
        problems.append(f"{label}: response leaks /etc/passwd")
    if resp.status_code not in allowed:
        problems.append(f"{label}: HTTP {resp.status_code} (expected {allowed}): {body[:160]!r}")
        return problems
    try:
        error = resp.json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)
    except Exception:
        problems.append(f"{label}: not a JSON error body: {body[:160]!r}")
    return problems


def check_all(client: httpx.Client, cases: list[tuple[str, tuple[int, ...]]], base: str = "http://testserver") -> None:
    # dot-segments really reach the server: normalised, this would be the image list (200)
    assert get_raw(client, "/api/v1/x/../images", base).status_code == 404
    problems = []
    for path, allowed in cases:
        problems += error_problems(get_raw(client, path, base), allowed, path[:140])
    assert problems == []
    # and the server still serves a normal request afterwards
    assert get_raw(client, "/healthz", base).status_code == 200


NOT_FOUND = (404,)
BAD = (400, 404)
BAD_OR_UNSUPPORTED = (400, 501)


# -- path traversal ---------------------------------------------------------------------------------------
def traversal_paths(image_id: str) -> list[str]:
    targets = [
        "../../../../../../etc/passwd",
        "..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    ]
    paths = [
        "/../../../../etc/passwd",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/..%5c..%5c..%5c..%5cetc%5cpasswd",
        "/assets/../../../../../../etc/passwd",
        "/assets/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/assets/..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/assets/%2fetc%2fpasswd",
        "/assets//etc/passwd",
        "/assets/..%00/etc/passwd",
        "/assets/../../gigavision.toml",
        "/images/../../../../../../etc/passwd",
    ]
    for t in targets:
        paths += [
            f"/iiif/3/{t}",
            f"/iiif/3/{t}/info.json",
            f"/iiif/3/{image_id}/{t}",
            f"/iiif/3/{image_id}/full/max/0/{t}",
            f"/iiif/3/{image_id}/full/max/0/default.jpg/{t}",
            f"/dzi/{t}.dzi",
            f"/dzi/{t}_files/0/0_0.jpeg",
            f"/dzi/{image_id}_files/{t}",
            f"/api/v1/images/{t}",
            f"/api/v1/images/{t}/thumbnail",
            f"/api/v1/images/{image_id}/{t}",
        ]
    for spelled in (
        "/etc/passwd",
        "%2fetc%2fpasswd",
        "..",
        "%2e%2e",
        "%2e",
        "%00",
        f"{image_id}%00",
        f"{image_id}%2f..",
        f"..%2f{image_id}",
        "%2e%2e%2fgigavision.toml",
        "..%2f..%2fgigavision.toml",
    ):
        paths += [
            f"/iiif/3/{spelled}/info.json",
            f"/iiif/3/{spelled}/full/max/0/default.jpg",
            f"/dzi/{spelled}.dzi",
            f"/dzi/{spelled}_files/0/0_0.jpeg",
            f"/api/v1/images/{spelled}",
            f"/api/v1/images/{spelled}/thumbnail",
            f"/api/v1/images/{spelled}/mask",
        ]
    return paths


def test_traversal_never_leaves_the_workspace(served: tuple[TestClient, str]) -> None:
    client, image_id = served
    check_all(client, [(p, (400, 404, 405)) for p in traversal_paths(image_id)])


def test_traversal_over_a_real_socket(sqlite_workspace: gv.Workspace, samples: dict[str, Path]) -> None:
    """The same raw paths through uvicorn, which decodes the path once (the test transport is not uvicorn)."""
    import uvicorn

    (r,) = sqlite_workspace.ingest([samples["coins.png"]])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections queue here until the server is up: no polling, no sleeping
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(sqlite_workspace), log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        with httpx.Client(timeout=30) as client:
            paths = [*traversal_paths(r.id or "")[::3], f"/dzi/{r.id}_files/-1/0_0.jpeg"]
            check_all(client, [(p, (400, 404, 405)) for p in paths], base=f"http://127.0.0.1:{port}")
            assert (
                get_raw(client, f"/iiif/3/{r.id}/full/32,/0/default.jpg", f"http://127.0.0.1:{port}").status_code == 200
            )
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
    assert not thread.is_alive()


# -- ids ----------------------------------------------------------------------------------------------------
def test_unknown_and_malformed_ids_are_404(served: tuple[TestClient, str]) -> None:
    client, image_id = served
    ids = [
        "0" * 64,  # well-formed, unknown
        image_id.upper(),
        image_id[:-1],
        image_id + "0",
        "g" * 64,
        "x",
        "%20" + image_id,
        image_id + "%20",
        "%C3%A9" * 32,
        "*",
    ]
    # the API also takes a unique id prefix (6+ characters, any case); tile URLs only the full id
    refs = (image_id.upper(), image_id[:-1])
    for ref in refs:
        for path in (f"/api/v1/images/{ref}", f"/api/v1/images/{ref}/thumbnail", f"/api/v1/images/{ref}/mask"):
            assert get_raw(client, path).status_code == 200, path
    cases = []
    for bad in ids:
        cases += [
            *([] if bad == "0" * 64 else [(f"/iiif/3/{bad}", NOT_FOUND)]),
            (f"/iiif/3/{bad}/info.json", NOT_FOUND),
            (f"/iiif/3/{bad}/full/max/0/default.jpg", NOT_FOUND),
            (f"/dzi/{bad}.dzi", NOT_FOUND),
            (f"/dzi/{bad}_files/0/0_0.jpeg", NOT_FOUND),
            *(
                [
                    (f"/api/v1/images/{bad}", NOT_FOUND),
                    (f"/api/v1/images/{bad}/thumbnail", NOT_FOUND),
                    (f"/api/v1/images/{bad}/mask", NOT_FOUND),
                ]
                if bad not in refs
                else []
            ),
        ]
    check_all(client, cases)
    # the IIIF base URI of a well-formed id may redirect (303) to its info.json, which then is a 404
    resp = get_raw(client, f"/iiif/3/{'0' * 64}")
    if resp.status_code == 303:
        resp = client.get(resp.headers["location"], follow_redirects=False)
    assert error_problems(resp, NOT_FOUND, "base URI of an unknown id") == []


# -- IIIF parameters ----------------------------------------------------------------------------------------
def test_iiif_regions_outside_or_malformed(served: tuple[TestClient, str]) -> None:
    client, image_id = served
    base = f"/iiif/3/{image_id}"
    regions = [
        "384,0,10,10",  # starts at the right edge
        "0,303,10,10",
        "99999,99999,10,10",
        f"{HUGE},0,1,1",
        "0,0,0,10",
        "0,0,10,0",
        "-1,0,10,10",
        "0,0,-10,10",
        "1.5,0,10,10",
        "0,0,10",
        "0,0,10,10,10",
        "a,b,c,d",
        "pct:100,0,10,10",
        "pct:0,0,0,0",
        "pct:-1,0,10,10",
        "pct:nan,0,1,1",
        "pct:inf,0,1,1",
        "pct:1e5,0,1,1",
        "%00",
        "full%00",
        "squares",
        "",
    ]
    check_all(client, [(f"{base}/{r}/max/0/default.jpg", BAD) for r in regions])


def test_iiif_huge_numbers_are_400_not_500(served: tuple[TestClient, str]) -> None:
    """Numbers too big for a float must be a 400 (or 413), not an OverflowError."""
    client, image_id = served
    base = f"/iiif/3/{image_id}"
    cases = [
        (f"{base}/pct:0,0,{HUGE},1/max/0/default.jpg", (400, 413)),
        (f"{base}/pct:{HUGE},0,1,1/max/0/default.jpg", (400, 413)),
        (f"{base}/full/^{HUGE},/0/default.jpg", (400, 413)),
        (f"{base}/full/,{HUGE}/0/default.jpg", (400, 413)),
        (f"{base}/full/^,{HUGE}/0/default.jpg", (400, 413)),
        (f"{base}/full/^!{HUGE},{HUGE}/0/default.jpg", (400, 413)),
        (f"{base}/full/{HUGE},{HUGE}/0/default.jpg", (400, 413)),
        (f"{base}/full/^pct:{HUGE}/0/default.jpg", (400, 413)),
        (f"{base}/full/max/{HUGE}/default.jpg", (400,)),
    ]
    check_all(client, cases)


def test_iiif_sizes_above_the_tile_limit_or_malformed(served: tuple[TestClient, str]) -> None:
    client, image_id = served
    base = f"/iiif/3/{image_id}/full"
    too_big = (400, 413)  # LimitExceeded: "more than limits.max_tile_pixels"
    cases = [
        (f"{base}/^5000,5000/0/default.jpg", too_big),
        (f"{base}/^4097,4097/0/default.jpg", too_big),
        (f"{base}/^pct:2000/0/default.jpg", too_big),
        (f"{base}/^!100000,100000/0/default.jpg", too_big),
        (f"{base}/385,/0/default.jpg", BAD),  # wider than the region without ^
        (f"{base}/,304/0/default.jpg", BAD),
        (f"{base}/pct:101/0/default.jpg", BAD),
        (f"{base}/0,0/0/default.jpg", BAD),
        (f"{base}/,/0/default.jpg", BAD),
        (f"{base}/!10,/0/default.jpg", BAD),
        (f"{base}/-10,/0/default.jpg", BAD),
        (f"{base}/10.5,/0/default.jpg", BAD),
        (f"{base}/pct:/0/default.jpg", BAD),
        (f"{base}/pct:0/0/default.jpg", BAD),
        (f"{base}/pct:-5/0/default.jpg", BAD),
        (f"{base}/pct:nan/0/default.jpg", BAD),
        (f"{base}/pct:inf/0/default.jpg", BAD),
        (f"{base}/%C2%B9%C2%B2,/0/default.jpg", BAD),  # superscript digits: str.isdigit() but not int()
        (f"{base}/%EF%BC%91%EF%BC%90,/0/default.jpg", (200, 400)),  # full-width digits: int() reads them
        (f"{base}/maximum/0/default.jpg", BAD),
        (f"{base}/full/0/default.jpg", BAD),
    ]
    problems = []
    for path, allowed in cases:
        resp = get_raw(client, path)
        if resp.status_code == 200 and 200 in allowed:
            continue
        problems += error_problems(resp, tuple(s for s in allowed if s != 200), path)
    assert problems == []


def test_iiif_rotations_qualities_and_formats(served: tuple[TestClient, str]) -> None:
    client, image_id = served
    base = f"/iiif/3/{image_id}/full/max"
    cases = [
        (f"{base}/45/default.jpg", (501,)),
        (f"{base}/22.5/default.jpg", (501,)),
        (f"{base}/!1/default.jpg", (501,)),
        (f"{base}/359.9/default.jpg", (501,)),
        (f"{base}/-90/default.jpg", (400,)),
        (f"{base}/361/default.jpg", (400,)),
        (f"{base}/450/default.jpg", (400,)),
        (f"{base}/nan/default.jpg", (400,)),
        (f"{base}/inf/default.jpg", (400,)),
        (f"{base}/abc/default.jpg", (400,)),
        (f"{base}/!!90/default.jpg", (400,)),
        (f"{base}/%00/default.jpg", (400,)),
        (f"{base}/0/native.jpg", BAD_OR_UNSUPPORTED),
        (f"{base}/0/grey.jpg", BAD_OR_UNSUPPORTED),
        (f"{base}/0/DEFAULT.jpg", BAD_OR_UNSUPPORTED),
        (f"{base}/0/default%00.jpg", BAD_OR_UNSUPPORTED),
        (f"{base}/0/default.gif", BAD_OR_UNSUPPORTED),
        (f"{base}/0/default.tif", BAD_OR_UNSUPPORTED),
        (f"{base}/0/default.pdf", BAD_OR_UNSUPPORTED),
        (f"{base}/0/default.jp2", BAD_OR_UNSUPPORTED),
        (f"{base}/0/default.JPG", BAD_OR_UNSUPPORTED),
        (f"{base}/0/default.jpg.png", BAD_OR_UNSUPPORTED),
        (f"{base}/0/default.jpg%00", BAD_OR_UNSUPPORTED),
        (f"{base}/0/default.", (400, 404, 501)),
        (f"{base}/0/default", (404,)),
    ]
    check_all(client, cases)


# -- Deep Zoom ------------------------------------------------------------------------------------------------
def test_dzi_levels_and_tile_indexes(served: tuple[TestClient, str]) -> None:
    client, image_id = served
    base = f"/dzi/{image_id}_files"  # 384 x 303: levels 0..9, level 9 is 2 x 2 tiles
    cases = [
        (f"{base}/-1/0_0.jpeg", BAD),
        (f"{base}/9/-1_0.jpeg", BAD),
        (f"{base}/9/0_-1.jpeg", BAD),
        (f"{base}/a/0_0.jpeg", BAD),
        (f"{base}/9/a_0.jpeg", BAD),
        (f"{base}/9/0_b.jpeg", BAD),
        (f"{base}/1.5/0_0.jpeg", BAD),
        (f"{base}/9/0.5_0.jpeg", BAD),
        (f"{base}/0x9/0_0.jpeg", BAD),
        (f"{base}/%209/0_0.jpeg", BAD),
        (f"{base}/9%00/0_0.jpeg", BAD),
        (f"{base}/9/0_0_0.jpeg", BAD),
        (f"{base}/9/00.jpeg", BAD),
        (f"{base}/%C2%B2/0_0.jpeg", BAD),  # "²".isdigit() is True but int("²") fails
        (f"{base}/9/%C2%B2_0.jpeg", BAD),
        (f"{base}/9/0_%C2%B2.jpeg", BAD),
        (f"{base}/10/0_0.jpeg", NOT_FOUND),  # one past the top level
        (f"{base}/99999999999999999999999999/0_0.jpeg", BAD),
        (f"{base}/9/2_0.jpeg", NOT_FOUND),  # one past the last column
        (f"{base}/9/0_2.jpeg", NOT_FOUND),
        (f"{base}/9/99999999999999999999999_0.jpeg", BAD),
        (f"{base}/0/1_0.jpeg", NOT_FOUND),
        (f"{base}/9/0_0.gif", BAD_OR_UNSUPPORTED),
        (f"{base}/9/0_0.tif", BAD_OR_UNSUPPORTED),
        (f"{base}/9/0_0.JPEG", BAD_OR_UNSUPPORTED),
        (f"{base}/9/0_0.jpeg%00", BAD_OR_UNSUPPORTED),
        (f"{base}/9/0_0", NOT_FOUND),
        (f"{base}/9/0_0.", (400, 404)),
    ]
    check_all(client, cases)
    # the valid neighbours of those answer
    for ok in (f"{base}/9/1_1.jpeg", f"{base}/0/0_0.jpeg", f"{base}/9/0_0.png", f"/dzi/{image_id}.dzi"):
        assert get_raw(client, ok).status_code == 200, ok


# -- REST: paging and uploads ---------------------------------------------------------------------------------
def test_paging_out_of_range_is_422_json(served: tuple[TestClient, str]) -> None:
    client, _ = served
    queries = [
        "limit=0",
        "limit=100000",
        "limit=1001",
        "offset=-1",
        "limit=-5",
        "limit=abc",
        "offset=1.5",
        "offset=99999999999999999999999999",
        "limit=%00",
        "limit=1e3",
    ]
    check_all(client, [(f"/api/v1/images?{q}", (400, 422)) for q in queries])
    page = client.get("/api/v1/images", params={"offset": 5, "limit": 1000})
    assert page.status_code == 200 and page.json()["items"] == []


def _multipart(boundary: str, filename: str, payload: bytes, field: str = "file") -> bytes:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + payload + f"\r\n--{boundary}--\r\n".encode()


def uploads_left(ws: gv.Workspace) -> list[Path]:
    spool = ws.root / "cache" / "uploads"
    stored = [p for sub in ("blobs", "pyramids") for p in (ws.root / sub).rglob("*") if not p.is_dir()]
    return (list(spool.rglob("*")) if spool.exists() else []) + stored


def test_malformed_uploads_are_4xx_json(
    served: tuple[TestClient, str], sqlite_workspace: gv.Workspace, samples: dict[str, Path]
) -> None:
    client, _ = served
    before = uploads_left(sqlite_workspace)
    boundary = uuid.uuid4().hex
    attempts = {
        "no file field": client.post("/api/v1/images", data={"note": "no file here"}),
        "wrong field name": client.post("/api/v1/images", files={"image": ("a.png", b"x", "image/png")}),
        "empty upload": client.post("/api/v1/images", files={"file": ("empty.png", b"", "image/png")}),
        "no body": client.post("/api/v1/images"),
        "json body": client.post("/api/v1/images", json={"file": "coins.png"}),
        "garbage multipart": client.post(
            "/api/v1/images", content=b"garbage", headers={"content-type": f"multipart/form-data; boundary={boundary}"}
        ),
        "missing boundary": client.post(
            "/api/v1/images", content=b"garbage", headers={"content-type": "multipart/form-data"}
        ),
        "unterminated multipart": client.post(
            "/api/v1/images",
            content=_multipart(boundary, "c.png", samples["coins.png"].read_bytes())[:-30],
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        ),
        "file field is text": client.post("/api/v1/images", data={"file": "not a file"}),
    }
    problems = []
    for label, resp in attempts.items():
        problems += error_problems(resp, (400, 413, 422), label)
    assert problems == []
    assert "empty" in attempts["empty upload"].json()["error"]["message"]
    assert uploads_left(sqlite_workspace) == before
    ok = client.post("/api/v1/images", files={"file": ("astronaut.jpg", samples["astronaut.jpg"].read_bytes())})
    assert ok.status_code == 201


def test_upload_over_max_upload_bytes(sqlite_workspace: gv.Workspace, samples: dict[str, Path]) -> None:
    """Rejected by Content-Length when it says so, and while streaming when it does not; nothing kept."""
    with (
        gv.open_workspace(sqlite_workspace.root, limits={"max_upload_bytes": 50_000}) as ws,
        TestClient(create_app(ws), raise_server_exceptions=False) as client,
    ):
        big = samples["immunohistochemistry.png"].read_bytes()  # 469 kB: refused from its Content-Length
        mid = samples["coins.png"].read_bytes()  # 76 kB: under Content-Length slack, refused while copying
        assert len(mid) > 50_000
        boundary = uuid.uuid4().hex
        body = _multipart(boundary, "coins.png", mid)

        def chunks() -> Iterator[bytes]:  # no Content-Length at all: chunked transfer
            for i in range(0, len(body), 8192):
                yield body[i : i + 8192]

        responses = {
            "declared": client.post("/api/v1/images", files={"file": ("ihc.png", big, "image/png")}),
            "streamed": client.post("/api/v1/images", files={"file": ("coins.png", mid, "image/png")}),
            "chunked": client.post(
                "/api/v1/images",
                content=chunks(),
                headers={"content-type": f"multipart/form-data; boundary={boundary}"},
            ),
            "lying length": client.post(
                "/api/v1/images",
                content=body,
                headers={"content-type": f"multipart/form-data; boundary={boundary}", "content-length": "10"},
            ),
        }
        problems = []
        for label, resp in responses.items():
            allowed = (400, 413, 422) if label == "lying length" else (413,)
            problems += error_problems(resp, allowed, label)
            if resp.status_code == 413 and "max_upload_bytes" not in resp.json()["error"]["message"]:
                problems.append(f"{label}: message does not name limits.max_upload_bytes")
        assert problems == []
        assert uploads_left(ws) == [] and ws.list_images()[1] == 0
        small = client.post("/api/v1/images", files={"file": ("astronaut.jpg", samples["astronaut.jpg"].read_bytes())})
        assert small.status_code == 201  # 40 kB: under the limit, the server is still fine


def test_upload_file_name_cannot_escape(
    served: tuple[TestClient, str], sqlite_workspace: gv.Workspace, samples: dict[str, Path], tmp_path: Path
) -> None:
    """A client file name with ../, an absolute path or backslashes only names the image; nothing is written there."""
    client, _ = served

    def outside_workspace() -> set[Path]:
        return {p for p in tmp_path.rglob("*") if sqlite_workspace.root not in (p, *p.parents)}

    before, abs_existed = outside_workspace(), Path("/tmp/abs.jpg").exists()
    names = ["../../../../escape.jpg", "/tmp/abs.jpg", "..\\..\\win.jpg", "..", "."]
    sources = ["astronaut.jpg", "retina.jpg", "hubble_deep_field.jpg", "immunohistochemistry.png", "coffee.webp"]
    for name, src in zip(names, sources, strict=True):
        resp = client.post("/api/v1/images", files={"file": (name, samples[src].read_bytes())})
        assert resp.status_code == 201, resp.text
        stored = resp.json()["name"]
        assert "/" not in stored and "\\" not in stored and stored not in ("..", "."), stored
    assert outside_workspace() == before
    assert Path("/tmp/abs.jpg").exists() == abs_existed
