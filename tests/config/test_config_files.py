"""Every shipped config file loads and validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchdino.config import config_keys, load_config

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


@pytest.mark.parametrize(
    ("preset", "base"),
    [
        ("fashion_mnist_dinov2_style", "fashion_mnist_tiny"),
        ("imagenet_vit_small_dinov2_style", "imagenet_vit_small"),
    ],
)
def test_dinov2_style_presets_change_only_the_loss_terms(preset: str, base: str) -> None:
    styled, plain = config_keys(load_config(preset)), config_keys(load_config(base))
    changed = {k: v for k, v in styled.items() if plain[k] != v}
    assert changed == {
        "loss.terms.patch.weight": 0.0,
        "loss.terms.masked.weight": 1.0,
        "loss.terms.koleo.weight": 0.1,
        "loss.centring": "sinkhorn",
    }


def test_sinkhorn_preset_is_the_recipe_with_sinkhorn_centring() -> None:
    styled = config_keys(load_config("fashion_mnist_sinkhorn"))
    plain = config_keys(load_config("fashion_mnist_tiny"))
    assert {k: v for k, v in styled.items() if plain[k] != v} == {"loss.centring": "sinkhorn"}


def test_continue_dinov2_differs_from_imagenet_vit_small_where_its_comments_say() -> None:
    adapt, base = (
        config_keys(load_config("continue_dinov2")),
        config_keys(load_config("imagenet_vit_small")),
    )
    changed = {k: v for k, v in adapt.items() if base[k] != v}
    assert changed == {
        "views.local_size": 98,
        "model.arch": "vit_small_patch14_dinov2",
        "model.patch_size": 14,
        "model.drop_path": 0.0,
        "optim.epochs": 20,
        "optim.lr": 5e-5,
        "optim.warmup_epochs": 2,
        "optim.momentum_teacher": 0.999,
        "loss.centring": "sinkhorn",
        "loss.warmup_teacher_temp_epochs": 2,
    }
    text = (Path(CONFIGS[0]).parent / "continue_dinov2.yaml").read_text()
    for key in changed:
        assert key.split(".")[-1] in text.split("data:")[0], key  # each one explained
