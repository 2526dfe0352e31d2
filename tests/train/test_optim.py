"""patchdino.train.optim: parameter groups, the multi-tensor AdamW and per-tensor clipping,
each against a plain per-parameter computation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from patchdino.bench.syncs import count_host_syncs
from patchdino.train.optim import build_optimizer, clip_gradients, parameter_groups


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3))


def _gradients(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        param.grad = torch.randn(param.shape, generator=generator)


def test_groups_keep_decay_off_biases_and_norms() -> None:
    decay, no_decay = parameter_groups(_model())
    decayed, kept = decay["params"], no_decay["params"]
    assert isinstance(decayed, list) and isinstance(kept, list)
    assert [p.ndim for p in decayed] == [2, 2]
    assert all(p.ndim == 1 for p in kept)
    assert no_decay["weight_decay"] == 0.0


def _steps(pairs: list[tuple[torch.optim.Optimizer, nn.Module]], steps: range) -> None:
    """The same gradients and a changing lr / wd into every (optimiser, model) pair."""
    for step in steps:
        for optimizer, net in pairs:
            for group in optimizer.param_groups:
                group["lr"] = 1e-2 * (step + 1)
                group["weight_decay"] = 0.05 if group.get("apply_weight_decay") else 0.0
            _gradients(net, step)
            optimizer.step()


def test_multi_tensor_adamw_equals_the_per_parameter_loop() -> None:
    model = _model()
    plain = copy.deepcopy(model)
    fast = build_optimizer(model)
    slow = torch.optim.AdamW(parameter_groups(plain), lr=0.0, weight_decay=0.0, foreach=False)
    _steps([(fast, model), (slow, plain)], range(5))
    for a, b in zip(model.parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b)


def test_fused_adamw_equals_the_per_parameter_loop_and_reads_nothing_back() -> None:
    model = _model()
    plain = copy.deepcopy(model)
    fused = build_optimizer(model, "fused")
    slow = torch.optim.AdamW(parameter_groups(plain), lr=0.0, weight_decay=0.0, foreach=False)
    assert fused.defaults["fused"] and not fused.defaults["foreach"]
    _steps([(fused, model), (slow, plain)], range(5))
    for a, b in zip(model.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    _gradients(model, 9)
    assert count_host_syncs(fused.step, torch.device("cpu")) == {}  # step counters on device


def test_a_foreach_state_resumes_in_the_fused_update_and_back() -> None:
    """``optim.adamw`` may change between a run and its resume: the state carries over."""
    model = _model()
    first = build_optimizer(model)
    _steps([(first, model)], range(3))
    resumed, back = copy.deepcopy(model), copy.deepcopy(model)
    fused = build_optimizer(resumed, "fused")
    fused.load_state_dict(copy.deepcopy(first.state_dict()))  # a checkpoint's copy
    again = build_optimizer(back)
    again.load_state_dict(copy.deepcopy(fused.state_dict()))
    _steps([(first, model), (fused, resumed), (again, back)], range(3, 5))
    for a, b, c in zip(model.parameters(), resumed.parameters(), back.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(c, a, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("max_norm", [0.0, 0.5, 100.0])
def test_clipping_scales_each_tensor_alone(max_norm: float) -> None:
    model = _model()
    _gradients(model, 3)
    before = [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]
    total = clip_gradients(model.parameters(), max_norm)
    expected_total = torch.cat([g.flatten() for g in before]).norm().item()
    assert total == pytest.approx(expected_total, rel=1e-6)
    for param, grad in zip(model.parameters(), before, strict=True):
        norm = grad.norm().item()
        scale = 1.0 if max_norm <= 0 else min(1.0, max_norm / (norm + 1e-6))
        torch.testing.assert_close(param.grad, grad * scale)
        if max_norm > 0:
            assert param.grad.norm().item() <= max_norm * (1 + 1e-5)  # type: ignore[union-attr]
