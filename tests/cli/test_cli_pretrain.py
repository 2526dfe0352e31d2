"""`patchdino pretrain` argument handling and error reporting."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchdino.cli.main import build_parser, main
from patchdino.cli.pretrain import overrides_from_args
from patchdino.config import load_config, packaged_config_names


def parse(*argv: str) -> list[str]:
    return overrides_from_args(build_parser().parse_args(["pretrain", *argv]))


def test_flags_become_config_fields() -> None:
    strange = '/data/it\'s a "set": #1'
    overrides = parse(
        "--output",
        "run",
        "--data",
        strange,
        "--max-steps",
        "3",
        "--epochs",
        "5",
        "--save-every",
        "2",
        "--batch-size",
        "4",
        "--device",
        "cuda:1",
        "optim.lr=1e-3",
    )
    config = load_config(None, overrides)
    assert config.data.path == strange
    assert config.run.max_steps == 3 and config.optim.epochs == 5 and config.run.save_every == 2
    assert config.optim.batch_size == 4 and config.run.device == "cuda:1"
    assert config.optim.lr == 1e-3


def test_free_overrides_come_after_flags() -> None:
    config = load_config(None, parse("--output", "run", "--max-steps", "3", "run.max_steps=5"))
    assert config.run.max_steps == 5


def test_output_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain"])
    assert exit_info.value.code == 2
    assert "--output" in capsys.readouterr().err


def test_help_lists_the_packaged_configs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ", ".join(packaged_config_names()) in text


def test_unknown_backbone_is_a_config_error_listed_with_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = ["--data", str(tmp_path), "--output", str(out), "model.arch=vit_tinyy", "optim.lrr=1"]
    code = main(["pretrain", *args])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and not out.exists()
    assert "unknown key 'optim.lrr'; did you mean lr?" in err
    assert "model.arch: unknown backbone 'vit_tinyy'" in err
    (arch,) = [line for line in err.splitlines() if "model.arch" in line]
    assert "; did you mean vit_" in arch


def test_the_triton_kernel_without_cuda_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the tests' interpreter
    out = tmp_path / "run"
    args = ["--data", str(tmp_path), "--output", str(out), "run.device=cpu", "loss.kernel=triton"]
    code = main(["pretrain", *args])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and not out.exists()
    assert "loss.kernel=triton needs a CUDA device (this run uses cpu)" in err
