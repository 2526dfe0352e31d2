"""The packaged ``paper`` preset: the reference behaviour on every optional row, and it trains."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from train_fixtures import TINY, losses, single_thread

from patchdino.checkpoint import load_checkpoint
from patchdino.config import PACKAGED_CONFIGS, load_config, resolve_config_path
from patchdino.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("no_loss_plots")

REFERENCE_ROWS = {
    "views.geometry": "per_batch",
    "model.patch_head": "shared",
    "model.out_dim": 10000,
    "loss.terms.patch.weight": 1.0,
    "loss.terms.patch.matching": "grid",
    "loss.cls_weighting": "token",
    "loss.centre": "position",
    "loss.centre_tokens": "all",
    "loss.terms.patch.pairs_per_view": 0,
    "loss.local_local": False,
}
"""Every behaviour row of docs/method.md section 6 that is an option, as the reference sets it."""


def _value(config: object, dotted: str) -> object:
    for name in dotted.split("."):
        config = getattr(config, name)
    return config


def test_paper_preset_selects_the_reference_rows() -> None:
    assert resolve_config_path("paper") == PACKAGED_CONFIGS / "paper.yaml"
    config = load_config("paper")
    for key, value in REFERENCE_ROWS.items():
        assert _value(config, key) == value, key
    # The rows where the defaults differ are exactly the ones the preset has to set.
    defaults = load_config()
    differing = {k for k in REFERENCE_ROWS if _value(defaults, k) != REFERENCE_ROWS[k]}
    assert differing == {"views.geometry", "loss.centre_tokens", "model.out_dim"}
    assert (config.views.global_size, config.views.local_size) == (224, 96)
    assert config.model.arch == "vit_small_patch16_224" and config.views.num_local == 8


def test_paper_preset_trains_and_resumes_exactly(data: Path, tmp_path: Path) -> None:
    overrides = [*TINY, f"data.path={data}", "data.kind=auto", "data.canvas=null"]
    config = load_config("paper", [*overrides, "run.max_steps=3"])
    assert config.loss.centre_tokens == "all" and config.views.geometry == "per_batch"
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    with single_thread():
        Trainer(config, whole, progress=False).run()
        Trainer(config, resumed, progress=False).run(until=2)
        Trainer(config, resumed, progress=False).run()
    values = losses(whole)
    assert len(values) == 3 and all(math.isfinite(v) and v > 0 for v in values)
    assert all(v > 0 for v in losses(whole, "loss_patch"))
    assert losses(resumed) == values
    a, b = (load_checkpoint(run / "checkpoint.pt")["loss"] for run in (whole, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
