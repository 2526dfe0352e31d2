"""``patchdino linear``: a short probe run, its report, and label and option errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from eval_cli_data import NUM_TEST, NUM_TRAIN, idx_arrays, run_cli, write_image_folder

from patchdino.eval import train_linear_probe
from patchdino.eval.common.backbone_loading import load_backbone


def test_two_epochs_match_a_direct_probe(
    run: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "linear.json"
    args = ["linear", "--data", data, "--weights", run, "--n-last-blocks", 2, "--avgpool"]
    args += ["--epochs", 2, "--lr", 0.01, "--probe-batch-size", 8, "--output", out]
    code, stdout, _ = run_cli([*args, "--no-progress"], capsys)
    assert code == 0 and "linear probe: top-1" in stdout
    record = json.loads(out.read_text())
    assert record["feature_dim"] == 3 * 32  # two CLS tokens and the mean patch token
    assert (record["num_train"], record["num_test"], record["epochs"]) == (NUM_TRAIN, NUM_TEST, 2)
    assert len(record["history"]) == 2 and record["sweep"] == {}

    backbone = load_backbone(run).backbone
    feats = {}
    for split, (images, _) in idx_arrays().items():
        x = (torch.from_numpy(images).unsqueeze(1).float() / 255 - 0.2860) / 0.3530
        with torch.no_grad():
            blocks = backbone.get_intermediate_layers(x, 2)  # 2 x (N, 17, 32)
        feats[split] = torch.cat([blocks[0][:, 0], blocks[1][:, 0], blocks[1][:, 1:].mean(1)], 1)
    labels = {split: torch.from_numpy(lab) for split, (_, lab) in idx_arrays().items()}
    expected = train_linear_probe(
        feats["train"],
        labels["train"],
        feats["test"],
        labels["test"],
        num_classes=10,
        epochs=2,
        lr=0.01,
        batch_size=8,
        progress=False,
    )
    assert record["top1"] == pytest.approx(expected.top1)
    assert record["top5"] == pytest.approx(expected.top5)


def test_learning_rate_sweep(data: Path, tmp_path: Path) -> None:
    from patchdino.cli.main import main

    out = tmp_path / "sweep.json"
    args = ["linear", "--data", data, "--weights", "pixels", "--epochs", 2, "--lrs", 0.01, 0.1]
    assert main([str(a) for a in [*args, "--output", out, "--no-progress"]]) == 0
    record = json.loads(out.read_text())
    assert set(record["sweep"]) == {"0.01", "0.1"} and record["lr"] in (0.01, 0.1)
    assert record["feature_dim"] == 256


def test_too_many_blocks(
    run: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["linear", "--data", data, "--weights", run, "--output", tmp_path / "o.json"]
    code, _, err = run_cli(args, capsys)  # default --n-last-blocks 4, the ViT has 2 blocks
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--n-last-blocks 4 exceeds the backbone's 2 blocks" in err


def test_test_classes_missing_from_train(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_image_folder(tmp_path / "img", {"train": ["a", "b"], "val": ["a", "b", "zebra"]})
    args = ["linear", "--data", root, "--weights", run, "--n-last-blocks", 1, "--epochs", 1]
    code, _, err = run_cli([*args, "--output", tmp_path / "o.json", "--no-progress"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "zebra" in err and "the train split lacks" in err
