"""Chunked soft-target cross-entropy against the plain full-logits formula."""

from __future__ import annotations

import pytest
import torch

from patchdino.losses.cross_entropy import soft_cross_entropy


def _plain(features: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temp: float):
    log_q = torch.log_softmax(features @ weight.T / temp, dim=1)
    return -(targets * log_q).sum()


def _inputs(n: int = 11, k: int = 17, d: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    features = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64))
    weight = torch.randn(k, d, generator=g, dtype=torch.float64)
    # Unnormalised rows, as produced by summing several weighted teacher distributions.
    targets = torch.rand(n, k, generator=g, dtype=torch.float64) * torch.rand(n, 1, generator=g)
    targets[3] = 0.0  # a row without any target
    return features.requires_grad_(), weight.requires_grad_(), targets


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 11, 100])
def test_chunked_equals_plain_in_value_and_gradient(chunk_size: int) -> None:
    features, weight, targets = _inputs()
    expected = _plain(features, weight, targets, 0.1)
    grads_expected = torch.autograd.grad(expected, (features, weight))
    loss = soft_cross_entropy(features, weight, targets, 0.1, chunk_size=chunk_size)
    grads = torch.autograd.grad(loss, (features, weight))
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, grads_expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_target_function_and_explicit_chunks() -> None:
    features, weight, targets = _inputs(seed=1)
    calls: list[tuple[int, int]] = []

    def target_fn(start: int, end: int) -> torch.Tensor:
        calls.append((start, end))
        return targets[start:end]

    chunks = [(0, 2), (2, 2), (2, 9), (9, 11)]
    loss = soft_cross_entropy(features, weight, target_fn, 0.07, chunks=chunks)
    expected = _plain(features, weight, targets, 0.07)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    assert calls == [(0, 2), (2, 9), (9, 11)]  # empty chunks are skipped


def test_backward_scales_with_the_incoming_gradient() -> None:
    features, weight, targets = _inputs(seed=2)
    (2.5 * soft_cross_entropy(features, weight, targets, 0.1, chunk_size=4)).backward()
    got = features.grad.clone(), weight.grad.clone()
    features.grad, weight.grad = None, None
    (2.5 * _plain(features, weight, targets, 0.1)).backward()
    torch.testing.assert_close(got[0], features.grad)
    torch.testing.assert_close(got[1], weight.grad)


def test_gradient_reaches_a_weight_normalised_parameter() -> None:
    features, _, targets = _inputs(seed=3)
    v = torch.randn(17, 5, dtype=torch.float64, requires_grad=True)
    loss = soft_cross_entropy(
        features, torch.nn.functional.normalize(v, dim=1), targets, 0.1, chunk_size=3
    )
    expected = _plain(features, torch.nn.functional.normalize(v, dim=1), targets, 0.1)
    torch.testing.assert_close(torch.autograd.grad(loss, v)[0], torch.autograd.grad(expected, v)[0])


def test_no_grad_gives_the_same_value() -> None:
    features, weight, targets = _inputs(seed=4)
    with torch.no_grad():
        loss = soft_cross_entropy(features, weight, targets, 0.1, chunk_size=2)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, _plain(features, weight, targets, 0.1).detach())


def test_float32_matches_float64() -> None:
    features, weight, targets = _inputs(n=40, k=300, d=16, seed=5)
    loss32 = soft_cross_entropy(
        features.float(), weight.float(), targets.float(), 0.1, chunk_size=7
    )
    assert loss32.dtype == torch.float32
    torch.testing.assert_close(
        loss32.double(), _plain(features, weight, targets, 0.1), rtol=1e-5, atol=1e-5
    )


def test_bad_inputs_are_rejected() -> None:
    features, weight, targets = _inputs()
    with pytest.raises(ValueError, match="weight must have shape"):
        soft_cross_entropy(features, weight[:, :2], targets, 0.1)
    with pytest.raises(ValueError, match="targets must have shape"):
        soft_cross_entropy(features, weight, targets[:3], 0.1)
    with pytest.raises(ValueError, match="temperature"):
        soft_cross_entropy(features, weight, targets, 0.0)
    with pytest.raises(ValueError, match="partition"):
        soft_cross_entropy(features, weight, targets, 0.1, chunks=[(0, 5), (6, 11)])
    with pytest.raises(ValueError, match="partition"):
        soft_cross_entropy(features, weight, targets, 0.1, chunks=[(0, 5)])
