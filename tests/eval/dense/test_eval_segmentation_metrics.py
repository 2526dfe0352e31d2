"""Segmentation scores against scikit-learn on the same labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import jaccard_score

from patchdino.eval.dense.segmentation_metrics import confusion_matrix, segmentation_scores


def test_confusion_and_scores_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    k = 5
    target = rng.integers(0, k, (3, 17, 11))
    target[rng.random(target.shape) < 0.1] = 255
    prediction = np.where(
        rng.random(target.shape) < 0.6, target % k, rng.integers(0, k, target.shape)
    )
    prediction[target == 255] = rng.integers(0, k, int((target == 255).sum()))
    conf = confusion_matrix(torch.from_numpy(prediction), torch.from_numpy(target), k, 255)
    keep = target != 255
    expected = sk_confusion(target[keep], prediction[keep], labels=list(range(k)))
    assert conf.tolist() == expected.tolist()
    scores = segmentation_scores(conf)
    iou = jaccard_score(target[keep], prediction[keep], labels=list(range(k)), average=None)
    assert scores.iou == pytest.approx(100 * iou)
    assert scores.miou == pytest.approx(100 * iou.mean())
    assert scores.pixel_accuracy == pytest.approx(100 * (target[keep] == prediction[keep]).mean())


def test_absent_classes_leave_the_mean() -> None:
    target = torch.tensor([[0, 0, 1, 1]])
    prediction = torch.tensor([[0, 1, 1, 1]])
    scores = segmentation_scores(confusion_matrix(prediction, target, 4, 255))
    # class 0: 1 / 2, class 1: 2 / 3, classes 2 and 3 occur nowhere.
    assert scores.iou[:2] == pytest.approx([50.0, 200 / 3])
    assert math.isnan(scores.iou[2]) and math.isnan(scores.iou[3])
    assert scores.miou == pytest.approx((50.0 + 200 / 3) / 2)
    assert scores.pixel_accuracy == pytest.approx(75.0)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.tensor([3]), torch.tensor([0]), 3, 255)
    with pytest.raises(ValueError, match="prediction"):
        confusion_matrix(torch.zeros(2, 2), torch.zeros(2, 3), 3, 255)
