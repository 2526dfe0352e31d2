"""Student/teacher pair: copy at start, EMA update, teacher in eval mode, view grouping."""

from __future__ import annotations

import pytest
import torch

from patchdino.models.student_teacher import StudentTeacher


def _pair(**kwargs: object) -> StudentTeacher:
    torch.manual_seed(0)
    return StudentTeacher.create(
        "vit_pico",
        patch_size=4,
        img_size=16,
        out_dim=20,
        hidden_dim=16,
        bottleneck_dim=8,
        drop_path=0.2,
        **kwargs,  # type: ignore[arg-type]
    )


def test_teacher_starts_as_a_frozen_copy() -> None:
    pair = _pair()
    for (name, s), (name_t, t) in zip(
        pair.student.named_parameters(), pair.teacher.named_parameters()
    ):
        assert name == name_t
        torch.testing.assert_close(s, t)
        assert s.data_ptr() != t.data_ptr()
        assert not t.requires_grad
    assert pair.student.heads[0] is pair.student.heads[1]


def test_ema_update_math() -> None:
    pair = _pair(patch_head="separate", patch_out_dim=12)
    with torch.no_grad():
        for p in pair.student.parameters():
            p.add_(torch.randn_like(p))
    before = {n: p.clone() for n, p in pair.teacher.named_parameters()}
    student = dict(pair.student.named_parameters())
    pair.update_teacher(0.75)
    for name, t in pair.teacher.named_parameters():
        torch.testing.assert_close(t, 0.75 * before[name] + 0.25 * student[name])
    pair.update_teacher(1.0)
    for name, t in pair.teacher.named_parameters():
        torch.testing.assert_close(t, 0.75 * before[name] + 0.25 * student[name])
    with pytest.raises(ValueError, match="momentum"):
        pair.update_teacher(1.5)


def test_teacher_stays_in_eval_mode_and_views_are_grouped() -> None:
    pair = _pair().train()
    assert pair.student.training and not pair.teacher.training
    views = [torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16), torch.randn(2, 3, 8, 8)]
    teacher = pair.forward_teacher(views[:2])
    assert [t.shape for t in teacher] == [(2, 17, 32), (2, 17, 32)]
    assert not teacher[0].requires_grad
    torch.testing.assert_close(teacher[1], pair.teacher.backbone(views[1]))  # no drop-path
    pair.eval()
    student = pair.forward_student(views)
    assert [s.shape for s in student] == [(2, 17, 32), (2, 17, 32), (2, 5, 32)]
    for tokens, view in zip(student, views):
        torch.testing.assert_close(tokens, pair.student.backbone(view))


def test_separate_patch_head() -> None:
    pair = _pair(patch_head="separate", patch_out_dim=12)
    cls_head, patch_head = pair.teacher.heads
    assert cls_head.out_dim == 20 and patch_head.out_dim == 12
    with pytest.raises(ValueError, match="patch_head"):
        _pair(patch_head="both")
