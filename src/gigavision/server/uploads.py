"""Multipart uploads: safe client file names and streaming to disk under the upload limit."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import UploadFile

from gigavision.errors import LimitExceeded

COPY_CHUNK = 1024 * 1024


def safe_filename(raw: str | None) -> str:
    """The last path component of a client-supplied file name, without control characters."""
    name = re.split(r"[\\/]", raw or "")[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch != "\x00").strip()
    if name in ("", ".", ".."):
        return "upload"
    return name[:255]


def save_upload(upload: UploadFile, dest: Path, max_bytes: int) -> int:
    """Stream ``upload`` to ``dest`` in chunks; ``LimitExceeded`` (413) once it passes ``max_bytes``."""
    written = 0
    with dest.open("wb") as out:
        while chunk := upload.file.read(COPY_CHUNK):
            written += len(chunk)
            if written > max_bytes:
                raise LimitExceeded(f"upload is larger than limits.max_upload_bytes ({max_bytes:,} bytes)")
            out.write(chunk)
    return written
