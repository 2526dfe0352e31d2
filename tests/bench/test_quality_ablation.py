"""benchmarks/quality.py: the ablation variants are valid configurations, one row each."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from patchdino.config import config_keys, load_config

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def quality() -> ModuleType:
    spec = importlib.util.spec_from_file_location("quality", BENCHMARKS / "quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _changed(overrides: list[str]) -> dict[str, object]:
    """The fields ``overrides`` change from the packaged Fashion-MNIST recipe."""
    base = config_keys(load_config("fashion_mnist_tiny"))
    new = config_keys(load_config("fashion_mnist_tiny", overrides))
    return {key: value for key, value in new.items() if base[key] != value}


def test_each_ablation_row_toggles_one_option(quality: ModuleType) -> None:
    assert set(quality.ABLATION) <= set(quality.VARIANTS)
    assert _changed(quality.VARIANTS["grid"]) == {}  # the recipe's defaults
    for name in quality.ABLATION:
        changed = _changed(quality.VARIANTS[name])
        if name == "paper":
            assert changed == {
                "views.geometry": "per_batch",
                "loss.centre": "position",
                "loss.centre_tokens": "all",
            }
        elif name != "grid":
            assert len(changed) == 1, (name, changed)


def test_paper_variant_takes_the_presets_rows(quality: ModuleType) -> None:
    paper = config_keys(load_config("paper"))
    variant = config_keys(load_config("fashion_mnist_tiny", quality.VARIANTS["paper"]))
    for key in quality.PAPER_ROWS:
        assert variant[key] == paper[key], key
