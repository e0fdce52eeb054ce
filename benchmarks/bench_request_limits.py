"""Request bodies bounded before they are parsed, measured over a real socket (uvicorn, HTTP/1.1).

The app is served by uvicorn in this process, wrapped in an outermost ASGI layer that counts the body bytes
uvicorn hands to it (what the server read). A raw socket client then sends:

- ``declared``: ``POST /api/v1/images`` declaring ``Content-Length: 20000000000`` and writing nothing more
  until the answer arrives: status, time from the last header byte to the answer, bytes the client wrote,
  bytes the server read (issue 13: 413 in < 100 ms with < 1 MB written).
- ``chunked``: the same route with ``Transfer-Encoding: chunked``, a multipart body whose file is 40 MB of
  zeros in 64 KiB chunks, against ``limits.max_upload_bytes = 1 MB``: status and bytes the server read
  (issue 13: 413 after <= 2 MB read). The client stops writing once the answer arrives or the server closes.
- ``chunked_json``: 40 MB of chunked JSON to ``POST /api/v1/exports`` against ``max_request_bytes = 1 MB``.

One JSON line on stdout. Usage::

    .venv/bin/python benchmarks/bench_request_limits.py
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

import gigavision as gv
from gigavision.server.main import create_app

MB = 1000 * 1000
BOUNDARY = "bench-limits"


class Counted:
    """Outermost ASGI layer: counts the request body bytes the server received from the socket."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.read = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counting() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                self.read += len(message.get("body", b""))
            return message

        await self.app(scope, counting, send)


def serve(app: Any) -> tuple[uvicorn.Server, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # uvicorn offers no event to wait on
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    return server, port


def _answer(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            break
        data += piece
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data


def declared(port: int, counter: Counted) -> dict[str, Any]:
    counter.read = 0
    head = (
        f"POST /api/v1/images HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 20000000000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head)
        start = time.perf_counter()
        status, _ = _answer(sock)
        seconds = time.perf_counter() - start
    return {"status": status, "ms": round(seconds * 1000, 2), "client_wrote": len(head), "server_read": counter.read}


def _chunks(first: bytes, size: int, piece: int = 64 * 1024) -> Iterator[bytes]:
    yield first
    zeros = bytes(piece)
    for start in range(0, size, piece):
        yield zeros[: min(piece, size - start)]


def chunked(port: int, counter: Counted, path: str, content_type: str, body: Iterator[bytes]) -> dict[str, Any]:
    counter.read = 0
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    wrote = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head)
        sock.settimeout(0.0)
        answer = b""
        for piece in body:
            with contextlib.suppress(BlockingIOError):  # stop writing as soon as the server has answered
                answer += sock.recv(65536)
            if answer:
                break
            frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
            try:
                sock.setblocking(True)
                sock.sendall(frame)
                wrote += len(frame)
            except (BrokenPipeError, ConnectionResetError):
                break
            finally:
                sock.setblocking(False)
        sock.settimeout(10)
        if b"\r\n\r\n" not in answer:
            try:
                more = _answer(sock)[1]
            except (ConnectionResetError, TimeoutError):
                more = b""
            answer += more
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return {"status": status, "client_wrote": wrote, "server_read": counter.read}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws = gv.init_workspace(Path(tmp) / "ws")
        counter = Counted(create_app(ws))
        server, port = serve(counter)
        try:
            result: dict[str, Any] = {"declared_20gb": declared(port, counter)}
            ws.settings.limits.max_upload_bytes = 1 * MB
            ws.settings.limits.max_request_bytes = 1 * MB
            part = (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            multipart = f"multipart/form-data; boundary={BOUNDARY}"
            result["chunked_40mb_upload"] = chunked(port, counter, "/api/v1/images", multipart, _chunks(part, 40 * MB))
            result["chunked_40mb_json"] = chunked(
                port, counter, "/api/v1/exports", "application/json", _chunks(b'{"format": "', 40 * MB)
            )
            result["limit_bytes"] = 1 * MB
            d, c, j = result["declared_20gb"], result["chunked_40mb_upload"], result["chunked_40mb_json"]
            result["ok"] = (
                d["status"] == 413
                and d["ms"] < 100
                and d["client_wrote"] < MB
                and all(x["status"] == 413 and x["server_read"] <= 2 * MB for x in (c, j))
            )
        finally:
            server.should_exit = True
            ws.close()
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
