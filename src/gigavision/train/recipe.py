"""Training recipes, for training code and users: the recipe types live in ``gigavision.models.recipe``, below
training, because a published model is rebuilt from its recipe without importing ``train``."""

from __future__ import annotations

from gigavision.models.recipe import (
    IMAGE_SIZE_MAX,
    IMAGE_SIZE_MIN,
    IMAGE_SIZE_STEP,
    AugmentConfig,
    PatchConfig,
    Recipe,
    TaskName,
    image_size_for,
    load_recipe,
    parse_assignment,
    resolve_image_size,
    set_path,
)

__all__ = [
    "IMAGE_SIZE_MAX",
    "IMAGE_SIZE_MIN",
    "IMAGE_SIZE_STEP",
    "AugmentConfig",
    "PatchConfig",
    "Recipe",
    "TaskName",
    "image_size_for",
    "load_recipe",
    "parse_assignment",
    "resolve_image_size",
    "set_path",
]
