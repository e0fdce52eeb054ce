"""Vectors for visual search from a published model.

An ``embed`` model's output is its embedding (torch or onnxruntime alike); a ``classify`` or ``probe`` model
gives the pooled features of its backbone, the layer before the head (torch only: the exported graph ends at
the head). Every vector is L2-normalised, so an inner product is the cosine similarity and one FAISS metric
(inner product) serves all of them.

Pixels reach the network through the predictor's own preprocessing (``Predictor.prepare`` / ``prepare_batch``),
so a vector of an image here is the vector the model computes when it predicts that image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from gigavision.errors import InvalidInput

if TYPE_CHECKING:
    from gigavision.models.predict import Predictor

FEATURE_TASKS = ("embed", "classify", "probe")  # the tasks whose models give a vector per image


def check_feature_task(model_id: str, task: str) -> None:
    """Refuse a model that gives no image vector (a detector or a segmenter), naming it and what would do."""
    if task not in FEATURE_TASKS:
        raise InvalidInput(
            f"model {model_id} is a {task} model; image vectors come from an embed, classify or probe model"
        )


def fit_window(pixels: np.ndarray, tile: int, size: int) -> np.ndarray:
    """A region read at an index's resolution, as the ``size``-square uint8 RGB the network sees.

    Regions up to ``tile`` pixels are placed on a zero ``tile`` square and scaled by ``size / tile``, the scale
    every indexed window had (an edge window, clipped by the image, keeps the scale of its neighbours); a
    bigger region is shrunk to fit (letterbox), the one way to show it whole.
    """
    from gigavision.images.pixels import letterbox, resize, to_rgb_uint8

    rgb = to_rgb_uint8(pixels)
    h, w = rgb.shape[:2]
    if max(h, w) > tile:
        return letterbox(rgb, size)[0]
    square = np.zeros((tile, tile, 3), dtype=np.uint8)
    square[:h, :w] = rgb
    return square if tile == size else resize(square, size, size, resample="bilinear")


class FeatureExtractor:
    """Unit vectors ``(N, D)`` float32 from a loaded ``Predictor`` of an embed, classify or probe model."""

    def __init__(self, predictor: Predictor) -> None:
        info = predictor.info
        check_feature_task(info.id, info.task)
        if info.task != "embed" and predictor.network is None:
            raise InvalidInput(
                f"model {info.id}: the backbone features of a {info.task} model are read from its checkpoint;"
                " use the torch runtime (install 'gigavision[train]')"
            )
        self.predictor = predictor
        self.model_id = info.id
        self.size = predictor.size

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Vectors of a normalised ``(N, 3, S, S)`` float32 batch."""
        if self.predictor.info.task == "embed":
            out = np.asarray(self.predictor.run(batch)[0], dtype=np.float32)
        else:
            import torch

            net = self.predictor.network
            assert net is not None  # checked in __init__
            with torch.inference_mode():
                x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.predictor.device)
                out = net.backbone(x).float().cpu().numpy()
        out = out.reshape(len(batch), -1)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        unit: np.ndarray = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
        return unit

    def windows(self, pixels: np.ndarray) -> np.ndarray:
        """Vectors of ``(N, S, S, 3)`` uint8 windows already at the network's side (``fit_window``'s output)."""
        out = [
            self.run(self.predictor.prepare_batch(pixels[i : i + self.predictor.batch]))
            for i in range(0, len(pixels), self.predictor.batch)
        ]
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    def images(self, images: Sequence[np.ndarray], names: Sequence[str] | None = None) -> np.ndarray:
        """Vectors of whole images of any shape (letterboxed as prediction letterboxes them)."""
        labels = list(names) if names else [f"image {i}" for i in range(len(images))]
        out = []
        for start in range(0, len(images), self.predictor.batch):
            chunk = images[start : start + self.predictor.batch]
            batch = [self.predictor.prepare(np.asarray(a), labels[start + k])[0] for k, a in enumerate(chunk)]
            out.append(self.run(np.stack(batch)))
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
