"""benchmarks/downstream.py: weights parsing, the table over seeds, one tiny end-to-end run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from idx_files import garment_images, write_idx_split
from patchdino.eval.video.moving_fashion import VideoSettings, write_moving_fashion

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
TINY = """\
model: {arch: vit_pico, patch_size: 4, out_dim: 16, patch_out_dim: 16, hidden_dim: 16,
        bottleneck_dim: 8}
views: {global_size: 28, local_size: 12, num_local: 2}
"""


@pytest.fixture(scope="module")
def downstream() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling quality.py
    try:
        spec = importlib.util.spec_from_file_location("downstream", BENCHMARKS / "downstream.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_weights_and_table(downstream: ModuleType) -> None:
    assert downstream.parse_weights(["a=x,y", "random=random"]) == {
        "a": ["x", "y"],
        "random": ["random"],
    }
    with pytest.raises(SystemExit, match="LABEL=WEIGHTS"):
        downstream.parse_weights(["nolabel"])
    row = {"segment": {"miou": 40.0, "pixel_accuracy": 70.0}, "propagate": {"JF_mean": 50.0}}
    other = {"segment": {"miou": 44.0, "pixel_accuracy": 72.0}, "propagate": {"JF_mean": 54.0}}
    text = downstream.table({"grid": [row, other], "random": [row]}, ("segment", "propagate"))
    assert "| grid | 2 | 42.00 ± 2.83 | 71.00 ± 1.41 | 52.00 ± 2.83 | - | - |" in text
    assert "| random | 1 | 40.00 | 70.00 | 50.00 | - | - |" in text


def test_tiny_run(downstream: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fashion = tmp_path / "fashion"
    for split, n, seed in (("train", 20, 0), ("test", 8, 1)):
        labels = np.arange(n) % 10
        write_idx_split(fashion, split, garment_images(labels, 28, seed), labels)
    videos = tmp_path / "videos"
    source = torch.from_numpy(garment_images(np.arange(6) % 10, 28, 2))
    write_moving_fashion(source, videos, VideoSettings(num_videos=1, num_frames=3, seed=0))
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    argv = ["downstream.py", "--weights", "random=random", "pixels=pixels", "--videos", str(videos)]
    argv += ["--tasks", "segment,propagate,retrieve", "--config"]
    argv += [str(config), "--fashion-mnist", str(fashion), "--seg-epochs", "1"]
    monkeypatch.setattr(sys, "argv", [*argv, "--output", str(tmp_path / "out")])
    downstream.main()
    summary = json.loads((tmp_path / "out" / "downstream.json").read_text())
    record = summary["rows"]["random"][0]
    assert 0 <= record["segment"]["miou"] <= 100 and "JF_mean" in record["propagate"]
    assert 0 <= record["retrieve"]["recall_1"] <= 100
    pixels = summary["rows"]["pixels"][0]
    assert "segment" not in pixels and "map_at_r" in pixels["retrieve"]
    assert (tmp_path / "out" / "table.md").read_text().startswith("| weights |")


def test_merge(downstream: ModuleType, tmp_path: Path) -> None:
    for name, miou in (("a", 40.0), ("b", 44.0)):
        folder = tmp_path / name
        folder.mkdir()
        rows = {"grid": [{"segment": {"miou": miou}}]}
        summary = {"command": f"run {name}", "rows": rows}
        (folder / "downstream.json").write_text(json.dumps(summary))
    downstream.merge([tmp_path / "a", tmp_path / "b"], tmp_path / "all", ("segment",))
    text = (tmp_path / "all" / "table.md").read_text()
    assert "| grid | 2 | 42.00 ± 2.83 | - |" in text


def test_paired_table(downstream: ModuleType, tmp_path: Path) -> None:
    def record(miou: float, jf: float) -> dict[str, dict[str, float]]:
        return {"segment": {"miou": miou}, "propagate": {"JF_mean": jf}}

    rows = {
        "grid": [record(40.0, 50.0), record(44.0, 52.0)],
        "dino": [record(30.0, 51.0), record(36.0, 50.0)],
    }
    text = downstream.paired_table(rows, "grid", ("segment",))
    assert "| grid |" not in text
    assert "| dino | 2 | -9.00 ± 1.41 | 2/2 | - | - |" in text  # mIoU, pixel accuracy
    text = downstream.paired_table(rows, "grid", ("propagate",))
    assert "| dino | 2 | -0.50 ± 2.12 | 1/2 | - | - | - | - |" in text  # J&F, J, F
    for name, records in rows.items():
        folder = tmp_path / name
        folder.mkdir()
        summary = {"command": f"run {name}", "rows": {name: records}}
        (folder / "downstream.json").write_text(json.dumps(summary))
    downstream.merge(
        [tmp_path / "grid", tmp_path / "dino"], tmp_path / "all", ("segment",), against="grid"
    )
    assert "| dino | 2 | -9.00 ± 1.41 | 2/2 |" in (tmp_path / "all" / "table.md").read_text()
