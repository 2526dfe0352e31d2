"""benchmarks/step_profile.py: every phase of the trainer's step timed, and the operator table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from idx_files import write_idx_split

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "step_profile.py"

TINY = [
    "data.kind=fashion_mnist",
    "model.arch=vit_pico",
    "model.patch_size=4",
    "model.out_dim=16",
    "model.patch_out_dim=16",
    "model.hidden_dim=16",
    "model.bottleneck_dim=8",
    "views.global_size=16",
    "views.local_size=8",
    "views.num_local=2",
    "optim.batch_size=4",
]


def test_profile_times_every_phase_and_lists_operators(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        images = rng.integers(0, 256, (8, 28, 28))
        write_idx_split(tmp_path / "data", split, images, rng.integers(0, 10, 8))
    spec = importlib.util.spec_from_file_location("step_profile", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    output = tmp_path / "profile.json"
    argv = ["--steps", "2", "--warmup", "1", "--threads", "1", "--operators", "3"]
    argv += ["--json", str(output), f"data.path={tmp_path / 'data'}", *TINY]
    monkeypatch.setattr(sys, "argv", ["step_profile.py", *argv])
    module.main()
    result = json.loads(output.read_text())
    assert list(result["ms_per_step"]) == list(module.PHASES)
    assert result["total_ms"] == pytest.approx(sum(result["ms_per_step"].values()))
    assert sum(result["share"].values()) == pytest.approx(1.0)
    assert result["images_per_s"] == pytest.approx(4 / (result["total_ms"] / 1e3))
    printed = capsys.readouterr().out
    table = printed[printed.index("operator") :].splitlines()
    assert len(table) == 1 + 3 + 1  # header, three operators, the totals line
    shares = [float(line.split()[-1].rstrip("%")) for line in table[1:4]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100
