"""Self-attention maps of the CLS token in the last block, one per head (as in DINO's figures).

:func:`attention_maps` reads the last block's attention of a backbone;
:func:`attention_figure` draws each image next to its per-head maps, upsampled to the image,
with a colour bar; :func:`plot_attention` saves that figure as a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from patchdino.models.backbone import Backbone

matplotlib.use("Agg")
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLOUR_BAR_LABEL = "attention, scaled per map"
"""The colour bar's label: every map is scaled to its own range for display, from its least
attended patch (``min``) to its most attended one (``max``)."""

_BAR_INCHES = 0.7
"""Width kept right of the panels for the colour bar, its ticks and its label."""


@torch.no_grad()
def attention_maps(backbone: Backbone, images: Tensor) -> Tensor:
    """Attention of the CLS query to every patch in the last block, per head.

    Args:
        backbone: the network (its mode is left unchanged; use eval mode for figures).
        images: ``(N, C, H, W)`` normalised images; ``H`` and ``W`` multiples of the patch
            size ``p``.

    Returns:
        ``(N, heads, H / p, W / p)`` float32 maps on the device of ``images``; each head's
        map sums to one minus the CLS token's attention to itself and to the register
        tokens (if any).
    """
    attn = backbone.get_last_selfattention(images)  # (N, heads, P + n, P + n)
    p = backbone.patch_size
    rows, cols = images.shape[-2] // p, images.shape[-1] // p
    cls_to_patches = attn[:, :, 0, backbone.num_prefix_tokens :]  # (N, heads, n): no registers
    return cls_to_patches.float().reshape(images.shape[0], attn.shape[1], rows, cols)


def mass_masks(maps: Tensor, threshold: float) -> Tensor:
    """DINO's thresholded attention: per map, the fewest patches that hold ``threshold`` of its
    mass.

    Patches are taken in decreasing order of attention until their share of the map's total
    reaches ``threshold``; the patch that crosses it is kept.

    Args:
        maps: ``(N, heads, h, w)`` non-negative attention maps.
        threshold: share of the mass to keep, in ``(0, 1]``.

    Returns:
        ``(N, heads, h, w)`` float masks of 0 and 1.

    Raises:
        ValueError: ``threshold`` outside ``(0, 1]``.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    flat = maps.flatten(2).double()  # (N, heads, h w); float64 for the running shares
    values, order = flat.sort(dim=-1, descending=True)
    share = values.cumsum(-1) / values.sum(-1, keepdim=True).clamp_min(1e-12)
    before = share - values / values.sum(-1, keepdim=True).clamp_min(1e-12)
    keep_sorted = (before < threshold).double()  # the mass before this patch is not enough
    keep = torch.zeros_like(flat).scatter_(-1, order, keep_sorted)
    return keep.float().view_as(maps)


def attention_figure(
    images: Tensor,
    attentions: Tensor,
    titles: Sequence[str] | None = None,
    heads: int | None = None,
    show_mean: bool = True,
    cmap: str = "inferno",
    cell_inches: float = 1.6,
    overlay: bool = False,
    bar_label: str = COLOUR_BAR_LABEL,
    bar_ends: tuple[str, str] = ("min", "max"),
) -> Figure:
    """Draw each image next to its per-head CLS attention maps, with a colour bar.

    Every map is upsampled to the image (nearest neighbour, so each patch stays a square) and
    scaled to its own ``[min, max]`` for display; the colour bar on the right reads that
    scale (:data:`COLOUR_BAR_LABEL`).

    Args:
        images: ``(N, C, H, W)`` images, uint8 or float in ``[0, 1]``, ``C`` in (1, 3); the
            pictures shown (not the normalised network input).
        attentions: ``(N, heads, h, w)`` maps, e.g. from :func:`attention_maps`.
        titles: one label per image (row), or None.
        heads: draw only the first ``heads`` heads; None draws all.
        show_mean: add a column with the mean over the drawn heads.
        cmap: matplotlib colour map of the maps.
        cell_inches: size of one panel.
        overlay: draw each map over its image (semi-transparent) instead of alone.
        bar_label: the colour bar's label.
        bar_ends: the names of the colour bar's two ends (a map's lowest and highest value).

    Returns:
        The figure (``rows x columns`` panels and the colour bar's axes last); close it with
        ``matplotlib.pyplot.close`` when done.

    Raises:
        ValueError: on mismatched or malformed shapes.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got {tuple(images.shape)}")
    if attentions.ndim != 4 or attentions.shape[0] != images.shape[0]:
        raise ValueError(
            f"attentions must be (N, heads, h, w) with N = {images.shape[0]}, got "
            f"{tuple(attentions.shape)}"
        )
    if titles is not None and len(titles) != images.shape[0]:
        raise ValueError(f"got {len(titles)} titles for {images.shape[0]} images")
    num_heads = attentions.shape[1] if heads is None else min(heads, attentions.shape[1])
    if num_heads < 1:
        raise ValueError(f"heads must be at least 1, got {heads}")
    height, width = images.shape[-2:]
    maps = attentions[:, :num_heads].detach().float().cpu()  # (N, h', rows, cols)
    if show_mean:
        maps = torch.cat([maps, maps.mean(dim=1, keepdim=True)], dim=1)
    maps = F.interpolate(maps, size=(height, width), mode="nearest")  # (N, h', H, W)
    low = maps.amin(dim=(2, 3), keepdim=True)
    high = maps.amax(dim=(2, 3), keepdim=True)
    maps = (maps - low) / (high - low).clamp_min(1e-12)
    pictures = _pictures(images)

    num_rows, num_cols = images.shape[0], 1 + maps.shape[1]
    fig_width = cell_inches * num_cols + _BAR_INCHES  # the panels and the colour bar
    figure, axes = plt.subplots(
        num_rows,
        num_cols,
        figsize=(fig_width, cell_inches * num_rows),
        squeeze=False,
    )
    for row in range(num_rows):
        picture = pictures[row]
        axes[row, 0].imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
        if titles is not None:
            axes[row, 0].set_ylabel(titles[row], fontsize=8)
        for col in range(1, num_cols):
            ax = axes[row, col]
            if overlay:
                ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
            alpha = 0.6 if overlay else 1.0
            ax.imshow(maps[row, col - 1].numpy(), cmap=cmap, vmin=0, vmax=1, alpha=alpha)
    for col in range(num_cols):
        label = "image" if col == 0 else f"head {col}"
        if show_mean and col == num_cols - 1:
            label = "mean"
        axes[0, col].set_title(label, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    panels_right = 1.0 - _BAR_INCHES / fig_width
    figure.tight_layout(rect=(0.0, 0.0, panels_right, 1.0))
    scale = plt.cm.ScalarMappable(cmap=cmap, norm=matplotlib.colors.Normalize(vmin=0, vmax=1))
    bar_axes = figure.add_axes((panels_right + 0.1 / fig_width, 0.1, 0.1 / fig_width, 0.8))
    bar = figure.colorbar(scale, cax=bar_axes)
    bar.set_ticks([0.0, 1.0], labels=list(bar_ends))
    bar.set_label(bar_label, fontsize=7)
    bar.ax.tick_params(labelsize=7)
    return figure


def plot_attention(
    images: Tensor,
    attentions: Tensor,
    path: str | Path,
    titles: Sequence[str] | None = None,
    heads: int | None = None,
    show_mean: bool = True,
    cmap: str = "inferno",
    cell_inches: float = 1.6,
    overlay: bool = False,
    bar_label: str = COLOUR_BAR_LABEL,
    bar_ends: tuple[str, str] = ("min", "max"),
) -> Path:
    """Save :func:`attention_figure` of the same arguments as a PNG at ``path`` (its folder
    is created) and return ``path``.

    Raises:
        ValueError: as :func:`attention_figure`.
    """
    figure = attention_figure(
        images,
        attentions,
        titles,
        heads,
        show_mean,
        cmap,
        cell_inches,
        overlay,
        bar_label,
        bar_ends,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _pictures(images: Tensor) -> list[np.ndarray]:
    """``(N, C, H, W)`` images as ``(H, W)`` or ``(H, W, 3)`` float arrays in ``[0, 1]``."""
    pixels = images.detach().cpu()
    pixels = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels.float()
    pixels = pixels.clamp(0.0, 1.0)
    if pixels.shape[1] == 1:
        return [p[0].numpy() for p in pixels]
    return [p.permute(1, 2, 0).numpy() for p in pixels]
