"""Which optional extra provides which module: the one place that decides it (pyproject's optional dependencies).

The core install (``pip install gigavision``) has ingest, tiles, the viewer, annotations, formats, datasets, QC
and jobs on SQLite. A feature that needs more calls ``require(extra, module, feature=...)`` *before* it writes
anything, and the user reads one line naming the install command, e.g.
``gigavision train needs the 'train' extra (torch is not installed): pip install 'gigavision[train]'``.
The CLI exits 2 on it, the server answers 501 ``missing_extra``. Tests simulate a missing extra with
``sys.modules[name] = None``.
"""

from __future__ import annotations

import importlib.util

from gigavision.errors import MissingExtra

# extra -> the top-level modules it installs (distribution names differ: segmentation-models-pytorch, psycopg[binary])
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": (
        "torch",
        "torchvision",
        "lightning",
        "timm",
        "segmentation_models_pytorch",
        "safetensors",
        "onnx",
        "onnxscript",
        "onnxruntime",
        "optuna",
    ),
    "onnx": ("onnxruntime",),
    "dask": ("distributed",),
    "postgres": ("psycopg",),
    "redis": ("redis",),
    "geo": ("rasterio",),
    "search": ("faiss",),
    "volumes": ("nibabel", "monai"),
}


def install_command(extra: str) -> str:
    return f"pip install 'gigavision[{extra}]'"


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (a ``None`` in ``sys.modules`` counts as missing)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module with no spec
        return False


def missing(extra: str, *modules: str) -> list[str]:
    """The modules of ``extra`` (all of them when none are named) that are not installed."""
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    unknown = [m for m in modules if m.partition(".")[0] not in EXTRAS[extra]]
    if unknown:
        raise KeyError(f"extra {extra!r} does not provide {', '.join(unknown)}")
    return [m for m in modules or EXTRAS[extra] if not installed(m)]


def require(extra: str, *modules: str, feature: str) -> None:
    """Raise ``MissingExtra`` naming ``pip install 'gigavision[extra]'`` when a module of ``extra`` is missing.

    ``modules``: the ones ``feature`` imports (default: every module of the extra). ``feature``: what the user
    asked for, as they asked it ("gigavision train", "POST /api/v1/models/train").
    """
    absent = missing(extra, *modules)
    if absent:
        raise missing_extra(extra, absent[0], feature)


def missing_extra(extra: str, module: str, feature: str) -> MissingExtra:
    """The one-line error: what needs it, which module is missing, the install command."""
    message = f"{feature} needs the {extra!r} extra ({module} is not installed): {install_command(extra)}"
    return MissingExtra(message, extra=extra, module=module)


def extra_of(module: str) -> str | None:
    """The extra that installs top-level module ``module`` (for an ``ImportError`` that got past ``require``);
    the smallest extra wins (onnxruntime: 'onnx', not 'train')."""
    top = module.partition(".")[0]
    owners = [e for e, mods in EXTRAS.items() if top in mods]
    return min(owners, key=lambda e: len(EXTRAS[e])) if owners else None


def from_import_error(exc: ImportError, feature: str) -> MissingExtra | None:
    """``MissingExtra`` for an import of an extra's module that failed, else None (a real bug: re-raise it)."""
    name = getattr(exc, "name", None)
    if not isinstance(exc, ModuleNotFoundError) or not name:
        return None
    extra = extra_of(name)
    return missing_extra(extra, name.partition(".")[0], feature) if extra else None
