"""Semi-supervised video object segmentation by label propagation over patch features.

DINO's protocol: the first frame's object masks are given; every later frame takes its labels
from the patches of a few context frames, namely the first frame and the ``n`` frames before
it (a queue of their propagated soft labels). For a target patch ``i`` and a context patch
``j`` (of any context frame) the affinity is ``exp(<f_i, f_j> / T)`` between L2-normalised
patch features; context patches farther than ``r`` patches from ``i`` along either axis (a
square neighbourhood) are left out, only the ``k`` highest affinities over all context
frames are kept, normalised to sum to one, and the target's soft labels are the weighted sum
of the context patches' labels.

Defaults are the published settings: ``n = 7``, ``k = 5``, ``r = 12`` and ``T = 0.7``. (The
reference script exponentiates with a fixed ``T = 0.1`` whatever its temperature option says;
pass ``temperature=0.1`` to match its numbers.)

Soft labels live at patch resolution, ``(C, h, w)`` with ``C`` = background + objects. The
first frame's labels are its mask sampled at patch centres, as one-hot vectors. A frame's
final mask is its soft labels, each channel rescaled to [0, 1], upsampled bilinearly to the
frame size and reduced by argmax (:func:`labels_to_mask`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class PropagationSettings:
    """Hyper-parameters of label propagation.

    Attributes:
        n_last_frames: previous frames kept as context besides the first frame.
        topk: context patches each target patch takes its label from.
        neighbourhood: radius in patches of the square window of context patches considered
            around each target patch; 0 or less considers every patch.
        temperature: affinity temperature ``T``.
        chunk: target patches processed at once (bounds memory, not results).
    """

    n_last_frames: int = 7
    topk: int = 5
    neighbourhood: int = 12
    temperature: float = 0.7
    chunk: int = 1024

    def __post_init__(self) -> None:
        if self.n_last_frames < 0:
            raise ValueError(f"n_last_frames must be >= 0, got {self.n_last_frames}")
        if self.topk < 1:
            raise ValueError(f"topk must be >= 1, got {self.topk}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")


def patch_grid(height: int, width: int, patch: int) -> tuple[int, int]:
    """Patch rows and columns of a ``height x width`` input (sides multiples of ``patch``)."""
    if height % patch or width % patch:
        raise ValueError(f"size {height}x{width} is not a multiple of the patch size {patch}")
    return height // patch, width // patch


def sample_mask(mask: Tensor, grid: tuple[int, int]) -> Tensor:
    """A label map sampled at the centres of a coarser grid (nearest neighbour).

    Args:
        mask: ``(H, W)`` integer labels.
        grid: ``(h, w)`` cells; cell ``(i, j)`` takes the label at pixel
            ``(floor((i + 1/2) H / h), floor((j + 1/2) W / w))``.

    Returns:
        ``(h, w)`` labels, the dtype of ``mask``.
    """
    height, width = mask.shape
    h, w = grid
    rows = ((torch.arange(h, device=mask.device) * 2 + 1) * height) // (2 * h)
    cols = ((torch.arange(w, device=mask.device) * 2 + 1) * width) // (2 * w)
    return mask[rows][:, cols]


def one_hot_labels(labels: Tensor, num_labels: int) -> Tensor:
    """``(h, w)`` integer labels in ``[0, num_labels)`` to ``(num_labels, h, w)`` float one-hot."""
    return F.one_hot(labels.long(), num_labels).permute(2, 0, 1).float()


def neighbourhood_mask(rows: Tensor, grid: tuple[int, int], radius: int) -> Tensor:
    """Which patches lie in the square window of radius ``radius`` around some target patches.

    Args:
        rows: ``(M,)`` flat (row-major) indices of target patches.
        grid: ``(h, w)`` patch grid.
        radius: window radius in patches.

    Returns:
        ``(M, h * w)`` bool: True where ``|dy| <= radius`` and ``|dx| <= radius``.
    """
    h, w = grid
    every = torch.arange(h * w, device=rows.device)
    dy = (rows[:, None] // w - every[None, :] // w).abs()
    dx = (rows[:, None] % w - every[None, :] % w).abs()
    return (dy <= radius) & (dx <= radius)


def propagate_labels(
    target: Tensor,
    context_features: Tensor,
    context_labels: Tensor,
    grid: tuple[int, int],
    settings: PropagationSettings,
) -> Tensor:
    """Soft labels of one frame from its context frames.

    Args:
        target: ``(N, D)`` L2-normalised patch features of the frame, ``N = h * w``.
        context_features: ``(M, N, D)`` L2-normalised patch features of ``M`` context frames.
        context_labels: ``(M, C, h, w)`` soft labels of the context frames.
        grid: ``(h, w)``.
        settings: hyper-parameters.

    Returns:
        ``(C, h, w)`` soft labels, each patch's summing to the sum of its sources' (1 for
        one-hot or propagated labels).
    """
    m, n, d = context_features.shape
    c = context_labels.shape[1]
    keys = context_features.reshape(m * n, d)  # (M N, D)
    values = context_labels.reshape(m, c, n).transpose(1, 2).reshape(m * n, c)  # (M N, C)
    k = min(settings.topk, m * n)
    out = torch.empty(n, c, dtype=values.dtype, device=values.device)
    for start in range(0, n, settings.chunk):
        rows = torch.arange(start, min(n, start + settings.chunk), device=target.device)
        logits = (target[rows] @ keys.T) / settings.temperature  # (B, M N)
        if settings.neighbourhood > 0:
            near = neighbourhood_mask(rows, grid, settings.neighbourhood)  # (B, N)
            logits = logits.masked_fill(~near.repeat(1, m), float("-inf"))
        top, index = logits.topk(k, dim=1)  # (B, k)
        weights = top.softmax(dim=1).to(values.dtype)  # (B, k)
        out[rows] = (weights[..., None] * values[index]).sum(1)  # (B, C)
    return out.T.reshape(c, *grid)


def propagate_sequence(
    features: Iterable[Tensor],
    first_labels: Tensor,
    grid: tuple[int, int],
    settings: PropagationSettings | None = None,
) -> Iterator[Tensor]:
    """Soft labels of every frame after the first.

    Args:
        features: ``(N, D)`` L2-normalised patch features of each frame, first frame first
            (consumed lazily).
        first_labels: ``(C, h, w)`` soft labels of the first frame (one-hot of its mask).
        grid: ``(h, w)``, ``N = h * w``.
        settings: hyper-parameters (defaults when None).

    Yields:
        ``(C, h, w)`` soft labels of frames 1, 2, ... in order.
    """
    settings = PropagationSettings() if settings is None else settings
    frames = iter(features)
    first = next(frames, None)
    if first is None:
        return
    queue: deque[tuple[Tensor, Tensor]] = deque(maxlen=settings.n_last_frames)
    for current in frames:
        context_features = torch.stack([first, *(f for f, _ in queue)])  # (M, N, D)
        context_labels = torch.stack([first_labels, *(s for _, s in queue)])  # (M, C, h, w)
        labels = propagate_labels(current, context_features, context_labels, grid, settings)
        queue.append((current, labels))
        yield labels


def labels_to_mask(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """Final label map of soft labels: channel-wise min-max scaling, bilinear upsampling, argmax.

    Args:
        labels: ``(C, h, w)`` soft labels.
        size: ``(H, W)`` output size.

    Returns:
        ``(H, W)`` long labels in ``[0, C)``.
    """
    low = labels.amin(dim=(1, 2), keepdim=True)
    high = labels.amax(dim=(1, 2), keepdim=True)
    scaled = torch.where(high > 0, (labels - low) / (high - low).clamp(min=1e-12), labels)
    up = F.interpolate(scaled[None], size=size, mode="bilinear", align_corners=False)[0]
    return up.argmax(dim=0)
