"""``patchdino knn``: results against direct calls of the evaluation core, and user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from eval_cli_data import (
    idx_arrays,
    run_cli,
    write_config,
    write_image_folder,
    write_unsafe_pickle,
)

from patchdino.eval import knn_classify, pixel_features, pixel_statistics
from patchdino.eval.common.backbone_loading import load_backbone

KEYS = {"k", "top5", "weights", "data", "num_train", "num_test", "feature_dim", "seconds"}


def _arrays() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The images ``(N, 1, 16, 16)`` uint8 and labels of the IDX folder, as generated."""
    return {
        split: (torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels))
        for split, (images, labels) in idx_arrays().items()
    }


def test_pixels_equal_a_direct_pixel_knn(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "pixels.json"
    code, stdout, _ = run_cli(
        ["knn", "--data", data, "--weights", "pixels", "--ks", 1, 5, "--output", out], capsys
    )
    assert code == 0
    record = json.loads(out.read_text())
    assert KEYS <= set(record)
    assert record["num_train"] == 24 and record["num_test"] == 12
    assert record["feature_dim"] == 16 * 16

    arrays = _arrays()
    (train, train_labels), (test, test_labels) = arrays["train"], arrays["test"]
    mean, std = pixel_statistics(train)
    expected = knn_classify(
        pixel_features(train, mean, std),
        train_labels,
        pixel_features(test, mean, std),
        test_labels,
        ks=(1, 5),
    )
    assert record["k"] == {"1": expected.top1[1], "5": expected.top1[5]}
    assert record["top5"] == {"1": expected.top5[1], "5": expected.top5[5]}
    assert record["top5_convention"] == "voted"
    assert "top-1" in stdout and "results:" in stdout
    assert "top-5 counts a class only if a neighbour voted for it" in stdout


def test_dino_top5_convention(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "dino.json"
    args = ["knn", "--data", data, "--weights", "pixels", "--ks", 2, "--top5", "dino"]
    code, stdout, _ = run_cli([*args, "--output", out], capsys)
    assert code == 0
    record = json.loads(out.read_text())
    arrays = _arrays()
    (train, train_labels), (test, test_labels) = arrays["train"], arrays["test"]
    mean, std = pixel_statistics(train)
    expected = knn_classify(
        pixel_features(train, mean, std),
        train_labels,
        pixel_features(test, mean, std),
        test_labels,
        ks=(2,),
        top5="dino",
    )
    assert record["top5"] == {"2": expected.top5[2]}
    assert record["top5_convention"] == "dino"
    assert "top-5 as DINO's knn_classifier" in stdout


def test_checkpoint_equals_cls_features_normalised_with_training_statistics(
    data: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "knn.json"
    args = ["knn", "--data", data, "--weights", run / "checkpoint.pt", "--ks", 3, 10, 500]
    code, stdout, err = run_cli([*args, "--temperature", 0.1, "--output", out], capsys)
    assert code == 0
    assert "dropping k = 500" in err
    record = json.loads(out.read_text())
    assert set(record["k"]) == {"3", "10"} and record["feature_dim"] == 32
    assert record["weights"] == str(run / "checkpoint.pt")

    backbone = load_backbone(run / "checkpoint.pt").backbone
    arrays = _arrays()

    def cls(images: torch.Tensor) -> torch.Tensor:
        x = (images.float() / 255 - 0.2860) / 0.3530  # Fashion-MNIST statistics
        with torch.no_grad():
            return backbone(x)[:, 0]

    expected = knn_classify(
        cls(arrays["train"][0]),
        arrays["train"][1],
        cls(arrays["test"][0]),
        arrays["test"][1],
        ks=(3, 10),
        temperature=0.1,
    )
    assert record["k"] == {"3": expected.top1[3], "10": expected.top1[10]}
    for k in (3, 10):
        assert f"{k:>6}  {expected.top1[k]:>7.2f}" in stdout


def test_random_weights_and_subsets(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "tiny.yaml")
    out = tmp_path / "random.json"
    args = ["knn", "--data", data, "--weights", "random", "--config", config, "--pool", "both"]
    args += ["--max-train", 10, "--max-test", 5, "--ks", 2, "--output", out, "--no-progress"]
    code, _, _ = run_cli(args, capsys)
    assert code == 0
    record = json.loads(out.read_text())
    assert (record["num_train"], record["num_test"], record["feature_dim"]) == (10, 5, 64)


def test_image_folder_with_centre_crop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_image_folder(tmp_path / "images", {"train": ["a", "b"], "val": ["a", "b"]})
    config = write_config(tmp_path / "tiny.yaml")
    out = tmp_path / "folder.json"
    args = ["knn", "--data", root, "--weights", "random", "--config", config, "--ks", 1, 3]
    code, _, _ = run_cli([*args, "--output", out, "--no-progress"], capsys)
    assert code == 0
    record = json.loads(out.read_text())
    assert record["kind"] == "imagefolder" and record["image_size"] == 16
    assert (record["num_train"], record["num_test"]) == (6, 6)


def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("patchdino knn: error:")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_weights_file(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nothing.pt"
    code, _, err = run_cli(
        ["knn", "--data", data, "--weights", missing, "--output", tmp_path / "o.json"], capsys
    )
    _one_line_error(code, err, str(missing), "does not exist")


def test_wrong_checkpoint_key(
    data: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["knn", "--data", data, "--weights", run, "--checkpoint-key", "pupil"]
    code, _, err = run_cli([*args, "--output", tmp_path / "o.json"], capsys)
    _one_line_error(code, err, "'pupil'", "teacher or student")


def test_architecture_mismatch_names_the_tensor(
    data: Path, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "nano.yaml"
    config.write_text(
        "model: {arch: vit_nano, patch_size: 4}\nviews: {global_size: 16, local_size: 8}\n"
    )
    args = ["knn", "--data", data, "--weights", run, "--config", config]
    code, _, err = run_cli([*args, "--output", tmp_path / "o.json"], capsys)
    _one_line_error(code, err, "vit_nano", "model.cls_token", "(1, 1, 32)", "(1, 1, 64)")


def test_missing_test_split(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_image_folder(tmp_path / "only-train", {"train": ["a", "b"]})
    args = ["knn", "--data", root / "train", "--weights", run, "--output", tmp_path / "o.json"]
    code, _, err = run_cli(args, capsys)
    _one_line_error(code, err, "test split", "val/")


def test_unsafe_pickle_is_refused_without_running(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "code-ran"
    weights = write_unsafe_pickle(tmp_path / "evil.pt", marker)
    args = ["knn", "--data", data, "--weights", weights, "--output", tmp_path / "o.json"]
    code, _, err = run_cli(args, capsys)
    _one_line_error(code, err, "refusing to load", str(weights))
    assert not marker.exists()


def test_file_that_is_not_a_checkpoint(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    weights = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, weights)
    args = ["knn", "--data", data, "--weights", weights, "--output", tmp_path / "o.json"]
    code, _, err = run_cli(args, capsys)
    _one_line_error(code, err, "not a patchdino pretraining checkpoint")


def test_unknown_top5_convention(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["knn", "--data", data, "--weights", "pixels", "--top5", "top"]
    code, _, err = run_cli([*args, "--output", tmp_path / "o.json"], capsys)
    _one_line_error(code, err, "--top5 must be one of voted, dino, got 'top'")
    assert not (tmp_path / "o.json").exists()


def test_every_k_too_large(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = [
        "knn",
        "--data",
        data,
        "--weights",
        "pixels",
        "--ks",
        100,
        "--output",
        tmp_path / "o.json",
    ]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "every k is larger than the 24 train images" in err
