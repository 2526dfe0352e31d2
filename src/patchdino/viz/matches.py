"""Figure of matched patches between augmented views of one image.

Every matched patch is painted with a colour that encodes where its partner in the global
view lies in the source image (hue runs left to right, brightness top to bottom), so two
patches with the same colour show the same place of the source, whichever view they are in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.colors import hsv_to_rgb
from matplotlib.patches import Rectangle


@dataclass(frozen=True)
class ViewPicture:
    """One view to draw.

    Attributes:
        name: label such as ``global1`` or ``local3``.
        pixels: ``(S, S, C)`` uint8 or float in [0, 1], C = 1 or 3.
        box: ``(top, left, height, width)`` in source pixels.
        flipped: whether the view is mirrored.
        patch_size: ViT patch side in view pixels.
    """

    name: str
    pixels: np.ndarray
    box: tuple[float, float, float, float]
    flipped: bool
    patch_size: int

    @property
    def grid(self) -> int:
        return int(self.pixels.shape[0]) // self.patch_size

    def source_centre(self, index: int) -> tuple[float, float]:
        """Source ``(y, x)`` of the centre of patch ``index`` (flip-aware)."""
        n = self.grid
        row, col = divmod(index, n)
        if self.flipped:
            col = n - 1 - col
        top, left, height, width = self.box
        return top + (row + 0.5) * height / n, left + (col + 0.5) * width / n


def _colour(y: float, x: float, height: int, width: int) -> np.ndarray:
    hue = 0.85 * min(max(x / max(width, 1), 0.0), 1.0)
    value = 0.55 + 0.45 * (1.0 - min(max(y / max(height, 1), 0.0), 1.0))
    return np.asarray(hsv_to_rgb((hue, 0.9, value)))


def _show(ax: plt.Axes, pixels: np.ndarray, title: str) -> None:
    image = pixels if pixels.dtype == np.uint8 else np.clip(pixels, 0.0, 1.0)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _paint(ax: plt.Axes, view: ViewPicture, index: int, colour: np.ndarray) -> None:
    row, col = divmod(index, view.grid)
    p = view.patch_size
    ax.add_patch(
        Rectangle(
            (col * p, row * p),
            p,
            p,
            facecolor=(*colour, 0.45),
            edgecolor=(*colour, 1.0),
            linewidth=0.8,
        )
    )


def plot_matches(
    source: np.ndarray,
    views: Sequence[ViewPicture],
    pairs: dict[tuple[int, int], list[tuple[int, int]]],
    path: str | Path,
    num_global: int = 2,
) -> Path:
    """Draw the source with every view's box, then, per global view, its matches.

    Args:
        source: ``(H, W, C)`` source image.
        views: the views, globals first.
        pairs: ``(i, j) -> [(patch in view i, patch in view j), ...]`` for global ``i``.
        path: PNG file to write.
        num_global: how many of ``views`` are global views.

    Returns:
        ``path``.
    """
    height, width = source.shape[:2]
    columns = len(views)
    rows = 1 + num_global
    fig = plt.figure(figsize=(2.0 * columns, 2.2 * rows + 1.5))
    grid = fig.add_gridspec(rows, columns, height_ratios=[1.6] + [1.0] * num_global)
    ax_source = fig.add_subplot(grid[0, :])
    _show(ax_source, source, f"source {height}x{width} with view boxes")
    for k, view in enumerate(views):
        top, left, box_h, box_w = view.box
        colour = plt.get_cmap("tab10")(k % 10)
        ax_source.add_patch(
            Rectangle((left, top), box_w, box_h, fill=False, edgecolor=colour, linewidth=1.5)
        )
        ax_source.text(
            left + 2,
            top + 2,
            view.name + (" (flip)" if view.flipped else ""),
            color="white",
            fontsize=7,
            va="top",
            bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "linewidth": 0},
        )
    for i in range(num_global):
        for j, view in enumerate(views):
            ax = fig.add_subplot(grid[1 + i, j])
            if j == i:
                _show(ax, view.pixels, f"{view.name} (teacher)")
                matched = {a for (gi, _), plist in pairs.items() if gi == i for a, _ in plist}
                for a in matched:
                    _paint(ax, view, a, _colour(*view.source_centre(a), height, width))
                continue
            plist = pairs.get((i, j), [])
            _show(ax, view.pixels, f"{view.name}: {len(plist)} pairs with {views[i].name}")
            for a, b in plist:
                _paint(ax, view, b, _colour(*views[i].source_centre(a), height, width))
    fig.suptitle("Matched patches: equal colours mark the same source location", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
