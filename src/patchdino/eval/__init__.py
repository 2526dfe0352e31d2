"""Evaluation of frozen features: extraction, weighted k-NN and linear probe."""

from patchdino.eval.features import all_gather_uneven, extract_features, token_features
from patchdino.eval.knn import KNNResult, knn_classify, pixel_features, pixel_statistics
from patchdino.eval.linear import (
    LinearProbe,
    LinearResult,
    MultiBlockFeatures,
    multiblock_features,
    train_linear_probe,
)

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
