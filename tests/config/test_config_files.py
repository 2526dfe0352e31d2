"""Every shipped config file loads and validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchdino.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_the_expected_configs_exist() -> None:
    names = {p.stem for p in CONFIGS}
    assert {
        "fashion_mnist_tiny",
        "cifar10_vit_tiny",
        "imagenet100_vit_small",
        "imagenet_vit_small",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_file_is_valid(path: Path) -> None:
    config = load_config(path)
    assert config.views.global_size % config.model.patch_size == 0


def test_imagenet_config_is_the_papers_setting() -> None:
    config = load_config(Path(CONFIGS[0]).parent / "imagenet_vit_small.yaml")
    assert config.model.arch == "vit_small_patch16_224" and config.model.out_dim == 65536
    assert (config.views.global_size, config.views.local_size) == (224, 96)
    assert config.views.num_local == 8 and config.loss.terms.patch.matching == "grid"
    assert config.loss.patch_loss and config.loss.cls_weighting == "token"
