"""Fixtures shared by the evaluation command tests (data helpers live in eval_cli_data.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_cli_data import tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run folder of the tiny pretraining run shared by the whole test session."""
    return tiny_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def data(run: Path) -> Path:
    """The Fashion-MNIST-like IDX folder the tiny run was trained on."""
    return run.parent / "eval-fashion"
