"""Dataset versions: immutable, content-hashed snapshots of images + annotations + schema + split assignment.

``create_version(ws, "fundus", filters=["label=dr"], split="train=0.8,val=0.1,test=0.1")`` freezes the next
version ``fundus@N``; ``open_version(ws, "fundus@2")`` (or ``"fundus"`` / ``"fundus@latest"``) reads one back
as a ``DatasetVersion`` (``classes()``, ``images()``, ``annotations(image_id)``: what exporters and training
read); ``list_versions`` and ``diff_versions`` compare them. Splits assign whole images, grouped by a metadata
key and by near-identical pixels, so no group is ever on two sides.
"""

from __future__ import annotations

from gigavision.datasets.diff import diff_versions
from gigavision.datasets.versions import DatasetVersion, create_version, list_versions, open_version

__all__ = ["DatasetVersion", "create_version", "diff_versions", "list_versions", "open_version"]
