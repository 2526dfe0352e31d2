"""Fixtures shared by the training tests (helpers live in train_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_fixtures import skip_loss_plots, write_idx_folder


@pytest.fixture
def no_loss_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace the loss-curve figure by an empty file (drawing it dominates tiny runs)."""
    skip_loss_plots(monkeypatch)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Fashion-MNIST-like IDX folder of random 28 x 28 images, one per test module."""
    return write_idx_folder(tmp_path_factory.mktemp("fashion"))
