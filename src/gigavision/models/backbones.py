"""Backbones from timm by name, with pretrained weights from the library's cache or a local file.

``pretrained=True`` goes through timm's own mechanism (the Hugging Face hub cache); gigavision never downloads
behind the user's back: with ``HF_HUB_OFFLINE`` unset and no network the hub call fails, and the error says
both ways out (cache the weights, or pass ``--weights PATH``). ``weights`` loads a local safetensors file or a
``weights_only`` torch checkpoint into the model (``strict=False``: a classifier head of another size is
skipped and reported).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gigavision.errors import InvalidInput, MissingDependency


def timm_names(pattern: str = "*") -> list[str]:
    import timm

    return list(timm.list_models(pattern))


def create_timm(
    arch: str, *, num_classes: int, in_chans: int = 3, pretrained: bool = False, **kwargs: Any
) -> nn.Module:
    """``timm.create_model`` with gigavision's errors (unknown name, weights not cached and no network)."""
    import timm

    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('_')[0]}*")[:8]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise InvalidInput(f"unknown backbone {arch!r} (timm has no such model){hint}")
    try:
        net: nn.Module = timm.create_model(
            arch, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs
        )
        return net
    except Exception as exc:
        if not pretrained:
            raise
        raise MissingDependency(
            f"pretrained weights for {arch} are not in the local cache and could not be fetched ({type(exc).__name__});"
            " either download them once where there is network (timm/Hugging Face cache, ~/.cache/huggingface),"
            " or pass --weights PATH with a local safetensors/.pt file, or train from scratch without --pretrained"
        ) from exc


def recipe_backbone(arch: str, pretrained: bool, weights: str | None, init_weights: bool = True) -> nn.Module:
    """A pooled timm backbone (``num_classes=0``) initialised as a recipe asks: the library's pretrained
    weights, a local weights file, or (``init_weights=False``, a checkpoint follows) neither."""
    backbone = create_timm(arch, num_classes=0, pretrained=pretrained and init_weights)
    if init_weights and weights:
        load_weights(backbone, weights)
    return backbone


def feature_dim(backbone: nn.Module) -> int:
    """Width of a timm backbone's pooled output with ``num_classes=0``.

    That is ``head_hidden_size`` when the model has a pre-logits layer (MobileNetV3: 1024, not the 576 of
    ``num_features``), else ``num_features``.
    """
    for name in ("head_hidden_size", "num_features"):
        width = backbone.__dict__.get(name)
        if isinstance(width, int) and width > 0:
            return width
    raise InvalidInput(f"{type(backbone).__name__} is not a timm backbone (no num_features)")


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from a safetensors file or a ``weights_only`` torch file (``{"state_dict": …}`` too)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InvalidInput(f"weights {p}: no such file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(p)))
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InvalidInput(f"weights {p}: not a safetensors or weights_only torch file ({exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidInput(f"weights {p}: expected a mapping of parameter names to tensors")
    return state


def load_weights(net: nn.Module, path: str | Path) -> list[str]:
    """Load matching tensors from ``path`` into ``net``; returns the names left at their init (shape/absent)."""
    state = read_weights(path)
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise InvalidInput(f"weights {path}: no parameter matches this architecture (wrong --model?)")
    net.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))


def timm_normalization(net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The backbone's own mean/std (timm's pretrained config)."""
    import timm.data

    cfg = timm.data.resolve_data_config({}, model=net)
    return tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])
