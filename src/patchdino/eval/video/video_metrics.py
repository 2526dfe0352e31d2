"""DAVIS measures of video object segmentation: region similarity J and boundary F-measure F.

For one object in one frame, with the predicted and true binary masks:

- **J** is the intersection over union of the two masks (1 when both are empty);
- **F** compares the masks' boundaries. A pixel is a boundary pixel when it differs from its
  right, lower or lower-right neighbour (neighbours beyond the image count as equal). A
  predicted boundary pixel is matched when a true boundary pixel lies within a disk of radius
  ``ceil(0.008 * diagonal)`` pixels around it, and conversely; precision and recall are the
  matched fractions and F their harmonic mean. Conventions for empty boundaries: none on
  either side gives F = 1, none on one side only gives F = 0.

A sequence is scored on every frame but the first (the annotated one, given to the method)
and the last, per object, as the DAVIS 2017 toolkit does; an object's J and F are their
means over those frames, and data-set means are over all objects of all sequences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

BOUNDARY_TOLERANCE = 0.008
"""Boundary match radius as a fraction of the image diagonal (DAVIS)."""


def region_similarity(pred: Tensor, true: Tensor) -> Tensor:
    """J: intersection over union of binary masks, 1 where both are empty.

    Args:
        pred: ``(..., H, W)`` bool masks.
        true: ``(..., H, W)`` bool masks.

    Returns:
        ``(...)`` float64 IoU.
    """
    inter = (pred & true).flatten(-2).sum(-1).double()
    union = (pred | true).flatten(-2).sum(-1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def boundary_map(masks: Tensor) -> Tensor:
    """Boundary pixels of binary masks.

    Args:
        masks: ``(..., H, W)`` bool.

    Returns:
        ``(..., H, W)`` bool: True where a pixel differs from its right, lower or lower-right
        neighbour; neighbours outside the image are taken equal to the pixel.
    """
    shape = masks.shape
    flat = masks.reshape(-1, 1, *shape[-2:]).float()
    padded = F.pad(flat, (0, 1, 0, 1), mode="replicate")  # (B, 1, H + 1, W + 1)
    right = padded[..., :-1, 1:]
    down = padded[..., 1:, :-1]
    diagonal = padded[..., 1:, 1:]
    edge = (flat != right) | (flat != down) | (flat != diagonal)
    return edge.reshape(shape)


def boundary_radius(height: int, width: int, tolerance: float = BOUNDARY_TOLERANCE) -> int:
    """Match radius in pixels: ``ceil(tolerance * diagonal)``, or ``tolerance`` itself if >= 1."""
    if tolerance >= 1:
        return int(tolerance)
    return math.ceil(tolerance * math.hypot(height, width))


def dilate(masks: Tensor, radius: int) -> Tensor:
    """Binary dilation by a disk ``{(dy, dx): dy^2 + dx^2 <= radius^2}``.

    Args:
        masks: ``(..., H, W)`` bool.
        radius: disk radius in pixels (0 leaves the masks unchanged).

    Returns:
        ``(..., H, W)`` bool.
    """
    if radius <= 0:
        return masks.clone()
    shape = masks.shape
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=masks.device)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).float()
    flat = masks.reshape(-1, 1, *shape[-2:]).float()
    counts = F.conv2d(flat, disk[None, None], padding=radius)  # (B, 1, H, W)
    return (counts > 0.5).reshape(shape)


def boundary_f_measure(pred: Tensor, true: Tensor, tolerance: float = BOUNDARY_TOLERANCE) -> Tensor:
    """F: boundary F-measure of binary masks (see the module documentation).

    Args:
        pred: ``(..., H, W)`` bool masks.
        true: ``(..., H, W)`` bool masks.
        tolerance: match radius as a fraction of the diagonal (pixels when >= 1).

    Returns:
        ``(...)`` float64 F-measure.
    """
    radius = boundary_radius(pred.shape[-2], pred.shape[-1], tolerance)
    pred_edge, true_edge = boundary_map(pred), boundary_map(true)
    n_pred = pred_edge.flatten(-2).sum(-1).double()
    n_true = true_edge.flatten(-2).sum(-1).double()
    pred_hit = (pred_edge & dilate(true_edge, radius)).flatten(-2).sum(-1).double()
    true_hit = (true_edge & dilate(pred_edge, radius)).flatten(-2).sum(-1).double()
    precision = torch.where(n_pred > 0, pred_hit / n_pred.clamp(min=1), (n_true == 0).double())
    recall = torch.where(n_true > 0, true_hit / n_true.clamp(min=1), (n_pred == 0).double())
    total = precision + recall
    return torch.where(
        total > 0, 2 * precision * recall / total.clamp(min=1e-12), torch.zeros_like(total)
    )


@dataclass(frozen=True)
class SequenceScores:
    """J and F of each object of one sequence.

    Attributes:
        objects: object ids, in order.
        j: per-object mean J over the scored frames.
        f: per-object mean F over the scored frames.
        frames: number of scored frames.
    """

    objects: tuple[int, ...]
    j: tuple[float, ...]
    f: tuple[float, ...]
    frames: int

    @property
    def j_mean(self) -> float:
        """Mean J over the objects."""
        return sum(self.j) / len(self.j) if self.j else float("nan")

    @property
    def f_mean(self) -> float:
        """Mean F over the objects."""
        return sum(self.f) / len(self.f) if self.f else float("nan")

    @property
    def jf_mean(self) -> float:
        """``(J mean + F mean) / 2``."""
        return (self.j_mean + self.f_mean) / 2


def scored_frames(num_frames: int) -> range:
    """Indices of the frames a sequence is scored on: all but the first and the last."""
    return range(1, max(1, num_frames - 1))


def frame_scores(
    pred: Tensor, true: Tensor, objects: Sequence[int], tolerance: float = BOUNDARY_TOLERANCE
) -> tuple[Tensor, Tensor]:
    """J and F of each object in one frame.

    Args:
        pred: ``(H, W)`` integer label map (0 = background).
        true: ``(H, W)`` integer label map.
        objects: ids of the ``K`` objects to score.
        tolerance: boundary match radius (see :func:`boundary_f_measure`).

    Returns:
        ``(K,)`` J and ``(K,)`` F, float64.

    Raises:
        ValueError: the label maps differ in shape or are not 2-D.
    """
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(
            f"prediction {tuple(pred.shape)} and ground truth {tuple(true.shape)} must be "
            "label maps (H, W) of one shape"
        )
    ids = torch.tensor(list(objects), dtype=pred.dtype, device=pred.device)
    pred_masks = pred[None] == ids[:, None, None]  # (K, H, W)
    true_masks = true.to(pred.dtype)[None] == ids[:, None, None]
    return region_similarity(pred_masks, true_masks), boundary_f_measure(
        pred_masks, true_masks, tolerance
    )


def summarise(
    objects: Sequence[int], j_rows: Sequence[Tensor], f_rows: Sequence[Tensor]
) -> SequenceScores:
    """Per-object means of per-frame scores.

    Args:
        objects: the ``K`` object ids.
        j_rows: one ``(K,)`` J tensor per scored frame.
        f_rows: one ``(K,)`` F tensor per scored frame.

    Returns:
        :class:`SequenceScores`; NaN means when no frame was scored.
    """
    if not j_rows:
        nans = (float("nan"),) * len(objects)
        return SequenceScores(tuple(objects), nans, nans, 0)
    j = torch.stack(list(j_rows)).mean(0)  # (K,)
    f = torch.stack(list(f_rows)).mean(0)
    return SequenceScores(tuple(objects), tuple(j.tolist()), tuple(f.tolist()), len(j_rows))


def score_sequence(
    pred: Tensor, true: Tensor, objects: Sequence[int], tolerance: float = BOUNDARY_TOLERANCE
) -> SequenceScores:
    """J and F of each object over the frames of a sequence that are scored.

    Args:
        pred: ``(T, H, W)`` integer label maps (0 = background), every frame of the sequence.
        true: ``(T, H, W)`` integer label maps.
        objects: ids of the objects to score.
        tolerance: boundary match radius (see :func:`boundary_f_measure`).

    Returns:
        :class:`SequenceScores`; with fewer than three frames nothing is scored and J and F
        are NaN.

    Raises:
        ValueError: shapes differ or are not ``(T, H, W)``.
    """
    if pred.shape != true.shape or pred.ndim != 3:
        raise ValueError(
            f"predictions {tuple(pred.shape)} and ground truth {tuple(true.shape)} must be "
            "label maps (T, H, W) of one shape"
        )
    rows = [frame_scores(pred[t], true[t], objects, tolerance) for t in scored_frames(len(pred))]
    return summarise(objects, [j for j, _ in rows], [f for _, f in rows])
