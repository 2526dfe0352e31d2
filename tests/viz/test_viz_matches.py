"""The matched-patches figure: outlines over visible pixels, left-out patches marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import patchdino.viz.matches as matches_module
from patchdino.viz.matches import ViewPicture, plot_matches


def _views() -> list[ViewPicture]:
    """A 4 x 4-patch global view of the whole 64 x 64 source and a 2 x 2-patch local view."""
    grey = np.full((32, 32, 3), 128, dtype=np.uint8)
    whole = ViewPicture("global1", grey, (0.0, 0.0, 64.0, 64.0), False, 8)
    corner = ViewPicture("local1", grey[:16, :16], (0.0, 0.0, 32.0, 32.0), True, 8)
    return [whole, corner]


def test_left_out_patches_are_those_of_the_overlap_without_a_partner() -> None:
    whole, corner = _views()
    # the corner covers the top-left 2 x 2 patches of the global view: 0, 1, 4, 5
    assert matches_module._left_out(whole, [corner], {0, 5}) == [1, 4]
    assert matches_module._left_out(corner, [whole], {0, 1, 2, 3}) == []


def test_figure_keeps_the_pixels_visible_and_crosses_left_out_patches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crossed: list[tuple[str, int]] = []
    cross = matches_module._cross

    def record(ax: object, view: ViewPicture, index: int) -> None:
        crossed.append((view.name, index))
        cross(ax, view, index)  # type: ignore[arg-type]

    monkeypatch.setattr(matches_module, "_cross", record)
    source = np.full((64, 64, 3), 128, dtype=np.uint8)
    path = plot_matches(source, _views(), {(0, 1): [(0, 1), (5, 2)]}, tmp_path / "m.png", 1)
    assert sorted(crossed) == [("global1", 1), ("global1", 4), ("local1", 0), ("local1", 3)]
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    # the grey images stay visible under the outlines
    grey = (np.abs(pixels - 128).max(axis=2) <= 2).sum()
    assert grey > 0.05 * pixels.shape[0] * pixels.shape[1]
