"""gigavision: build, train and deploy image recognition on images of any size, with experts in the loop.

``import gigavision as gv`` is cheap: heavy libraries load only when a verb needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Annotations", "Region", "Viewport", "Workspace", "init_workspace", "open_image", "open_workspace"]

if TYPE_CHECKING:
    from gigavision.annotations import Annotations
    from gigavision.geometry import Region
    from gigavision.images.registry import open_image
    from gigavision.store.annotations import Viewport
    from gigavision.workspace import Workspace, init_workspace, open_workspace

_LAZY = {
    "Annotations": "gigavision.annotations",
    "Viewport": "gigavision.store.annotations",
    "Region": "gigavision.geometry",
    "open_image": "gigavision.images.registry",
    "Workspace": "gigavision.workspace",
    "init_workspace": "gigavision.workspace",
    "open_workspace": "gigavision.workspace",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gigavision' has no attribute {name!r}")
