"""The evaluation pipeline: set-up from weights and data, split features, labelled features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from idx_files import garment_images, write_idx_split
from patchdino.eval.common.pipeline import (
    PIXELS,
    RANDOM,
    EvalSetupError,
    Extraction,
    feature_model,
    labelled_features,
    open_split,
    prepare,
    split_features,
)
from tiny_config import write_tiny_config

CPU = torch.device("cpu")


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    root = tmp_path / "fashion"
    for split, n, seed in (("train", 30, 0), ("test", 12, 1)):
        labels = np.arange(n) % 3
        write_idx_split(root, split, garment_images(labels, 16, seed), labels)
    return root


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    return write_tiny_config(tmp_path)


def test_random_weights_give_pooled_features(data: Path, config: Path) -> None:
    setup = prepare(data, RANDOM, CPU, config=config)
    assert setup.kind == "fashion_mnist" and setup.image_size == 16 and setup.channels == 1
    assert setup.backbone is not None and len(setup.mean) == 1
    model = feature_model(setup, "both")
    features, labels, stats = split_features(
        setup, open_split(setup, "test"), model, Extraction(5, progress=False)
    )
    assert features.shape == (12, 2 * setup.backbone.embed_dim) and stats is None
    assert labels.tolist() == [i % 3 for i in range(12)]
    # The same images through the backbone by hand: first the normalisation, then CLS + mean.
    images = torch.from_numpy(garment_images(np.arange(12) % 3, 16, 1)).float()[:, None]
    x = (images / 255.0 - setup.mean[0]) / setup.std[0]
    with torch.no_grad():
        tokens = setup.backbone(x)
    expected = torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], dim=1)
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)


def test_pixels_use_the_train_statistics_for_both_splits(data: Path) -> None:
    setup = prepare(data, PIXELS, CPU)
    assert setup.backbone is None and setup.image_size is None
    result = labelled_features(setup, None, "k-NN", Extraction(7, progress=False), max_train=20)
    train, test = result.train, result.test
    assert train[0].shape == (20, 256) and test[0].shape == (12, 256)
    assert result.classes[:3] == ["T-shirt/top", "Trouser", "Pullover"]
    # Standardised with the train subset's statistics: mean zero there, not on the test split.
    assert train[0].mean().abs() < 1e-5
    assert test[0].mean().abs() > 1e-3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": "nowhere.pt"}, "nowhere.pt"),
        ({"weights": RANDOM, "image_size": 10}, "not a multiple of the patch size"),
        ({"weights": RANDOM, "image_size": 0}, "at least 1"),
    ],
)
def test_bad_input_is_one_line(
    data: Path, config: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(EvalSetupError, match=message) as caught:
        prepare(data, device=CPU, config=config, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_missing_data_and_pool(tmp_path: Path, data: Path, config: Path) -> None:
    with pytest.raises(EvalSetupError, match=r"does not exist|no data set|not found"):
        prepare(tmp_path / "absent", RANDOM, CPU, config=config)
    with pytest.raises(EvalSetupError, match="pooling must be one of"):
        feature_model(prepare(data, RANDOM, CPU, config=config), "max")
    with pytest.raises(EvalSetupError, match="batch size"):
        Extraction(batch_size=0)
