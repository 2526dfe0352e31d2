"""Figure of matched patches between augmented views of one image.

Every matched patch is outlined with a colour that encodes where its partner in the global
view lies in the source image (hue runs left to right, brightness top to bottom), so two
patches with the same colour show the same place of the source, whichever view they are in.
Outlines keep the pixels visible. Patches inside the overlap of two views that take part in
no pair (grid mode pairs the two overlapping sub-grids one to one and thins the denser one;
nearest mode drops pairs beyond its threshold) are crossed out, so that they read as
left out rather than as mistakes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import patheffects
from matplotlib.colors import hsv_to_rgb
from matplotlib.lines import Line2D
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

    def covers(self, y: float, x: float) -> bool:
        """Whether the source point ``(y, x)`` lies inside this view's box."""
        top, left, height, width = self.box
        return top <= y < top + height and left <= x < left + width


LEFT_OUT = (1.0, 1.0, 1.0)
"""Colour of the crosses on overlapping patches that have no partner (outlined in black)."""


def _colour(y: float, x: float, height: int, width: int) -> np.ndarray:
    hue = 0.85 * min(max(x / max(width, 1), 0.0), 1.0)
    value = 0.55 + 0.45 * (1.0 - min(max(y / max(height, 1), 0.0), 1.0))
    return np.asarray(hsv_to_rgb((hue, 0.9, value)))


def _show(ax: plt.Axes, pixels: np.ndarray, title: str) -> None:
    image = pixels if pixels.dtype == np.uint8 else np.clip(pixels, 0.0, 1.0)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def _paint(ax: plt.Axes, view: ViewPicture, index: int, colour: np.ndarray) -> None:
    """Outline patch ``index`` (inset by one pixel, so neighbours keep separate outlines)."""
    row, col = divmod(index, view.grid)
    p = view.patch_size
    inset = min(1.0, p / 8)
    ax.add_patch(
        Rectangle(
            (col * p - 0.5 + inset, row * p - 0.5 + inset),
            p - 2 * inset,
            p - 2 * inset,
            facecolor=(*colour, 0.12),
            edgecolor=(*colour, 1.0),
            linewidth=1.3,
        )
    )


def _cross(ax: plt.Axes, view: ViewPicture, index: int) -> None:
    """Mark patch ``index`` as inside an overlap but in no pair."""
    row, col = divmod(index, view.grid)
    p = view.patch_size
    x0, y0, x1, y1 = col * p + p / 4, row * p + p / 4, (col + 1) * p - p / 4, (row + 1) * p - p / 4
    for xs, ys in (((x0, x1), (y0, y1)), ((x0, x1), (y1, y0))):
        ax.plot(
            np.subtract(xs, 0.5),
            np.subtract(ys, 0.5),
            color=LEFT_OUT,
            linewidth=1.2,
            path_effects=[patheffects.withStroke(linewidth=2.4, foreground="black")],
        )


def _left_out(view: ViewPicture, others: Sequence[ViewPicture], paired: set[int]) -> list[int]:
    """Patches of ``view`` whose centre lies inside one of ``others`` but not in ``paired``."""
    left = []
    for index in range(view.grid**2):
        if index in paired:
            continue
        y, x = view.source_centre(index)
        if any(other.covers(y, x) for other in others):
            left.append(index)
    return left


def _draw_boxes(ax: plt.Axes, views: Sequence[ViewPicture]) -> None:
    """Each view's box on the source, named in a legend beside it (labels never overlap)."""
    handles = []
    for k, view in enumerate(views):
        top, left, box_h, box_w = view.box
        colour = plt.get_cmap("tab10")(k % 10)
        style: Literal["-", "--"] = "-" if k < 10 else "--"  # tab10 has 10 colours
        ax.add_patch(
            Rectangle(
                (left - 0.5, top - 0.5),
                box_w,
                box_h,
                fill=False,
                edgecolor=colour,
                linewidth=1.6,
                linestyle=style,
            )
        )
        label = view.name + (" (flipped)" if view.flipped else "")
        handles.append(Line2D([], [], color=colour, linewidth=2.0, linestyle=style, label=label))
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        frameon=False,
        title="view boxes",
        title_fontsize=8,
    )


def plot_matches(
    source: np.ndarray,
    views: Sequence[ViewPicture],
    pairs: dict[tuple[int, int], list[tuple[int, int]]],
    path: str | Path,
    num_global: int = 2,
    mode: str = "grid",
) -> Path:
    """Draw the source with every view's box, then, per global view, its matches.

    The source spans the top of the figure; below it one row per global view shows that
    view (the teacher side: its patches paired with any view) and every other view with the
    patches paired with it. Overlapping patches without a partner are crossed out.

    Args:
        source: ``(H, W, C)`` source image.
        views: the views, globals first.
        pairs: ``(i, j) -> [(patch in view i, patch in view j), ...]`` for global ``i``.
        path: PNG file to write.
        num_global: how many of ``views`` are global views.
        mode: the matching mode (``"grid"`` or ``"nearest"``), named in the key.

    Returns:
        ``path``.
    """
    height, width = source.shape[:2]
    columns = max(len(views), 4)
    rows = 1 + num_global
    top_ratio = 3.0
    fig = plt.figure(figsize=(2.0 * columns, 2.2 * (num_global + top_ratio) + 0.8))
    grid = fig.add_gridspec(rows, columns, height_ratios=[top_ratio] + [1.0] * num_global)
    ax_source = fig.add_subplot(grid[0, :])
    _show(ax_source, source, f"source, {width} x {height} px, with the box of every view")
    ax_source.title.set_fontsize(10)
    _draw_boxes(ax_source, views)
    why = "the grid pairs overlapping sub-grids one to one, thinning the denser one"
    if mode == "nearest":
        why = "no patch centre of the other view lies within the threshold"
    for i in range(num_global):
        teacher = views[i]
        for j, view in enumerate(views):
            ax = fig.add_subplot(grid[1 + i, j])
            if j == i:
                paired = {a for (gi, _), plist in pairs.items() if gi == i for a, _ in plist}
                others = [v for k, v in enumerate(views) if k != i and (i, k) in pairs]
                left = _left_out(view, others, paired)
                _show(ax, view.pixels, f"{view.name} (teacher)\n{len(left)} left out")
                for a in paired:
                    _paint(ax, view, a, _colour(*view.source_centre(a), height, width))
                for a in left:
                    _cross(ax, view, a)
                continue
            plist = pairs.get((i, j), [])
            paired_b = {b for _, b in plist}
            left = _left_out(view, [teacher], paired_b)
            title = f"{view.name}: {len(plist)} pairs with {teacher.name}"
            _show(ax, view.pixels, title + (f"\n{len(left)} left out" if left else "\n"))
            for a, b in plist:
                _paint(ax, view, b, _colour(*teacher.source_centre(a), height, width))
            for b in left:
                _cross(ax, view, b)
    fig.suptitle(
        f"Matched patches ({mode} mode): outlines of one colour show the same place of the "
        f"source\ncrossed: patches inside the overlap left out of the pairs ({why})",
        fontsize=10,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
