"""Uploads, read once: the multipart body streams from the socket through python-multipart's parser straight into
its spool under the workspace (``cache/uploads/<id>/<name>``), held to ``limits.max_upload_bytes`` while it is
read. Nothing is spooled to the system temp folder first and nothing is copied again: a route ingests the spooled
file, or moves it into a job's input folder (same file system, a rename).

Every upload route reads its body through ``receive_form`` and declares its multipart body with
``multipart_body`` (its OpenAPI body, and its entry in ``limits.UPLOAD_ROUTES``, which gives it the upload limit).
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from gigavision.errors import InvalidInput, LimitExceeded
from gigavision.files import atomic_write
from gigavision.server.limits import UPLOAD_LIMIT, UPLOAD_MARK, UPLOAD_ROUTES

MAX_NAME_BYTES = 255  # a file name component on every common file system
TEMP_SUFFIX_BYTES = 40  # what files.temp_beside adds to a name: ".", ".tmp-<pid>-<12 hex>"
MAX_FIELDS = 64  # text fields next to the file
MAX_FIELD_BYTES = 64 * 1024  # one text field
MAX_TEXT_BYTES = 256 * 1024  # all text fields (and a whole urlencoded form) together
WRITE_CHUNK = 1024 * 1024  # file bytes gathered before one write (off the event loop)
SPOOL = ("cache", "uploads")


def safe_filename(raw: str | None) -> str:
    """The last path component of a client-supplied file name, without control characters, at most 255 bytes
    of UTF-8 (cut on a character boundary, the extension kept)."""
    name = re.split(r"[\\/]", raw or "")[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch != "\x00").strip()
    if name in ("", ".", ".."):
        return "upload"
    return _cut_name(name, MAX_NAME_BYTES)


def _cut_name(name: str, max_bytes: int) -> str:
    if len(name.encode()) <= max_bytes:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext.encode()) > 16:  # no extension worth keeping: cut the whole name
        stem, ext = name, ""
    tail = f".{ext}" if ext else ""
    room = max_bytes - len(tail.encode())
    # errors="ignore" drops the partial character the byte cut may leave at the end
    return stem.encode()[:room].decode(errors="ignore") + tail


def multipart_body(
    route: tuple[str, str], properties: dict[str, Any], required: list[str], description: str = ""
) -> dict[str, Any]:
    """``openapi_extra`` of the upload route ``(method, path)``: its multipart body for the schema (and the
    fuzzer), marked as held to ``limits.max_upload_bytes``; the route is registered for ``limits.BodyLimit``."""
    UPLOAD_ROUTES.add(route)
    schema: dict[str, Any] = {"type": "object", "required": required, "properties": properties}
    body: dict[str, Any] = {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    if description:
        body["description"] = description
    return {"requestBody": body, UPLOAD_MARK: UPLOAD_LIMIT}


FILE_PROPERTY: dict[str, Any] = {"type": "string", "format": "binary"}


@dataclass
class ReceivedForm:
    """A parsed form: its text fields and the one spooled file (``None`` when the form has none)."""

    fields: dict[str, str] = field(default_factory=dict)
    file: Path | None = None  # the spooled bytes, named like the client's file (cut shorter when it is long)
    filename: str | None = None  # the client's name, made safe (``safe_filename``): name a job's input by it
    size: int = 0


def spool_folder(root: Path) -> Path:
    """A new private folder under the workspace's upload spool."""
    folder = root.joinpath(*SPOOL, uuid.uuid4().hex)
    folder.mkdir(parents=True)
    return folder


async def read_body(request: Request, max_bytes: int, what: str) -> bytes:
    """The whole (small) body, refused with 413 once it passes ``max_bytes`` (declared or counted)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise LimitExceeded(f"{what} is at most {max_bytes:,} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > max_bytes:
            raise LimitExceeded(f"{what} is at most {max_bytes:,} bytes")
    return bytes(data)


def json_object(raw: bytes, where: str, requirement: str) -> dict[str, Any]:
    """``raw`` parsed as a JSON object; 400 (``InvalidInput``) for text that is not JSON (``{where} is not valid
    JSON``) or not an object (``{where} {requirement}``)."""
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"{where} is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidInput(f"{where} {requirement}")
    return body


async def read_json_object(request: Request, max_bytes: int, what: str, fields: str) -> dict[str, Any]:
    """A small JSON body that must be an object (``fields``: what it holds, for the message); 413 past
    ``max_bytes``, 400 for text that is not JSON or not an object."""
    return json_object(await read_body(request, max_bytes, what), "the JSON body", f"must be an object with {fields}")


@asynccontextmanager
async def receive_form(
    request: Request, workspace_root: Path, max_file_bytes: int, *, file_field: str = "file"
) -> AsyncIterator[ReceivedForm]:
    """Parse the request's form as it streams in: multipart (the file part written straight into a new spool
    folder under ``workspace_root``, at most ``max_file_bytes``) or urlencoded (text only). The spool folder
    is removed when the block ends: move the file out of it (a job's input) to keep it."""
    kind, params = parse_options_header(request.headers.get("content-type"))
    if kind == b"application/x-www-form-urlencoded":
        text = await read_body(request, MAX_TEXT_BYTES, "a urlencoded form")
        try:
            pairs = urllib.parse.parse_qsl(
                text.decode(), keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidInput(f"the form is not valid urlencoded UTF-8 text: {exc}") from exc
        yield ReceivedForm(fields=dict(pairs))
        return
    if kind != b"multipart/form-data":
        shown = kind.decode("latin-1") or "no content type"
        raise InvalidInput(f"send multipart/form-data with the file in field {file_field}, not {shown}")
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidInput("the multipart/form-data content type has no boundary")
    folder = spool_folder(workspace_root)
    try:
        reader = _FormReader(folder, max_file_bytes, file_field)
        await reader.read(request, boundary)
        yield reader.form
    finally:
        await run_in_threadpool(shutil.rmtree, folder, True)


class _FormReader:
    """python-multipart callbacks that keep text fields (capped) and stream the file part to its spool."""

    def __init__(self, folder: Path, max_file_bytes: int, file_field: str) -> None:
        self.folder, self.max_file_bytes, self.file_field = folder, max_file_bytes, file_field
        self.form = ReceivedForm()
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._field: str | None = None  # name of the text field being read (None: the file, or no part)
        self._text = bytearray()
        self._text_total = 0
        self._in_file = False
        self._pending = bytearray()  # file bytes not yet written
        self._out: IO[bytes] | None = None
        self._ended = False
        self._error: Exception | None = None

    # -- callbacks (synchronous, inside parser.write) -----------------------------------------------------------
    def _part_begin(self) -> None:
        self._disposition, self._field, self._in_file = b"", None, False
        self._text.clear()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_val(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise InvalidInput("a multipart part has no name (Content-Disposition: form-data; name=...)")
        name = options[b"name"].decode(errors="replace")
        if b"filename" in options:
            if name != self.file_field:
                raise InvalidInput(f"{name}: the file goes in the multipart field {self.file_field}")
            if self.form.file is not None:
                raise InvalidInput(f"one file per request, in the multipart field {self.file_field}")
            self.form.filename = safe_filename(options[b"filename"].decode(errors="replace"))
            # spooled under the client's name (readers' messages name it; the blob key takes its extension),
            # cut to leave room for atomic_write's temp suffix within the file system's 255 bytes
            self.form.file = self.folder / _cut_name(self.form.filename, MAX_NAME_BYTES - TEMP_SUFFIX_BYTES)
            self._in_file = True
        else:
            if len(self.form.fields) >= MAX_FIELDS:
                raise LimitExceeded(f"a form has at most {MAX_FIELDS} text fields")
            self._field = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.form.size += end - start
            if self.form.size > self.max_file_bytes:
                raise LimitExceeded(f"upload is larger than limits.max_upload_bytes ({self.max_file_bytes:,} bytes)")
            self._pending += data[start:end]
        else:
            self._text += data[start:end]
            self._text_total += end - start
            if len(self._text) > MAX_FIELD_BYTES or self._text_total > MAX_TEXT_BYTES:
                raise LimitExceeded(
                    f"form field {self._field}: text fields are at most {MAX_FIELD_BYTES:,} bytes each, "
                    f"{MAX_TEXT_BYTES:,} together"
                )

    def _part_end(self) -> None:
        if self._field is not None:
            try:
                self.form.fields[self._field] = self._text.decode()
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"form field {self._field}: not UTF-8 text") from exc
        self._field, self._in_file = None, False

    def _end(self) -> None:
        self._ended = True

    # -- the stream -----------------------------------------------------------------------------------------------
    async def read(self, request: Request, boundary: bytes) -> None:
        callbacks: Any = {
            "on_part_begin": self._part_begin,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_header_field": self._header_field,
            "on_header_value": self._header_val,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_end": self._end,
        }
        try:
            parser = MultipartParser(boundary, callbacks)
        except FormParserError as exc:
            raise InvalidInput(f"bad multipart boundary: {exc}") from exc
        writer = None
        try:
            async for chunk in request.stream():
                try:
                    parser.write(chunk)
                except FormParserError as exc:
                    raise InvalidInput(f"malformed multipart body: {exc}") from exc
                if self.form.file is not None and writer is None:
                    writer = atomic_write(self.form.file)  # published (fsync, rename) once the body is complete
                    self._out = writer.__enter__()
                if len(self._pending) >= WRITE_CHUNK:
                    await self._flush()
                if self._ended:
                    break
            if not self._ended:
                raise InvalidInput("the multipart body ended before its closing boundary (truncated upload?)")
            await self._flush()
        except BaseException as exc:
            if writer is not None:
                writer.__exit__(type(exc), exc, exc.__traceback__)  # removes the partial file
            raise
        if writer is not None:
            await run_in_threadpool(writer.__exit__, None, None, None)

    async def _flush(self) -> None:
        if self._pending and self._out is not None:
            data, self._pending = bytes(self._pending), bytearray()
            await run_in_threadpool(self._out.write, data)
