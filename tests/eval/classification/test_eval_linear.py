"""Linear probe: convergence on separable data, determinism, lr sweep, multi-block features."""

from __future__ import annotations

import pytest
import timm
import torch

from patchdino.eval import (
    LinearProbe,
    MultiBlockFeatures,
    multiblock_features,
    train_linear_probe,
)


def separable_data(
    num: int, seed: int, num_classes: int = 4, dim: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Well separated clusters around fixed centres, offset and scaled far from unit range."""
    centres = 6.0 * torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(99))
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (num,), generator=gen)
    feats = centres[labels] + 0.5 * torch.randn(num, dim, generator=gen)
    return 40.0 + 10.0 * feats, labels


def test_probe_reaches_100_percent_on_separable_data() -> None:
    train, train_labels = separable_data(200, seed=0)
    test, test_labels = separable_data(80, seed=1)
    result = train_linear_probe(
        train, train_labels, test, test_labels, 4, epochs=20, lr=0.1, batch_size=32,
        progress=False,
    )  # fmt: skip
    assert result.top1 == 100.0 and result.top5 == 100.0
    assert len(result.history) == 20
    assert [h["epoch"] for h in result.history] == list(range(1, 21))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.history[-1]["train_top1"] == 100.0
    # The returned probe takes raw features and gives the reported accuracy.
    assert isinstance(result.probe, LinearProbe)
    with torch.no_grad():
        assert bool((result.probe(test).argmax(dim=1) == test_labels).all())


def test_probe_learning_rate_schedule_is_scaled_cosine() -> None:
    train, train_labels = separable_data(64, seed=2)
    result = train_linear_probe(
        train, train_labels, train, train_labels, 4, epochs=4, lr=0.02, batch_size=128,
        progress=False,
    )  # fmt: skip
    peak = 0.02 * 128 / 256
    expected = [peak * (1 + c) / 2 for c in (1.0, 0.5**0.5, 0.0, -(0.5**0.5))]
    assert [h["lr"] for h in result.history] == pytest.approx(expected)


def test_probe_initialisation() -> None:
    train, train_labels = separable_data(64, seed=2)
    result = train_linear_probe(
        train, train_labels, train, train_labels, 4, epochs=1, lr=1e-12, progress=False
    )
    assert result.probe is not None
    weight, bias = result.probe.linear.weight, result.probe.linear.bias
    assert weight.std().item() == pytest.approx(0.01, rel=0.3)
    assert bias.abs().max().item() < 1e-9


def test_probe_is_deterministic_given_seed() -> None:
    train, train_labels = separable_data(100, seed=3)
    test, test_labels = separable_data(40, seed=4)
    kwargs = {"epochs": 3, "lr": 0.05, "batch_size": 16, "progress": False}
    first = train_linear_probe(train, train_labels, test, test_labels, 4, seed=7, **kwargs)  # type: ignore[arg-type]
    second = train_linear_probe(train, train_labels, test, test_labels, 4, seed=7, **kwargs)  # type: ignore[arg-type]
    other = train_linear_probe(train, train_labels, test, test_labels, 4, seed=8, **kwargs)  # type: ignore[arg-type]
    assert first.history == second.history
    assert first.probe is not None and second.probe is not None and other.probe is not None
    assert torch.equal(first.probe.linear.weight, second.probe.linear.weight)
    assert not torch.equal(first.probe.linear.weight, other.probe.linear.weight)


def test_probe_without_standardisation() -> None:
    train, train_labels = separable_data(120, seed=5)
    train = (train - 40.0) / 60.0  # near unit scale, as DINO's features are
    result = train_linear_probe(
        train, train_labels, train, train_labels, 4, epochs=15, lr=0.5, batch_size=16,
        normalize="none", progress=False,
    )  # fmt: skip
    assert result.probe is not None
    assert torch.equal(result.probe.mean, torch.zeros(8))
    assert result.top1 == 100.0


def test_probe_learning_rate_sweep_uses_held_out_split() -> None:
    train, train_labels = separable_data(150, seed=6)
    # A test set whose labels disagree with the features: picking lr by it would be visible.
    test, _ = separable_data(40, seed=7)
    wrong_labels = torch.zeros(40, dtype=torch.long)
    result = train_linear_probe(
        train, train_labels, test, wrong_labels, 4, epochs=10, batch_size=16,
        lrs=(1e-9, 0.1), progress=False,
    )  # fmt: skip
    assert set(result.sweep) == {1e-9, 0.1}
    assert result.sweep[0.1] == 100.0 and result.sweep[1e-9] < 100.0
    assert result.lr == 0.1
    assert len(result.history) == 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"normalize": "l2"}, "normalize"),
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr must be positive"),
        ({"lrs": ()}, "lrs"),
        ({"lrs": (0.1,), "val_fraction": 1.5}, "val_fraction"),
        ({"num_classes": 3}, "labels must be in"),
    ],
)
def test_probe_rejects_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    train, train_labels = separable_data(20, seed=8)
    arguments: dict[str, object] = {"num_classes": 4, "epochs": 1, "progress": False, **kwargs}
    with pytest.raises(ValueError, match=message):
        train_linear_probe(train, train_labels, train, train_labels, **arguments)  # type: ignore[arg-type]


def test_probe_rejects_bad_shapes() -> None:
    train, train_labels = separable_data(20, seed=9)
    with pytest.raises(ValueError, match="dims differ"):
        train_linear_probe(train, train_labels, train[:, :3], train_labels, 4, progress=False)
    with pytest.raises(ValueError, match="train labels"):
        train_linear_probe(train, train_labels[:5], train, train_labels, 4, progress=False)


def test_multiblock_features_concatenates_last_cls_tokens() -> None:
    blocks = [torch.randn(2, 1 + 9, 4) for _ in range(5)]
    feats = multiblock_features(blocks, n_last_blocks=3)
    expected = torch.cat([blocks[2][:, 0], blocks[3][:, 0], blocks[4][:, 0]], dim=1)
    torch.testing.assert_close(feats, expected)
    pooled = multiblock_features(blocks, n_last_blocks=2, avgpool_patch_tokens=True)
    assert pooled.shape == (2, 12)
    torch.testing.assert_close(pooled[:, 8:], blocks[4][:, 1:].mean(dim=1))
    with pytest.raises(ValueError, match="n_last_blocks"):
        multiblock_features(blocks, n_last_blocks=6)


def test_multiblock_module_on_timm_vit() -> None:
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=3,
        embed_dim=32, num_heads=2, num_classes=0, dynamic_img_size=True,
    ).eval()  # fmt: skip
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        last = MultiBlockFeatures(vit, n_last_blocks=1, avgpool_patch_tokens=True)(images)
        tokens = vit.forward_features(images)  # type: ignore[operator]  # (B, 1 + 16, D), normed
        four = MultiBlockFeatures(vit, n_last_blocks=3)(images)
    torch.testing.assert_close(last[:, :32], tokens[:, 0])
    torch.testing.assert_close(last[:, 32:], tokens[:, 1:].mean(dim=1))
    assert four.shape == (2, 96)
    torch.testing.assert_close(four[:, 64:], tokens[:, 0])
