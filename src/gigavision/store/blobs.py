"""Content-addressed blob store over fsspec: originals stored once, by sha256, written atomically."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

from gigavision.errors import InvalidInput
from gigavision.files import atomic_path, atomic_write

CHUNK = 4 * 1024 * 1024
_SHA = re.compile(r"^[0-9a-f]{64}$")
_EXT = re.compile(r"^\.[a-z0-9]{1,10}$")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def blob_key(sha: str, suffix: str = "") -> str:
    """``ab/abcdef…[.ext]``: the extension is kept because some slide readers need it to detect the vendor."""
    if not _SHA.match(sha):
        raise InvalidInput(f"not a sha256 hex digest: {sha!r}")
    ext = suffix.lower()
    return f"{sha[:2]}/{sha}{ext if _EXT.match(ext) else ''}"


class BlobStore:
    """Blobs under an fsspec URL (a local folder by default). Local paths are returned for direct reads."""

    def __init__(self, url: str, cache_dir: Path | None = None) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.fs: Any
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/")
        self.local = type(self.fs).__name__ == "LocalFileSystem"
        self.cache_dir = cache_dir
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def _full(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") or "\x00" in p for p in parts):
            raise InvalidInput(f"invalid blob key {key!r}")
        return f"{self.root}/{key}"

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._full(key)))

    def put_file(self, src: Path, key: str) -> bool:
        """Store ``src`` under ``key``; False when it was already there. Never leaves a partial blob."""
        full = self._full(key)
        if self.fs.exists(full):
            return False
        if self.local:
            with src.open("rb") as fin, atomic_write(full) as fout:
                shutil.copyfileobj(fin, fout, CHUNK)
        else:  # object stores publish an object only once its upload completes
            self.fs.put_file(str(src), full)
        return True

    def delete(self, key: str) -> None:
        full = self._full(key)
        if self.fs.exists(full):
            self.fs.rm(full)

    def local_path(self, key: str) -> Path:
        """A local file with the blob's bytes (downloaded once into ``cache_dir`` for remote stores)."""
        full = self._full(key)
        if self.local:
            return Path(full)
        if self.cache_dir is None:
            raise InvalidInput(f"blob store {self.url} is remote and no local cache folder is configured")
        dest = self.cache_dir / key
        if not dest.exists():
            with atomic_path(dest) as tmp:
                self.fs.get_file(full, str(tmp))
        return dest

    def keys(self) -> list[str]:
        if self.local and not Path(self.root).exists():
            return []
        found = self.fs.find(self.root)
        return sorted(f[len(self.root) + 1 :] for f in found if not Path(f).name.startswith("."))
