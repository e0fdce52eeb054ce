"""Zip archives: deterministic ones for exports, and safe extraction of uploaded ones for imports.

Extraction checks every member before anything is written: absolute paths, ``..`` components, NUL bytes,
symbolic links and special files are rejected one by one (reported, the rest still imported); too many
members, too many bytes in total or a suspicious compression ratio reject the whole archive. Bytes are
counted while copying, so a member that lies about its size in the header cannot exceed the limits.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gigavision.config import Limits
from gigavision.errors import InvalidInput, LimitExceeded
from gigavision.files import atomic_path

FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest zip date: no timestamps in exports


EXPANSION = 10  # an archive may unpack to at most this many times limits.max_upload_bytes


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 100_000
    max_total_bytes: int = EXPANSION * Limits().max_upload_bytes
    max_ratio: float = 1000.0  # uncompressed / compressed bytes of one member (zip bombs reach millions)

    @classmethod
    def of(cls, limits: Limits) -> ArchiveLimits:
        """The caps a workspace's ``[limits]`` set: ``max_archive_members`` members, and at most
        ``EXPANSION`` × ``max_upload_bytes`` unpacked (what an accepted upload may grow to)."""
        return cls(max_members=limits.max_archive_members, max_total_bytes=EXPANSION * limits.max_upload_bytes)


def write_zip(folder: Path, dest: Path) -> int:
    """Zip every file under ``folder`` into ``dest``: sorted names, fixed dates and modes, deflate.

    The same files give the same bytes on every run. Returns the number of members.
    """
    files = sorted(
        (p for p in folder.rglob("*") if p.is_file() or p.is_symlink()), key=lambda p: p.relative_to(folder).as_posix()
    )
    with (
        atomic_path(dest) as tmp,
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf,
    ):
        for path in files:
            info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.create_system = 3  # unix, so the mode above is honoured
            with path.open("rb") as src, zf.open(info, "w", force_zip64=True) as out:
                shutil.copyfileobj(src, out, 1 << 20)
    return len(files)


def member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why one member must not be extracted (None when it is fine)."""
    name = info.filename
    mode = info.external_attr >> 16
    if "\x00" in name:
        return "path contains a NUL byte"
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        return "path contains '..' (would escape the extraction folder)"
    if stat.S_ISLNK(mode):
        return "symbolic link (not extracted)"
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # no type bits: a plain file
        return "special file (not extracted)"
    if info.flag_bits & 0x1:
        return "encrypted (no password is asked for)"
    return None


def safe_extract(archive: Path, dest: Path, limits: ArchiveLimits | None = None) -> list[tuple[str, str]]:
    """Extract the safe members of ``archive`` into the empty folder ``dest``; returns ``(member, reason)``
    for each member left out. Raises ``InvalidInput`` / ``LimitExceeded`` (nothing extracted) for an
    unreadable archive or one over ``limits``."""
    limits = limits or ArchiveLimits()
    try:
        zf = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InvalidInput(f"{archive.name}: not a readable zip archive ({exc})") from exc
    with zf:
        members = zf.infolist()
        if len(members) > limits.max_members:
            raise LimitExceeded(f"{archive.name}: {len(members)} members, more than the limit {limits.max_members}")
        total = sum(m.file_size for m in members)
        if total > limits.max_total_bytes:
            raise LimitExceeded(
                f"{archive.name}: {total} bytes uncompressed, more than the limit {limits.max_total_bytes}"
            )
        rejected: list[tuple[str, str]] = []
        chosen: list[zipfile.ZipInfo] = []
        for m in members:
            problem = member_problem(m)
            if problem is None and not m.is_dir() and m.file_size > limits.max_ratio * max(m.compress_size, 1):
                problem = f"compression ratio over {limits.max_ratio:.0f} (zip bomb?)"
            if problem:
                rejected.append((m.filename, problem))
            elif not m.is_dir():
                chosen.append(m)
        budget = limits.max_total_bytes
        root = dest.resolve()
        written: set[Path] = set()
        for m in chosen:
            target = (root / m.filename.replace("\\", "/")).resolve()
            if not target.is_relative_to(root):
                rejected.append((m.filename, "path escapes the extraction folder"))
                continue
            if target in written:
                rejected.append((m.filename, "a second member of the same name (the first one is kept)"))
                continue
            try:  # ``a`` and ``a/b.json`` in one archive: the second of them cannot be extracted
                target.parent.mkdir(parents=True, exist_ok=True)
                clash = target.is_dir()
            except OSError:  # a folder on the path is already a file
                clash = True
            if clash:
                rejected.append((m.filename, "a file and a folder of the same name in the archive (the first is kept)"))
                continue
            written.add(target)
            try:
                with zf.open(m) as src, target.open("wb") as out:
                    while chunk := src.read(1 << 20):
                        budget -= len(chunk)
                        if budget < 0:
                            raise LimitExceeded(
                                f"{archive.name}: more than {limits.max_total_bytes} bytes uncompressed"
                            )
                        out.write(chunk)
            # corrupt deflate data (zlib.error), an unknown compression method (NotImplementedError) or what
            # zipfile refuses (RuntimeError): that member alone is rejected, the rest still imports
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
                target.unlink(missing_ok=True)
                rejected.append((m.filename, f"cannot extract: {exc}"))
        return rejected
