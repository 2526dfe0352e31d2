"""``patchdino segment`` end to end on tiny data, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from idx_files import garment_images, write_idx_split
from patchdino.cli.main import main
from segmentation_files import write_voc
from tiny_config import write_tiny_config


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    return write_tiny_config(tmp_path)


def _segment(data: Path, config: Path, output: Path, *extra: str) -> int:
    args = ["segment", "--data", str(data), "--weights", "random", "--config", str(config)]
    return main([*args, "--output", str(output), "--epochs", "2", "--no-progress", *extra])


def test_fashion_task(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "fashion"
    for split, n, seed in (("train", 40, 0), ("test", 10, 1)):
        labels = np.arange(n) % 10
        write_idx_split(data, split, garment_images(labels, 28, seed), labels)
    output = tmp_path / "out" / "seg.json"
    assert _segment(data, config, output, "--image-size", "28", "--max-train", "32") == 0
    record = json.loads(output.read_text())
    assert record["layout"] == "fashion_mnist" and record["num_train"] == 32
    assert record["num_test"] == 10 and len(record["iou"]) == 11
    assert 0 <= record["miou"] <= 100 and 0 <= record["pixel_accuracy"] <= 100
    assert len(record["history"]) == 2 and record["image_size"] == 28
    assert "mIoU" in capsys.readouterr().out


def test_voc_with_sliding_windows(tmp_path: Path, config: Path) -> None:
    data = write_voc(tmp_path / "voc", {"train": [(20, 28), (24, 24)], "val": [(18, 30)]})
    output = tmp_path / "voc.json"
    assert _segment(data, config, output, "--layers", "2", "--batch-size", "2") == 0
    record = json.loads(output.read_text())
    assert record["layout"] == "voc" and record["feature_dim"] == 2 * 32
    # A class absent from both the masks and the predictions has no IoU (null), not NaN.
    assert all(v is None or 0 <= v <= 100 for v in record["iou"].values())
    assert len(record["iou"]) == 21


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--output", "seg.txt"], "--output must end in .json"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--eval-mode", "tiles"], "--eval-mode must be one of"),
        (["--layers", "9"], "--layers 9 exceeds"),
        (["--image-size", "18"], "not a multiple of the patch size"),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    data = write_voc(tmp_path / "voc", {"train": [(16, 16)], "val": [(16, 16)]})
    output = tmp_path / "seg.json"
    assert _segment(data, config, output, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not output.exists()


def test_missing_data(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _segment(tmp_path / "absent", config, tmp_path / "seg.json") == 2
    assert "does not exist" in capsys.readouterr().err
    assert _segment(tmp_path, config, tmp_path / "seg.json") == 2
    assert "not a segmentation data set" in capsys.readouterr().err


def test_an_unreadable_image_is_left_out_and_counted_or_stops_in_one_line(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_voc(tmp_path / "voc", {"train": [(20, 28), (24, 24)], "val": [(18, 30)]})
    bad = sorted((data / "JPEGImages").glob("*.jpg"))[0]
    bad.write_bytes(bad.read_bytes()[:40])  # a truncated JPEG
    output = tmp_path / "voc.json"
    assert _segment(data, config, output, "--batch-size", "2") == 0
    record = json.loads(output.read_text())
    assert record["skipped"] == {"train": [str(bad)], "val": []}
    assert record["num_train"] == 1
    capsys.readouterr()
    code = _segment(data, config, tmp_path / "fail.json", "--on-bad-image", "fail")
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"{bad}: cannot read image" in err and "--on-bad-image skip" in err
    assert not (tmp_path / "fail.json").exists()
