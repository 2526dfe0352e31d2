"""The model folder's ``pretrained_cfg``: timm's own transform against patchdino's."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from patchdino.eval.common.eval_data import CROP_RATIO
from patchdino.eval.common.hf_export import RESULT_FILE_LIMIT, run_folder_results, timm_input_config
from patchdino.eval.common.transform import EvalTransform

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _photo(width: int, height: int, mode: str = "RGB") -> Image.Image:
    photo = Image.fromarray(np.asarray(load_sample_image("china.jpg"))).convert(mode)
    return photo.resize((width, height), Image.Resampling.BILINEAR)


def _levels(a: torch.Tensor, b: torch.Tensor, std: tuple[float, ...]) -> float:
    """Largest difference of two normalised ``(C, S, S)`` inputs, in levels of 255."""
    scale = torch.tensor(std)[:, None, None] * 255
    return float(((a - b).abs() * scale).max())


def _timm_transform(transform: EvalTransform) -> Callable[[Image.Image], torch.Tensor]:
    """timm's evaluation transform for the model folder's ``pretrained_cfg``."""
    return timm.data.create_transform(**timm_input_config(transform))


@pytest.mark.parametrize("size", [32, 48])
@pytest.mark.parametrize("shape", [(4, 3), (3, 4), (1, 1)])
def test_centre_crop_agrees_within_one_level_on_images_already_on_the_canvas(
    size: int, shape: tuple[int, int]
) -> None:
    ours = EvalTransform(size, MEAN, STD, "center_crop")
    assert ours.canvas is not None
    width, height = ours.canvas * shape[0] // max(shape), ours.canvas * shape[1] // max(shape)
    image = _photo(width, height)
    theirs = _timm_transform(ours)(image)
    assert theirs.shape == (3, size, size)
    # Both bicubic with antialiasing; PIL and PyTorch round differently by at most a level.
    assert _levels(theirs, ours(image), STD) <= 1.0 + 1e-4


def test_centre_crop_is_exact_when_nothing_is_resampled() -> None:
    """A 342 x 256 image at S = 224: the canvas and the shorter side are its own."""
    ours = EvalTransform(224, MEAN, STD, "center_crop")
    image = _photo(342, 256)
    torch.testing.assert_close(_timm_transform(ours)(image), ours(image), rtol=0, atol=1e-6)


def test_resize_is_exact_at_the_native_size_and_within_a_level_otherwise() -> None:
    ours = EvalTransform(28, (0.286,), (0.353,), "resize")
    native = _photo(28, 28, "L")
    torch.testing.assert_close(_timm_transform(ours)(native), ours(native), rtol=0, atol=1e-6)
    larger = _photo(40, 30, "L")  # squashed to 28 x 28, as patchdino resizes
    assert _levels(_timm_transform(ours)(larger), ours(larger), (0.353,)) <= 1.0 + 1e-4


@pytest.mark.parametrize("size", range(8, 530, 7))
def test_timm_resizes_the_shorter_side_to_patchdinos_side(size: int) -> None:
    config = timm_input_config(EvalTransform(size, MEAN, STD, "center_crop"))
    assert math.floor(size / config["crop_pct"]) == round(size / CROP_RATIO)
    assert config["input_size"] == (3, size, size) and config["mean"] == MEAN


def test_run_folder_results(tmp_path: Path) -> None:
    (tmp_path / "knn.json").write_text(json.dumps({"k": {"20": 80.0}}))
    (tmp_path / "checkpoints.json").write_text("{}")
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "large.json").write_text(json.dumps(["x" * RESULT_FILE_LIMIT]))
    (tmp_path / "notes.txt").write_text("{}")
    results = run_folder_results(tmp_path)
    assert list(results) == ["broken.json", "knn.json", "large.json"]
    assert results["knn.json"] == {"k": {"20": 80.0}}
    assert results["broken.json"] == "(not valid JSON)"
    assert "not quoted" in results["large.json"]
