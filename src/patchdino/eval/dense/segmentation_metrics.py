"""Scores of semantic segmentation: confusion matrix, per-class IoU, mIoU, pixel accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def confusion_matrix(prediction: Tensor, target: Tensor, num_classes: int, ignore: int) -> Tensor:
    """Counts of (true class, predicted class) over the pixels whose target is not ignored.

    Args:
        prediction: predicted classes in ``[0, K)``, any shape.
        target: true classes in ``[0, K)`` or ``ignore``, the same shape.
        num_classes: ``K``.
        ignore: target value of pixels left out.

    Returns:
        ``(K, K)`` int64 matrix on the CPU, rows the true class, columns the prediction.

    Raises:
        ValueError: shapes differ, or a class index is outside ``[0, K)``.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)}")
    keep = target != ignore
    truth = target[keep].long().cpu()
    pred = prediction[keep].long().cpu()
    for name, values in (("target", truth), ("prediction", pred)):
        if values.numel() and (int(values.min()) < 0 or int(values.max()) >= num_classes):
            raise ValueError(f"{name} holds classes outside [0, {num_classes})")
    counts = torch.bincount(truth * num_classes + pred, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


@dataclass(frozen=True)
class SegmentationScores:
    """Scores of a confusion matrix, in percent.

    Attributes:
        miou: mean IoU over the classes that occur in the targets or the predictions.
        pixel_accuracy: share of the counted pixels that are predicted right.
        iou: IoU per class, NaN for a class absent from both targets and predictions.
    """

    miou: float
    pixel_accuracy: float
    iou: list[float]


def segmentation_scores(confusion: Tensor) -> SegmentationScores:
    """mIoU, pixel accuracy and per-class IoU of a ``(K, K)`` confusion matrix.

    The IoU of class ``c`` is ``TP / (TP + FP + FN)``; classes with an empty union are left out
    of the mean (as mmsegmentation's ``nanmean``).
    """
    conf = confusion.double()
    true_positive = conf.diagonal()  # (K,)
    union = conf.sum(0) + conf.sum(1) - true_positive  # (K,)
    iou = torch.where(union > 0, true_positive / union.clamp_min(1), torch.nan)
    total = conf.sum()
    accuracy = float(true_positive.sum() / total) if total > 0 else float("nan")
    present = iou[~iou.isnan()]
    miou = float(present.mean()) if present.numel() else float("nan")
    return SegmentationScores(100.0 * miou, 100.0 * accuracy, (100.0 * iou).tolist())
