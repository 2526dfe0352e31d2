"""Deterministic mode on CPU: the same seed and command give the same losses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from train_fixtures import losses, single_thread, skip_loss_plots, tiny_config, write_idx_folder

from patchdino.train.trainer import Trainer


@pytest.fixture(autouse=True)
def restore_global_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Runs here switch on deterministic algorithms process-wide; switch them back off."""
    skip_loss_plots(monkeypatch)
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def run(data: Path, out: Path, *overrides: str) -> list[float]:
    config = tiny_config(data, "run.max_steps=3", "run.deterministic=true", *overrides)
    with single_thread():
        Trainer(config, out, progress=False).run()
    return losses(out) + losses(out, "loss_patch")


def test_same_seed_same_losses_other_seed_other_losses(tmp_path: Path) -> None:
    data = write_idx_folder(tmp_path / "data")
    first = run(data, tmp_path / "a", "run.seed=3")
    assert torch.are_deterministic_algorithms_enabled()
    assert run(data, tmp_path / "b", "run.seed=3") == first
    assert run(data, tmp_path / "c", "run.seed=4") != first


@pytest.mark.parametrize("kernel", ["chunked", "triton"])
def test_every_loss_kernel_trains_to_the_same_losses(tmp_path: Path, kernel: str) -> None:
    """Three steps of the tiny run: ``loss.kernel`` changes how, not what (``triton`` runs
    in Triton's interpreter on the CPU)."""
    if kernel == "triton":
        pytest.importorskip("triton")
    data = write_idx_folder(tmp_path / "data")
    want = run(data, tmp_path / "torch", "loss.kernel=torch", "loss.centre=position")
    got = run(data, tmp_path / kernel, f"loss.kernel={kernel}", "loss.centre=position")
    assert got == pytest.approx(want, rel=1e-4)


def test_inputs_made_one_step_ahead_train_to_the_same_losses(tmp_path: Path) -> None:
    data = write_idx_folder(tmp_path / "data")
    want = run(data, tmp_path / "serial", "run.pipeline=serial")
    assert run(data, tmp_path / "ahead", "run.pipeline=ahead") == want
