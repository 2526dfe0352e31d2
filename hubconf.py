"""torch.hub entry points: patchdino backbones from a clone of this repository.

Each entry returns the timm ``VisionTransformer`` of the weights given (a ``checkpoint.pt``
of ``patchdino pretrain``, its run folder, a ``.safetensors`` export, or published weights:
``timm:NAME``, ``timm:NAME@FILE`` for DINO's and DINOv2's files, a timm model folder, DINO's
training checkpoint), frozen in eval mode, without a classifier: ``model(x)`` gives ``(B, D)``
CLS features of ``(B, C, S, S)`` normalised images and ``model.forward_features(x)`` the
``(B, P + N, D)`` tokens (CLS, any registers, patches). ``backbone`` takes weights of any
architecture. The ``eval_transform`` entry gives the matching preprocessing::

    model = torch.hub.load(REPO_DIR, "vit_small_patch16", source="local", weights=PATH)
    transform = torch.hub.load(REPO_DIR, "eval_transform", source="local", weights=PATH)
    features = model(transform(image)[None])  # (1, D)

Without ``weights`` an entry returns randomly initialised weights of its architecture.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

dependencies = ["torch", "timm", "safetensors", "yaml", "PIL"]

try:
    import patchdino  # noqa: F401
except ImportError:  # a clone that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

_ARCHS = {
    "vit_tiny_patch16": ("vit_tiny_patch16_224", 16),
    "vit_small_patch16": ("vit_small_patch16_224", 16),
    "vit_small_patch8": ("vit_small_patch16_224", 8),
    "vit_base_patch16": ("vit_base_patch16_224", 16),
    "vit_base_patch8": ("vit_base_patch16_224", 8),
    "vit_pico": ("vit_pico", None),
    "vit_nano": ("vit_nano", None),
    "vit_micro": ("vit_micro", None),
    "vit_small_patch14_dinov2": ("vit_small_patch14_dinov2", 14),
    "vit_small_patch14_reg4_dinov2": ("vit_small_patch14_reg4_dinov2", 14),
    "vit_base_patch14_dinov2": ("vit_base_patch14_dinov2", 14),
    "vit_base_patch14_reg4_dinov2": ("vit_base_patch14_reg4_dinov2", 14),
}
"""Entry name: (``model.arch``, patch size; None for the custom sizes' own). Names ending in
``_224`` stand for their family at the entry's patch size; the others for themselves."""


def _backbone(entry: str, weights: str | Path | None, **kwargs: Any) -> Any:
    from patchdino.errors import InputError
    from patchdino.eval.common.backbone_loading import load_backbone
    from patchdino.models.backbone import create_backbone

    arch, patch = _ARCHS[entry]
    if weights is None:
        backbone = create_backbone(arch, patch, **kwargs)
        return backbone.model.eval()
    loaded = load_backbone(weights, **kwargs)
    found = loaded.config.model.arch
    family = arch if not arch.endswith("_224") else arch.rsplit("_patch", 1)[0] + "_patch"
    if not found.startswith(family) or (patch is not None and loaded.backbone.patch_size != patch):
        raise InputError(
            f"{weights} holds a {found} with patch {loaded.backbone.patch_size}, not a "
            f"{entry}; load it with the '{_entry_of(found, loaded.backbone.patch_size)}' entry"
        )
    return loaded.backbone.model


def _entry_of(arch: str, patch: int) -> str:
    for name, (entry_arch, entry_patch) in _ARCHS.items():
        if entry_arch == arch and (entry_patch is None or not arch.endswith("_224")):
            return name
        family = entry_arch.rsplit("_patch", 1)[0]
        if entry_arch.endswith("_224") and entry_patch == patch and arch.startswith(family):
            return name
    return "none"


def eval_transform(weights: str | Path, **kwargs: Any) -> Any:
    """The evaluation transform of ``weights`` (see :func:`patchdino.eval_transform`)."""
    from patchdino.api import eval_transform as make

    return make(weights, **kwargs)


def backbone(weights: str | Path, **kwargs: Any) -> Any:
    """The backbone of ``weights``, whatever its architecture."""
    from patchdino.eval.common.backbone_loading import load_backbone

    return load_backbone(weights, **kwargs).backbone.model


def vit_tiny_patch16(weights: str | Path | None = None, **kwargs: Any) -> Any:
    """ViT-Ti/16 (``vit_tiny_patch16_224``)."""
    return _backbone("vit_tiny_patch16", weights, **kwargs)


def vit_small_patch16(weights: str | Path | None = None, **kwargs: Any) -> Any:
    """ViT-S/16 (``vit_small_patch16_224``)."""
    return _backbone("vit_small_patch16", weights, **kwargs)


def vit_small_patch8(weights: str | Path | None = None, **kwargs: Any) -> Any:
    """ViT-S/8 (``vit_small_patch16_224`` with 8 px patches)."""
    return _backbone("vit_small_patch8", weights, **kwargs)


def vit_base_patch16(weights: str | Path | None = None, **kwargs: Any) -> Any:
    """ViT-B/16 (``vit_base_patch16_224``)."""
    return _backbone("vit_base_patch16", weights, **kwargs)


def vit_base_patch8(weights: str | Path | None = None, **kwargs: Any) -> Any:
    """ViT-B/8 (``vit_base_patch16_224`` with 8 px patches)."""
    return _backbone("vit_base_patch8", weights, **kwargs)


def vit_pico(weights: str | Path | None = None, **kwargs: Any) -> Any:
    """The custom ``vit_pico`` (embed 32, depth 2, 2 heads)."""
    return _backbone("vit_pico", weights, **kwargs)


def vit_nano(weights: str | Path | None = None, **kwargs: Any) -> Any:
    """The custom ``vit_nano`` (embed 64, depth 4, 4 heads)."""
    return _backbone("vit_nano", weights, **kwargs)


def vit_micro(weights: str | Path | None = None, **kwargs: Any) -> Any:
    """The custom ``vit_micro`` (embed 128, depth 6, 4 heads)."""
    return _backbone("vit_micro", weights, **kwargs)


def vit_small_patch14_dinov2(weights: str | Path | None = None, **kwargs: Any) -> Any:
    """DINOv2's ViT-S/14 (``vit_small_patch14_dinov2``, layer scale, 518 px)."""
    return _backbone("vit_small_patch14_dinov2", weights, **kwargs)


def vit_small_patch14_reg4_dinov2(weights: str | Path | None = None, **kwargs: Any) -> Any:
    """DINOv2's ViT-S/14 with 4 register tokens (``vit_small_patch14_reg4_dinov2``)."""
    return _backbone("vit_small_patch14_reg4_dinov2", weights, **kwargs)


def vit_base_patch14_dinov2(weights: str | Path | None = None, **kwargs: Any) -> Any:
    """DINOv2's ViT-B/14 (``vit_base_patch14_dinov2``)."""
    return _backbone("vit_base_patch14_dinov2", weights, **kwargs)


def vit_base_patch14_reg4_dinov2(weights: str | Path | None = None, **kwargs: Any) -> Any:
    """DINOv2's ViT-B/14 with 4 register tokens (``vit_base_patch14_reg4_dinov2``)."""
    return _backbone("vit_base_patch14_reg4_dinov2", weights, **kwargs)
