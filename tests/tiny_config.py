"""The tiny ViT config of the evaluation tests: a 2-block, 32-wide ViT on 16 px images."""

from __future__ import annotations

from pathlib import Path

TINY_YAML = """\
model: {arch: vit_pico, patch_size: 4, out_dim: 16, patch_out_dim: 16, hidden_dim: 16,
        bottleneck_dim: 8}
views: {global_size: 16, local_size: 8, num_local: 2}
"""

TINY_BENCH_OVERRIDES = [
    "model.arch=vit_pico",
    "model.patch_size=4",
    "views.global_size=16",
    "views.local_size=8",
    "views.num_local=2",
    "model.out_dim=32",
    "model.hidden_dim=16",
    "model.bottleneck_dim=8",
    "optim.batch_size=2",
]
"""A tiny model and views as ``key=value`` overrides, at 2 images per step (bench cases)."""


def write_tiny_config(folder: Path) -> Path:
    """``folder/tiny.yaml`` holding :data:`TINY_YAML`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.yaml"
    path.write_text(TINY_YAML)
    return path
