"""`patchdino demo` end to end on a generated Fashion-MNIST-like folder (tiny model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from train_fixtures import TINY, single_thread, write_idx_folder

from patchdino.cli.main import main


def test_demo_writes_the_report_with_every_row(tmp_path: Path) -> None:
    data = write_idx_folder(tmp_path / "fashion", num_train=40)
    out = tmp_path / "demo"
    overrides = [o for o in TINY if not o.startswith("run.device")]
    with single_thread():
        code = main(
            [
                "demo",
                "--output",
                str(out),
                "--data",
                str(data),
                "--max-steps",
                "2",
                "--device",
                "cpu",
                "--no-progress",
                *overrides,
            ]
        )
    assert code == 0
    report = (out / "report.md").read_text()
    for row in (
        "| pretrained teacher (patchdino), CLS |",
        "| random initialisation, CLS |",
        "| pretrained teacher, mean patch token |",
        "| random initialisation, mean patch token |",
        "| raw pixels |",
    ):
        assert row in report
    for figure in ("pretrain/loss.png", "match/matches.png", "attention.png"):
        assert f"]({figure})" in report
        assert (out / figure).stat().st_size > 0
    teacher = json.loads((out / "knn_teacher.json").read_text())
    assert set(teacher["k"]) == {"10", "20"}  # 100 and 200 exceed the 40 training images
    assert teacher["num_train"] == 40 and teacher["num_test"] == 8
    assert teacher["pool"] == "cls"
    assert json.loads((out / "knn_teacher_mean.json").read_text())["pool"] == "mean"
    assert json.loads((out / "knn_random_mean.json").read_text())["pool"] == "mean"
    metrics = (out / "pretrain" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 2


def test_demo_reports_a_missing_data_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "demo",
            "--output",
            str(tmp_path / "d"),
            "--data",
            str(tmp_path / "none"),
            "--max-steps",
            "1",
            "--no-progress",
            *TINY,
        ]
    )
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_demo_refuses_an_output_it_cannot_write_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(*_: object, **__: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("tempfile.TemporaryFile", read_only)
    code = main(["demo", "--output", str(tmp_path / "d"), "--no-progress", *TINY])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "cannot write in" in err and "Read-only file system" in err
    assert not (tmp_path / "d").exists()
