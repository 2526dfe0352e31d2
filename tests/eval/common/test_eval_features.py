"""Feature extraction over a loader, token pooling and the cross-rank gather."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from patchdino.eval import all_gather_uneven, extract_features, token_features


def toy_data(num: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(num, 3, 4, 4, generator=gen)
    labels = torch.randint(0, 5, (num,), generator=gen)
    return images, labels


class ToyModel(nn.Module):
    """Flatten and project; dropout makes train and eval modes differ."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(48, 6)
        self.drop = nn.Dropout(0.5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(images.flatten(1)))


def test_extract_features_matches_direct_forward() -> None:
    images, labels = toy_data()
    model = ToyModel().train()
    loader = DataLoader(TensorDataset(images, labels), batch_size=7, shuffle=False)
    feats, out_labels = extract_features(model, loader, "cpu", progress=False)
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        expected = model(images)
    assert feats.shape == (30, 6) and feats.dtype == torch.float32
    assert out_labels.dtype == torch.long and torch.equal(out_labels, labels)
    torch.testing.assert_close(feats, expected)
    # Plain tensors, usable for training a probe afterwards.
    assert not feats.is_inference() and not out_labels.is_inference()


def test_extract_features_transform_callable_and_middle_items() -> None:
    images, labels = toy_data(12)
    index = torch.arange(12)
    loader = DataLoader(TensorDataset(images, index, labels), batch_size=5)
    weight = torch.randn(48, 3)

    def model(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ weight

    feats, out_labels = extract_features(
        model, loader, torch.device("cpu"), transform=lambda x: 2.0 * x - 1.0, progress=False
    )
    torch.testing.assert_close(feats, (2.0 * images - 1.0).flatten(1) @ weight)
    assert torch.equal(out_labels, labels)


def test_extract_features_rejects_bad_batches_and_outputs() -> None:
    images, labels = toy_data(4)
    with pytest.raises(ValueError, match="no batches"):
        extract_features(ToyModel(), [], "cpu", progress=False)
    with pytest.raises(ValueError, match="at least two items"):
        extract_features(ToyModel(), [images], "cpu", progress=False)  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"batch\[0\]"):
        extract_features(ToyModel(), [(images[0], labels)], "cpu", progress=False)
    with pytest.raises(ValueError, match="token_features"):
        extract_features(lambda x: x, [(images, labels)], "cpu", progress=False)


def test_token_features_pools() -> None:
    tokens = torch.randn(2, 1 + 6, 4)
    torch.testing.assert_close(token_features(tokens, "cls"), tokens[:, 0])
    manual_mean = sum(tokens[:, i] for i in range(1, 7)) / 6
    torch.testing.assert_close(token_features(tokens, "mean"), manual_mean)
    both = token_features(tokens, "both")
    assert both.shape == (2, 8)
    torch.testing.assert_close(both[:, :4], tokens[:, 0])
    torch.testing.assert_close(both[:, 4:], manual_mean)
    # Register tokens sit between CLS and the patches and are left out of the mean.
    with_registers = torch.randn(3, 1 + 4 + 9, 5)
    pooled = token_features(with_registers, "mean", num_prefix_tokens=5)
    torch.testing.assert_close(pooled, with_registers[:, 5:].mean(dim=1))


def test_token_features_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="pool must be one of"):
        token_features(torch.randn(2, 5, 4), "max")
    with pytest.raises(ValueError, match=r"\(B, P \+ N, D\)"):
        token_features(torch.randn(5, 4), "cls")
    with pytest.raises(ValueError, match="needs patch tokens"):
        token_features(torch.randn(2, 1, 4), "mean")


def test_gather_without_process_group_is_identity() -> None:
    tensor = torch.randn(3, 2)
    assert all_gather_uneven(tensor) is tensor


def _gather_worker(rank: int, world_size: int, init_file: str, result_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        num = 3 + 2 * rank  # uneven shares: 3 and 5 samples
        images = torch.full((num, 1, 2, 2), float(rank)) + torch.arange(num).view(-1, 1, 1, 1)
        labels = torch.full((num,), rank)
        loader = DataLoader(TensorDataset(images, labels), batch_size=2)
        feats, out_labels = extract_features(
            lambda x: x.flatten(1)[:, :2], loader, "cpu", progress=False
        )
        torch.save((feats, out_labels), os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_extract_features_gathers_uneven_shares_across_ranks(tmp_path: Path) -> None:
    mp.spawn(
        _gather_worker,
        args=(2, str(tmp_path / "init"), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    expected_feats = torch.cat(
        [
            (torch.arange(3.0)).repeat_interleave(2).view(3, 2),
            (1.0 + torch.arange(5.0)).repeat_interleave(2).view(5, 2),
        ]
    )
    expected_labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    for rank in range(2):
        feats, labels = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(feats, expected_feats)
        assert torch.equal(labels, expected_labels)
