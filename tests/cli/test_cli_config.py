"""``patchdino config keys`` and ``config show``: every key, resolved values, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from patchdino.cli.main import main
from patchdino.config import config_keys, load_config


def test_keys_lists_every_key_with_type_default_and_doc(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["config", "keys"]) == 0
    out = capsys.readouterr().out
    for key in config_keys():
        assert f"\n{key} " in f"\n{out}", key
    assert "run.precision" in out and 'one of auto, fp32, bf16; default "auto"' in out
    assert "Gradient accumulation steps per optimiser step" in out


def test_show_marks_what_differs_from_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["config", "show", "fashion_mnist_tiny", "optim.lr=0.01", "--section", "optim"]) == 0
    )
    out = capsys.readouterr().out
    assert "optim.lr" in out and "= 0.01 (default 0.0005)" in out
    assert "loss." not in out
    assert main(["config", "show", "loss.terms.masked.weight=1", "--section", "loss.terms"]) == 0
    assert "= 1.0 (default 0.0)" in capsys.readouterr().out


def test_show_yaml_is_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "fashion_mnist_tiny", "--yaml", "loss.centring=sinkhorn"]) == 0
    path = tmp_path / "run.yaml"
    path.write_text(capsys.readouterr().out)
    assert yaml.safe_load(path.read_text())["loss"]["centring"] == "sinkhorn"
    assert load_config(path) == load_config("fashion_mnist_tiny", ["loss.centring=sinkhorn"])


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["show", "optim.lrr=2"], "unknown key 'optim.lrr'; did you mean lr?"),
        (["show", "nope.yaml"], "cannot read config file nope.yaml"),
        (["keys", "--section", "lsos"], "no section 'lsos' (sections: data, loss, loss.terms.cls"),
    ],
)
def test_bad_input_is_one_line_with_exit_2(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config", *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
