"""Evaluation of frozen features, one subpackage per task.

- :mod:`~patchdino.eval.common`: what every task shares (weights, data, transform, feature
  extraction, the command line's pipeline, exports, the raw-pixel baseline);
- :mod:`~patchdino.eval.classification`: weighted k-NN and linear probes;
- :mod:`~patchdino.eval.dense`: semantic segmentation probes;
- :mod:`~patchdino.eval.video`: video object segmentation by label propagation;
- :mod:`~patchdino.eval.retrieval`: image retrieval and copy detection.

A task imports :mod:`~patchdino.eval.common` and no other task. Each package's ``options``
module (pure Python) holds the allowed values and defaults its command shows, so that
``--help`` imports no torch. The names below are re-exported lazily (on first use) for the
same reason.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from patchdino.eval.classification.knn import KNNResult, knn_classify
    from patchdino.eval.classification.linear import (
        LinearProbe,
        LinearResult,
        MultiBlockFeatures,
        multiblock_features,
        train_linear_probe,
    )
    from patchdino.eval.common.features import all_gather_uneven, extract_features, token_features
    from patchdino.eval.common.pixels import pixel_features, pixel_statistics

_WHERE = {
    "all_gather_uneven": "common.features",
    "extract_features": "common.features",
    "token_features": "common.features",
    "pixel_features": "common.pixels",
    "pixel_statistics": "common.pixels",
    "KNNResult": "classification.knn",
    "knn_classify": "classification.knn",
    "LinearProbe": "classification.linear",
    "LinearResult": "classification.linear",
    "MultiBlockFeatures": "classification.linear",
    "multiblock_features": "classification.linear",
    "train_linear_probe": "classification.linear",
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
