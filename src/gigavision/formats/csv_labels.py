"""CSV of image-level labels: ``image,label[,label...]`` (multi-label classification).

Export mapping (``labels.csv``, or ``<split>.csv`` per split of a dataset version):
    header       ``image,label``
    row          the image's file name, then its tags in stored order, one per column (rows have as many
                 columns as the image has labels; an image without tags is a row with its name only)
    other kinds  not written (counted in ``skipped``)
    quoting      RFC 4180 (fields with commas, quotes or newlines are quoted), ``\\n`` line ends, UTF-8
    images       not written by default; images=copy|link puts them in ``images/``

Import: a header row is recognised when its first cell is image / file / filename / path; empty cells are
ignored; a UTF-8 byte-order mark is accepted. Each label becomes a tag on the referenced image.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import IO, Any

from gigavision.errors import InvalidInput
from gigavision.formats.exporting import ExportContext
from gigavision.formats.importing import ImportSession, Row
from gigavision.formats.source import AnnotatedImages

DEFAULT_IMAGES = "none"
HEADER_CELLS = ("image", "file", "filename", "file_name", "path")
MAX_CSV_BYTES = 2 * 1024**3


def export(source: AnnotatedImages, ctx: ExportContext) -> None:
    labels = {c["name"] for c in source.classes()}
    files: dict[str | None, tuple[IO[str], Any]] = {}
    total = len(source)
    try:
        for done, entry in enumerate(source.images(), start=1):
            if entry.split not in files:
                name = "labels.csv" if entry.split is None else f"{entry.split}.csv"
                fh = ctx.open_text(name).open("w", encoding="utf-8", newline="")
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(["image", "label"])
                files[entry.split] = (fh, writer)
            file_name = ctx.file_name(entry)
            ctx.place_image(entry, f"images/{file_name}")
            ann = source.annotations(entry.id)
            tags = []
            for i in range(len(ann)):
                kind, label = str(ann.kind[i]), str(ann.label[i])
                if kind != "tag":
                    ctx.result.skip(f"{kind} annotations (CSV holds image-level labels)")
                elif label in labels:
                    tags.append(label)
            files[entry.split][1].writerow([file_name, *tags])
            ctx.result.images += 1
            ctx.result.annotations += len(tags)
            ctx.progress(done, total, file_name)
        if not files:
            with ctx.open_text("labels.csv").open("w", encoding="utf-8", newline="") as empty:
                csv.writer(empty, lineterminator="\n").writerow(["image", "label"])
    finally:
        for handle, _ in files.values():
            handle.close()


def parse(path: Path, session: ImportSession) -> None:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.csv") if p.is_file())
        root = path
    else:
        files, root = [path], path.parent
    if not files:
        raise InvalidInput(f"{path}: no .csv file found")
    tables = []
    for file in files:  # read all first: an unreadable file is known before anything is written
        shown = file.relative_to(root).as_posix()
        try:
            if file.stat().st_size > MAX_CSV_BYTES:
                raise InvalidInput(f"{shown}: larger than {MAX_CSV_BYTES} bytes")
            rows = list(csv.reader(io.StringIO(file.read_text(encoding="utf-8-sig"), newline="")))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            error = InvalidInput(f"{shown}: not a readable CSV file ({exc})")
            if len(files) == 1:
                raise error from exc
            session.reject(shown, "file", str(error))
            continue
        except InvalidInput as exc:
            if len(files) == 1:
                raise
            session.reject(shown, "file", str(exc))
            continue
        tables.append((file, shown, rows))
    session.prefetch(cells[0].strip() for _, _, rows in tables for cells in rows if cells)
    total = sum(len(rows) for _, _, rows in tables)
    done = 0
    for file, shown, rows in tables:
        session.report.files += 1
        search = [file.parent, file.parent / "images"]
        for number, cells in enumerate(rows, start=1):
            done += 1
            if number == 1 and cells and cells[0].strip().lower() in HEADER_CELLS:
                continue
            if not cells or not any(c.strip() for c in cells):
                continue
            ref = cells[0].strip()
            labels = [c.strip() for c in cells[1:] if c.strip()]
            if not ref:
                session.reject(shown, f"row {number}", "no image in the first column")
                continue
            target = session.resolve(ref, shown, search=search, annotations=len(labels))
            if target is not None and labels:
                session.add(target, shown, [Row(f"row {number} label {j + 1}", t, "tag") for j, t in enumerate(labels)])
            if done % 1000 == 0:
                session.progress(done, total, shown)
    session.progress(total, total, "")
