"""patchdino: local-global self-distillation for Vision Transformers.

DINO extended with a patch-level loss between corresponding patches of different augmented
views, found by geometric patch matching (arXiv 2310.18651).

The names a notebook needs are importable from here (see :mod:`patchdino.api`):
:func:`load_backbone`, :func:`eval_transform`, :func:`extract_features` and
:func:`match_views`. They are imported on first use, so ``import patchdino`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "EvalTransform",
    "LoadedBackbone",
    "ViewMatches",
    "__version__",
    "eval_transform",
    "extract_features",
    "load_backbone",
    "match_views",
]

if TYPE_CHECKING:
    from patchdino.api import (
        EvalTransform,
        LoadedBackbone,
        ViewMatches,
        eval_transform,
        extract_features,
        load_backbone,
        match_views,
    )


def __getattr__(name: str) -> Any:
    """Import the API of :mod:`patchdino.api` on first access."""
    if name in __all__ and name != "__version__":
        from patchdino import api

        return getattr(api, name)
    raise AttributeError(f"module 'patchdino' has no attribute {name!r}")
