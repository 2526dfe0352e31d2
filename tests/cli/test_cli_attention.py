"""``patchdino attention`` on a real photograph with a tiny random ViT, and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

from patchdino.cli.main import main

TINY = """\
model: {arch: vit_pico, patch_size: 8, out_dim: 16, patch_out_dim: 16, hidden_dim: 16,
        bottleneck_dim: 8}
views: {global_size: 64, local_size: 32, num_local: 2}
"""


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    photo = tmp_path / "china.jpg"
    Image.fromarray(np.asarray(load_sample_image("china.jpg"))).save(photo)
    return config, photo


def test_figures_for_a_photograph(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, photo = setup
    out = tmp_path / "maps"
    args = ["attention", str(photo), "--weights", "random", "--config", str(config)]
    assert main([*args, "--output", str(out), "--threshold", "0.6", "--image-size", "60"]) == 0
    for name in ("china_attention.png", "china_mass0.6.png"):
        with Image.open(out / name) as figure:
            assert figure.width > 100 and figure.height > 50


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--threshold", "1.5"], "--threshold must be in (0, 1]"),
        (["--image-size", "4"], "smaller than the patch size"),
    ],
)
def test_bad_options(
    setup: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    config, photo = setup
    args = ["attention", str(photo), "--weights", "random", "--config", str(config)]
    assert main([*args, "--output", str(tmp_path / "o"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_bad_paths(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, photo = setup
    common = ["--weights", "random", "--config", str(config), "--output"]
    assert main(["attention", str(tmp_path), *common, str(tmp_path / "o")]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["attention", str(tmp_path / "no.jpg"), *common, str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["attention", str(photo), *common, str(photo)]) == 2
    assert "is a file; --output must be a folder" in capsys.readouterr().err
