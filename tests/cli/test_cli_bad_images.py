"""Unreadable image files in evaluation: left out and named, never replaced; or an error."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from eval_cli_data import class_images, run_cli, write_image_folder
from PIL import Image

BAD = ("train/a/empty.jpg", "train/b/truncated.jpg")
"""The unreadable files of the photo folder: zero bytes, and a JPEG cut in half."""


def truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(class_images(np.array([1]), 24, 5, channels=3)[0]).save(buffer, "JPEG")
    data = buffer.getvalue()
    return data[: len(data) // 2]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train and test splits of 3 classes x 3 readable PNGs."""
    root = tmp_path_factory.mktemp("clean")
    return write_image_folder(root, {"train": ["a", "b", "c"], "test": ["a", "b", "c"]})


@pytest.fixture(scope="module")
def photos(clean: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clean folder with two unreadable files added to its train split."""
    root = tmp_path_factory.mktemp("photos") / "photos"
    shutil.copytree(clean, root)
    (root / BAD[0]).write_bytes(b"")
    (root / BAD[1]).write_bytes(truncated_jpeg())
    return root


def features(
    run: Path, data: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    args = ["features", "--data", data, "--weights", run, "--no-progress", "--output", out]
    code, _, err = run_cli([*args, *extra], capsys)
    return code, err


def test_features_leave_bad_files_out_and_keep_every_row_aligned(
    run: Path,
    clean: Path,
    photos: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    code, err = features(run, photos, tmp_path / "photos.npz", capsys)
    assert code == 0, err
    logged = [r.getMessage() for r in caplog.records]
    for name in BAD:  # named once each (on stderr outside the tests)
        assert sum(f"leaving out unreadable image {photos / name} (" in m for m in logged) == 1
    saved = np.load(tmp_path / "photos.npz")
    assert sorted(saved["skipped"].tolist()) == sorted(n.removeprefix("train/") for n in BAD)
    assert code == 0 and features(run, clean, tmp_path / "clean.npz", capsys)[0] == 0
    reference = np.load(tmp_path / "clean.npz")
    # Every row is the features of the file it names, as encoded without any bad file.
    assert saved["names"].tolist() == reference["names"].tolist()
    assert saved["labels"].tolist() == reference["labels"].tolist()
    assert np.array_equal(saved["features"], reference["features"])
    assert not set(saved["names"].tolist()) & set(saved["skipped"].tolist())
    rows = {tuple(row) for row in saved["features"].tolist()}
    assert len(rows) == len(saved["features"])  # no row copies another image's


def test_knn_counts_the_skipped_files_in_its_json(
    run: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "knn.json"
    args = ["knn", "--data", photos, "--weights", run, "--no-progress", "--ks", 1, "--output", out]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    record = json.loads(out.read_text())
    assert record["num_train"] == 9
    assert sorted(record["skipped_images"]["train"]) == sorted(
        n.removeprefix("train/") for n in BAD
    )
    assert record["skipped_images"]["test"] == []


def test_on_bad_image_fail_stops_in_one_line(
    run: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = features(run, photos, tmp_path / "f.npz", capsys, "--on-bad-image", "fail")
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"cannot read image {photos / BAD[0]}" in err
    assert "--on-bad-image skip" in err
    assert not (tmp_path / "f.npz").exists()
