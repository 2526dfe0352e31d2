"""Data problems met by `patchdino pretrain`: empty folders, too few images, bad files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from train_fixtures import (
    cli_args,
    image_bytes,
    losses,
    run_cli,
    single_thread,
    steps,
    write_idx_folder,
    write_image_folder,
)

pytestmark = pytest.mark.usefixtures("no_loss_plots")


def error_of(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("patchdino pretrain: error: "), err
    assert "Traceback" not in err
    return err


def test_empty_folder_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "run"
    assert run_cli(cli_args(empty, out, 2)) == 2
    first_line = error_of(capsys).splitlines()[0]
    assert str(empty) in first_line and "it is empty" in first_line
    assert not out.exists()


def test_missing_folder_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(cli_args(tmp_path / "nowhere", tmp_path / "run", 2)) == 2
    err = error_of(capsys)
    assert f"data folder {tmp_path / 'nowhere'} does not exist" in err
    assert len(err.strip().splitlines()) == 1


def test_batch_larger_than_the_data_set_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_idx_folder(tmp_path / "data", num_train=12)
    out = tmp_path / "run"
    assert run_cli(cli_args(data, out, 2, "optim.batch_size=16")) == 2
    err = error_of(capsys)
    assert "needs 16 images per step, but the data set has only 12" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def folder_with_bad_images(root: Path) -> tuple[Path, list[Path]]:
    """14 good PNGs and two bad JPEGs (zero bytes, truncated): 16 images, two batches of 8.

    The bad files sort last so that the trainer's first look at item 0 does not meet them.
    """
    write_image_folder(root, per_class=7)
    empty = root / "a" / "zz_empty.jpg"
    empty.write_bytes(b"")
    truncated = root / "b" / "zz_truncated.jpg"
    whole = image_bytes(7, (40, 40), "JPEG")
    truncated.write_bytes(whole[: len(whole) // 2])
    return root, [empty, truncated]


def test_bad_images_are_skipped_named_once_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, bad = folder_with_bad_images(tmp_path / "images")
    out = tmp_path / "run"
    caplog.set_level(logging.WARNING, logger="patchdino.data")
    with single_thread():
        # Four steps: two epochs, so every file (bad ones included) is visited twice.
        assert run_cli(cli_args(data, out, 4, "data.canvas=24", "data.on_bad_image=skip")) == 0
    assert steps(out) == [1, 2, 3, 4]
    assert losses(out, "bad_images")[-1] == 2
    messages = [r.getMessage() for r in caplog.records if r.name == "patchdino.data"]
    for path in bad:
        assert sum(str(path) in m for m in messages) == 1, messages


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_image_with_fail_policy_stops_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: int
) -> None:
    data, bad = folder_with_bad_images(tmp_path / "images")
    args = cli_args(
        data,
        tmp_path / "run",
        4,
        "data.canvas=24",
        "data.on_bad_image=fail",
        f"data.num_workers={workers}",
    )
    with single_thread():
        assert run_cli(args) == 2
    err = error_of(capsys)
    assert len(err.strip().splitlines()) == 1
    assert "cannot read image" in err and any(str(path) in err for path in bad)


def test_packaged_config_of_another_kind_says_to_pass_auto(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_image_folder(tmp_path / "photos")
    out = tmp_path / "run"
    argv = ["pretrain", "--config", "fashion_mnist_tiny", "--data", str(data), "--output", str(out)]
    assert run_cli(argv) == 2
    err = error_of(capsys)
    assert "data.kind is fashion_mnist" in err and "holds a data set of kind imagefolder" in err
    assert "pass data.kind=auto" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
