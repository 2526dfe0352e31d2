"""The training step: forward-backward of a micro-batch and the optimiser step."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import torch
from train_fixtures import tiny_config

from patchdino.data.batch import MultiCropBatch
from patchdino.train.build import build_augmentation, build_step
from patchdino.train.optim import build_optimizer
from patchdino.train.schedules import ScheduleValues
from patchdino.train.step import PretrainStep, forward_backward, optimiser_step

TEACHER_TEMP = 0.04


def _values(freeze_last_layer: bool = False) -> ScheduleValues:
    return ScheduleValues(
        lr=1e-3,
        weight_decay=0.04,
        teacher_momentum=0.9,
        teacher_temp=TEACHER_TEMP,
        freeze_last_layer=freeze_last_layer,
    )


def _setup(tmp_path: Path) -> tuple[PretrainStep, MultiCropBatch]:
    """A tiny step module without drop-path (so passes repeat) and the views of 4 images."""
    config = tiny_config(tmp_path, "model.drop_path=0.0")
    step = build_step(config, 1).train()
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    augment = build_augmentation(config, (0.5,), (0.25,))
    return step, augment(images, generator=torch.Generator().manual_seed(1))


def _grads(step: PretrainStep) -> dict[str, torch.Tensor]:
    return {
        name: p.grad.clone()
        for name, p in step.model.student.named_parameters()
        if p.grad is not None
    }


def test_forward_backward_divides_the_loss_by_the_accumulation(tmp_path: Path) -> None:
    step, batch = _setup(tmp_path)
    plan = step.plan(batch, torch.Generator().manual_seed(2))
    loss = {k: v.clone() for k, v in step.loss.state_dict().items()}
    full = forward_backward(step, batch, plan, TEACHER_TEMP, "fp32")
    expected = _grads(step)
    step.model.student.zero_grad(set_to_none=True)
    step.loss.load_state_dict(loss)  # the same centre as the first pass
    half = forward_backward(step, batch, plan, TEACHER_TEMP, "fp32", accumulation=2)
    torch.testing.assert_close(half.loss, full.loss, rtol=0, atol=0)
    got = _grads(step)
    assert got.keys() == expected.keys() and got
    for name, grad in got.items():
        torch.testing.assert_close(grad, expected[name] / 2)
    assert set(full.scalars()) == {"loss", "loss_cls", "loss_patch", "matched_patches"}


def test_optimiser_step_updates_student_and_teacher(tmp_path: Path) -> None:
    step, batch = _setup(tmp_path)
    model = step.model
    optimizer = build_optimizer(model.student)
    forward_backward(step, batch, step.plan(batch), TEACHER_TEMP, "fp32")
    student = [p.detach().clone() for p in model.student.parameters()]
    teacher = [p.detach().clone() for p in model.teacher.parameters()]
    norm = optimiser_step(model, optimizer, _values(), clip_grad=3.0)
    assert math.isfinite(norm) and norm > 0
    assert all(group["lr"] == 1e-3 for group in optimizer.param_groups)
    assert any(not torch.equal(a, p) for a, p in zip(student, model.student.parameters()))
    assert any(not torch.equal(a, p) for a, p in zip(teacher, model.teacher.parameters()))
    assert all(p.grad is None for p in model.student.parameters())


def test_optimiser_step_keeps_the_last_layer_while_frozen(tmp_path: Path) -> None:
    step, batch = _setup(tmp_path)
    model = step.model
    optimizer = build_optimizer(model.student)
    forward_backward(step, batch, step.plan(batch), TEACHER_TEMP, "fp32")
    last = {id(h): h.last_layer for h in model.student.heads}.values()
    before = [p.detach().clone() for layer in last for p in layer.parameters()]
    optimiser_step(model, optimizer, _values(freeze_last_layer=True), clip_grad=3.0)
    after = [p for layer in last for p in layer.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_optimiser_step_takes_no_step_on_a_nonfinite_gradient(tmp_path: Path) -> None:
    step, batch = _setup(tmp_path)
    model = step.model
    optimizer = build_optimizer(model.student)
    forward_backward(step, batch, step.plan(batch), TEACHER_TEMP, "fp32")
    next(p for p in model.student.parameters() if p.grad is not None).grad.fill_(math.inf)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    norm = optimiser_step(model, optimizer, _values(), clip_grad=3.0)
    assert not math.isfinite(norm)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(p.grad is None for p in model.student.parameters())
    assert not optimizer.state  # AdamW never stepped


def test_phases_wrap_every_phase_in_order(tmp_path: Path) -> None:
    step, batch = _setup(tmp_path)
    seen: list[str] = []

    @contextlib.contextmanager
    def phases(name: str) -> Iterator[None]:
        seen.append(name)
        yield

    forward_backward(step, batch, step.plan(batch), TEACHER_TEMP, "fp32", phases=phases)
    optimizer = build_optimizer(step.model.student)
    optimiser_step(step.model, optimizer, _values(), 3.0, phases)
    assert seen == [
        "teacher forward",
        "student forward",
        "loss",
        "backward",
        "clip",
        "optimiser",
        "ema",
    ]


def test_registers_reach_neither_heads_nor_loss(tmp_path: Path) -> None:
    """A register backbone's loss gets, per view, the backbone's CLS and patch tokens only."""
    registers = 3
    config = tiny_config(tmp_path, "model.drop_path=0.0", f"model.registers={registers}")
    step = build_step(config, 1).train()
    augment = build_augmentation(config, (0.5,), (0.25,))
    batch = augment(
        torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8),
        generator=torch.Generator().manual_seed(1),
    )
    raw: list[torch.Tensor] = []  # the student backbone's outputs, one per group of views
    seen: list[list[torch.Tensor]] = []  # the student tokens the loss gets, one per view
    hooks = [
        step.model.student.backbone.register_forward_hook(lambda m, i, out: raw.append(out)),
        step.loss.register_forward_pre_hook(lambda m, args: seen.append(list(args[0]))),
    ]
    try:
        plan = step.plan(batch, torch.Generator().manual_seed(2))
        forward_backward(step, batch, plan, TEACHER_TEMP, "fp32")
    finally:
        for hook in hooks:
            hook.remove()
    expected = [
        view
        for out in raw  # (n * B, 1 + R + N, D): CLS, registers, patches
        for view in torch.cat([out[:, :1], out[:, 1 + registers :]], dim=1).split(4)
    ]
    assert len(expected) == len(seen[0]) == len(batch.views)
    for want, got in zip(expected, seen[0]):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    grad = step.model.student.backbone.model.reg_token.grad
    assert grad is not None and grad.abs().sum() > 0  # registers still shape the patch tokens
