"""CLS attention maps of the last block and their figure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from patchdino.models import create_backbone
from patchdino.viz.attention import (
    COLOUR_BAR_LABEL,
    attention_figure,
    attention_maps,
    plot_attention,
)


@pytest.fixture(scope="module")
def backbone() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_backbone("vit_pico", 4, img_size=16, in_chans=3).eval()


def test_maps_are_the_cls_row_of_the_last_attention(backbone: torch.nn.Module) -> None:
    images = torch.randn(2, 3, 16, 8)
    maps = attention_maps(backbone, images)
    assert maps.shape == (2, 2, 4, 2)  # 2 heads, a 4 x 2 patch grid
    with torch.no_grad():
        attn = backbone.get_last_selfattention(images)  # (2, 2, 9, 9)
    for r in range(4):
        for c in range(2):
            torch.testing.assert_close(maps[:, :, r, c], attn[:, :, 0, 1 + r * 2 + c])
    torch.testing.assert_close(maps.sum(dim=(2, 3)), 1 - attn[:, :, 0, 0])


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_png_is_written(backbone: torch.nn.Module, tmp_path: Path, dtype: torch.dtype) -> None:
    pictures = torch.rand(3, 3, 16, 16)
    if dtype == torch.uint8:
        pictures = (pictures * 255).to(torch.uint8)
    maps = attention_maps(backbone, torch.randn(3, 3, 16, 16))
    path = plot_attention(
        pictures, maps, tmp_path / "fig" / "attention.png", titles=["a", "b", "c"]
    )
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width > height  # 3 rows of 1 image + 2 heads + the mean


def test_figure_has_a_colour_bar_of_the_per_map_scale() -> None:
    import matplotlib.pyplot as plt

    maps = torch.rand(2, 3, 2, 2)
    figure = attention_figure(torch.rand(2, 3, 8, 8), maps, heads=2)
    try:
        panels, bar = figure.axes[:-1], figure.axes[-1]
        assert len(panels) == 2 * (1 + 2 + 1)  # image, 2 heads, mean per row
        assert bar.get_ylabel() == COLOUR_BAR_LABEL
        assert [t.get_text() for t in bar.get_yticklabels()] == ["min", "max"]
        shown = panels[1].get_images()[0].get_array()
        assert float(shown.min()) == 0.0 and float(shown.max()) == 1.0  # the bar's range
    finally:
        plt.close(figure)


def test_grayscale_and_head_subset(tmp_path: Path) -> None:
    maps = torch.rand(1, 4, 2, 2)
    path = plot_attention(torch.rand(1, 1, 8, 8), maps, tmp_path / "a.png", heads=1)
    assert path.is_file()


def test_shape_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="N = 2"):
        plot_attention(torch.rand(2, 3, 8, 8), torch.rand(3, 2, 2, 2), tmp_path / "x.png")
    with pytest.raises(ValueError, match="images must be"):
        plot_attention(torch.rand(2, 8, 8), torch.rand(2, 2, 2, 2), tmp_path / "x.png")


def _slow_mass(values: list[float], threshold: float) -> list[float]:
    """Patches by decreasing attention until their share reaches the threshold."""
    total = sum(values)
    kept = [0.0] * len(values)
    mass = 0.0
    for index in sorted(range(len(values)), key=lambda i: -values[i]):
        if mass / total >= threshold:
            break
        kept[index] = 1.0
        mass += values[index]
    return kept


def test_mass_masks_match_a_plain_loop() -> None:
    from patchdino.viz.attention import mass_masks

    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 3, 4, 5, generator=generator) ** 3
    for threshold in (0.1, 0.6, 0.95, 1.0):
        masks = mass_masks(maps, threshold)
        for n in range(2):
            for h in range(3):
                expected = _slow_mass(maps[n, h].flatten().tolist(), threshold)
                assert masks[n, h].flatten().tolist() == expected
    peaked = torch.zeros(1, 1, 2, 2)
    peaked[0, 0, 1, 0] = 1.0
    assert mass_masks(peaked, 0.6).flatten().tolist() == [0.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="threshold"):
        mass_masks(maps, 0.0)
