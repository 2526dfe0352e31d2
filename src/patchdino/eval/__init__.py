"""Evaluation of frozen features: extraction, weighted k-NN, linear probe and the dense tasks.

The names below are re-exported lazily (on first use), so that importing a light module of
this package (:mod:`patchdino.eval.options`, what the command line needs to build its
options) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from patchdino.eval.features import all_gather_uneven, extract_features, token_features
    from patchdino.eval.knn import KNNResult, knn_classify, pixel_features, pixel_statistics
    from patchdino.eval.linear import (
        LinearProbe,
        LinearResult,
        MultiBlockFeatures,
        multiblock_features,
        train_linear_probe,
    )

_WHERE = {
    "all_gather_uneven": "features",
    "extract_features": "features",
    "token_features": "features",
    "KNNResult": "knn",
    "knn_classify": "knn",
    "pixel_features": "knn",
    "pixel_statistics": "knn",
    "LinearProbe": "linear",
    "LinearResult": "linear",
    "MultiBlockFeatures": "linear",
    "multiblock_features": "linear",
    "train_linear_probe": "linear",
}
"""Module of this package that defines each re-exported name."""

__all__ = [
    "KNNResult",
    "LinearProbe",
    "LinearResult",
    "MultiBlockFeatures",
    "all_gather_uneven",
    "extract_features",
    "knn_classify",
    "multiblock_features",
    "pixel_features",
    "pixel_statistics",
    "token_features",
    "train_linear_probe",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
