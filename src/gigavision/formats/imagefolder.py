"""ImageFolder (torchvision): one folder per class, the image files inside: ``<class>/<file>``.

Export mapping:
    tag          an image with exactly one image-level label goes to ``<label>/<file>``
                 (``<split>/<label>/<file>`` inside a dataset version); images are copied (default) or linked
    several tags not written: ImageFolder is single-label (use csv for multi-label); counted in ``skipped``
    no tag       not written (counted)
    other kinds  not written (counted)
    folder names the label, with ``/ \\ % :`` and control characters percent-encoded and a leading dot
                 escaped (``%2E``), so every label is one safe folder name; import decodes them

Import reads ``<class>/<files>`` (nested folders inside a class are included) or ``<split>/<class>/<files>``
when every top-level folder is a split name (train, val, valid, validation, test: the split is not kept).
Every file is ingested (or matched when already there) and gets one tag per class folder it is in.
"""

from __future__ import annotations

from pathlib import Path

from gigavision.errors import InvalidInput
from gigavision.formats.exporting import ExportContext
from gigavision.formats.importing import ImportSession, Row
from gigavision.formats.source import AnnotatedImages
from gigavision.formats.text import label_from_component, safe_component

DEFAULT_IMAGES = "copy"
SPLITS = ("train", "val", "valid", "validation", "test")


def export(source: AnnotatedImages, ctx: ExportContext) -> None:
    if ctx.image_mode == "none":
        raise InvalidInput("imagefolder holds the image files themselves: use images=copy or images=link")
    labels = {c["name"] for c in source.classes()}
    total = len(source)
    for done, entry in enumerate(source.images(), start=1):
        ann = source.annotations(entry.id)
        tags: list[str] = []
        for i in range(len(ann)):
            kind, label = str(ann.kind[i]), str(ann.label[i])
            if kind != "tag":
                ctx.result.skip(f"{kind} annotations (ImageFolder holds image-level labels)")
            elif label in labels and label not in tags:
                tags.append(label)
        if len(tags) == 1:
            file_name = ctx.file_name(entry)
            sub = f"{entry.split}/" if entry.split else ""
            ctx.place_image(entry, f"{sub}{safe_component(tags[0])}/{file_name}")
            ctx.result.images += 1
            ctx.result.annotations += 1
        elif tags:
            ctx.result.skip("images with several tags (ImageFolder is single-label; use csv)")
        else:
            ctx.result.skip("images without a tag")
        ctx.progress(done, total, entry.name)


def parse(path: Path, session: ImportSession) -> None:
    if not path.is_dir():
        raise InvalidInput(f"{path}: an ImageFolder import is a folder (or .zip) of class folders")
    top = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    for stray in (p for p in top if p.is_file()):
        session.reject(stray.name, "file", "not inside a class folder")
    folders = [p for p in top if p.is_dir()]
    if folders and all(p.name.lower() in SPLITS for p in folders):
        session.report.note("split folders (" + ", ".join(p.name for p in folders) + ") were read; splits are not kept")
        classes = [c for split in folders for c in sorted(split.iterdir()) if c.is_dir() and not c.name.startswith(".")]
    else:
        classes = folders
    for c in classes:
        session.declare_class(label_from_component(c.name), "tag")
    files = [
        (c, f)
        for c in classes
        for f in sorted(c.rglob("*"))
        if f.is_file() and not any(part.startswith(".") for part in f.relative_to(c).parts)
    ]
    for done, (folder, file) in enumerate(files, start=1):
        shown = file.relative_to(path).as_posix()
        session.report.files += 1
        target = session.resolve(file.name, shown, path=file, annotations=1)
        if target is not None:
            session.add(target, shown, [Row("file", label_from_component(folder.name), "tag")])
        session.progress(done, len(files), shown)
