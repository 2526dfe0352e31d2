"""Student and EMA teacher networks: backbone plus a CLS head and a (possibly shared) patch head."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from patchdino.config import Config
from patchdino.config.checks import literal_values
from patchdino.config.model import PatchHead
from patchdino.models.backbone import Backbone, create_backbone
from patchdino.models.head import DINOHead

PATCH_HEAD_MODES: tuple[str, ...] = literal_values(PatchHead) or ()
"""``model.patch_head`` values."""


class Branch(nn.Module):
    """One network of the pair: backbone, CLS head and optional separate patch head.

    Args:
        backbone: returns ``(B, P + N, D)`` tokens (CLS, ``P - 1`` registers, patches).
        head: head applied to CLS tokens (and to patch tokens when ``patch_head`` is None).
        patch_head: separate head for patch tokens, or None to share ``head``.
    """

    def __init__(self, backbone: Backbone, head: DINOHead, patch_head: DINOHead | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.patch_head = patch_head

    @property
    def heads(self) -> tuple[DINOHead, DINOHead]:
        """``(CLS head, patch head)``; the same module twice when the head is shared."""
        return self.head, self.head if self.patch_head is None else self.patch_head

    def forward(
        self, views: Sequence[Tensor], masks: Sequence[Tensor] | None = None
    ) -> list[Tensor]:
        """Backbone tokens of each view, register tokens left out.

        Consecutive views of equal shape are concatenated along the batch and run together.
        The heads, the loss and patch matching see CLS and patch tokens only
        (:meth:`Backbone.without_registers`).

        Args:
            views: ``(B, C, S_v, S_v)`` images per view.
            masks: ``(B, N_v)`` bool patch masks of the first ``len(masks)`` views (the
                global views), for the backbone's mask token; None masks nothing.

        Returns:
            One ``(B, 1 + N_v, D)`` token tensor per view, in the order given.
        """
        masks = list(masks or [])
        outputs: list[Tensor] = []
        start = 0
        while start < len(views):
            end = start + 1
            while (
                end < len(views)
                and views[end].shape == views[start].shape
                and (end < len(masks)) == (start < len(masks))
            ):
                end += 1
            images = torch.cat(list(views[start:end]))
            if start < len(masks):
                mask = torch.cat(masks[start:end])  # (n * B, N)
                tokens = self.backbone(images, mask)  # (n * B, P + N, D)
            else:
                tokens = self.backbone(images)  # (n * B, P + N, D)
            tokens = self.backbone.without_registers(tokens)  # (n * B, 1 + N, D)
            outputs.extend(tokens.split(views[start].shape[0]))
            start = end
        return outputs


class StudentTeacher(nn.Module):
    """A student network and its exponential-moving-average teacher.

    The teacher starts as an exact copy of the student, never receives gradients and always
    stays in eval mode (no drop-path). It normally sees only the global views.

    Args:
        student: the student :class:`Branch`; the teacher is a deep copy of it.
    """

    def __init__(self, student: Branch) -> None:
        super().__init__()
        self.student = student
        self.teacher = copy.deepcopy(student)
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.teacher.eval()

    @classmethod
    def create(
        cls,
        arch: str,
        patch_size: int | None = None,
        img_size: int = 224,
        in_chans: int = 3,
        drop_path: float = 0.0,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        norm_last_layer: bool = True,
        patch_head: str = "shared",
        patch_out_dim: int = 65536,
        mask_token: bool = False,
        registers: int | None = None,
        **custom: Any,
    ) -> StudentTeacher:
        """Build backbone and heads from sizes (see :func:`create_backbone`, :class:`DINOHead`).

        Args:
            patch_head: ``"shared"`` (patch tokens use the CLS head, as in the paper) or
                ``"separate"`` (a head of their own with ``patch_out_dim`` outputs).
            mask_token: give the backbone a learnt mask token (the masked-patch term).
            registers: register tokens (None: the arch's own).
            **custom: custom backbone sizes (``embed_dim``, ``depth``, ``num_heads``).
        """
        if patch_head not in PATCH_HEAD_MODES:
            raise ValueError(f"patch_head must be one of {PATCH_HEAD_MODES}, got {patch_head!r}")
        backbone = create_backbone(
            arch, patch_size, img_size, in_chans, drop_path, mask_token, registers, **custom
        )

        def head(k: int) -> DINOHead:
            return DINOHead(
                backbone.embed_dim, k, hidden_dim, bottleneck_dim, nlayers, norm_last_layer
            )

        separate = head(patch_out_dim) if patch_head == "separate" else None
        return cls(Branch(backbone, head(out_dim), separate))

    @classmethod
    def from_config(cls, config: Config, in_chans: int) -> StudentTeacher:
        """Student and teacher of ``config.model`` for global views of ``config.views``.

        The backbone gets a mask token when ``loss.terms.masked`` has a positive weight.
        """
        m = config.model
        return cls.create(
            m.arch,
            patch_size=m.patch_size,
            img_size=config.views.global_size,
            in_chans=in_chans,
            drop_path=m.drop_path,
            out_dim=m.out_dim,
            hidden_dim=m.hidden_dim,
            bottleneck_dim=m.bottleneck_dim,
            norm_last_layer=m.norm_last_layer,
            patch_head=m.patch_head,
            patch_out_dim=m.patch_out_dim,
            mask_token=config.loss.terms.masked.weight > 0,
            registers=m.registers,
        )

    def train(self, mode: bool = True) -> StudentTeacher:
        """Set the student's mode; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def forward_student(
        self, views: Sequence[Tensor], masks: Sequence[Tensor] | None = None
    ) -> list[Tensor]:
        """Student tokens ``(B, 1 + N_v, D)`` of every view (globals first by convention).

        Args:
            views: ``(B, C, S_v, S_v)`` images per view.
            masks: ``(B, N_v)`` bool patch masks of the global views, or None.
        """
        return self.student(views, masks)

    @torch.no_grad()
    def forward_teacher(self, views: Sequence[Tensor]) -> list[Tensor]:
        """Teacher tokens ``(B, 1 + N_v, D)`` of the given views, without gradients."""
        return self.teacher(views)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """EMA step ``teacher = momentum * teacher + (1 - momentum) * student``.

        Args:
            momentum: in ``[0, 1]``; 1 leaves the teacher unchanged.
        """
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"teacher momentum must be in [0, 1], got {momentum}")
        student = dict(self.student.named_parameters())
        teacher = dict(self.teacher.named_parameters())
        if student.keys() != teacher.keys():
            raise ValueError("student and teacher parameters do not match")
        names = list(student)
        torch._foreach_lerp_(
            [teacher[n] for n in names], [student[n].detach() for n in names], 1.0 - momentum
        )
