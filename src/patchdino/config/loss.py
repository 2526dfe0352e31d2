"""The ``loss`` section: the loss terms, their weights and options (docs/method.md section 4).

The training loss is ``sum over terms of weight * term`` (:mod:`patchdino.losses.terms`).
Each term has a section under ``loss.terms`` with its ``weight`` (0 leaves the term out:
nothing of it is computed) and its own options; the options that shape every term's pairs
or targets (view pairs, CLS weighting, centring, temperatures) stay in ``loss``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from patchdino.config.checks import (
    fraction_problem,
    momentum_problem,
    pair_limit_problem,
    positive_problems,
)
from patchdino.config.section import Section

MatchMode = Literal["grid", "nearest"]
"""grid (the paper's algorithm) | nearest (sub-patch exact centre distance)."""
ClsWeighting = Literal["token", "split"]
"""token: CLS is one token among 1 + matches (reference) | split: fixed ``cls_weight``."""
CentreMode = Literal["position", "shared"]
"""position: one centre per token position (reference) | shared: CLS + one for patches."""
CentreTokens = Literal["matched", "all"]
"""Which teacher tokens the EMA centre statistics average."""
Centring = Literal["ema", "sinkhorn"]
"""How teacher outputs are centred: an EMA centre, or Sinkhorn-Knopp per batch."""
LossKernel = Literal["auto", "torch", "chunked", "triton"]
"""How each distillation problem is computed (:mod:`patchdino.losses.kernel`): auto | torch
(factored form in PyTorch) | chunked (K-wide targets per student row) | triton (CUDA kernels)."""


@dataclass
class TermConfig(Section):
    """What every loss term has: its weight in the sum."""

    weight: float = 1.0
    """Factor of this term in the training loss; 0 leaves the term out."""

    def rules(self, prefix: str) -> list[str]:
        if self.weight < 0:
            return [f"{prefix}weight must be >= 0 (0 leaves the term out), got {self.weight}"]
        return []


@dataclass
class ClsTermConfig(TermConfig):
    """DINO's term: teacher CLS tokens of the global views distil into student CLS tokens."""


@dataclass
class PatchTermConfig(TermConfig):
    """The paper's term: matched patches of different views distil into each other."""

    matching: MatchMode = "grid"
    """grid (the paper's algorithm) | nearest."""
    match_threshold: float = 0.5
    """nearest mode: largest centre distance kept, in coarser-patch units."""
    pairs_per_view: int = 0
    """Keep at most this many randomly chosen matched patch pairs per (sample, view pair),
    drawn anew every step; 0 keeps all. A cheaper setting: the heads run on fewer tokens."""

    def rules(self, prefix: str) -> list[str]:
        problems = super().rules(prefix)
        limit = pair_limit_problem(f"{prefix}pairs_per_view", self.pairs_per_view)
        if limit is not None:
            problems.append(limit)
        if self.matching == "nearest" and self.match_threshold <= 0:
            problems.append(f"{prefix}match_threshold must be > 0, got {self.match_threshold}")
        return problems


@dataclass
class MaskedTermConfig(TermConfig):
    """iBOT's term: masked patches of the student's global views predict the teacher's.

    Block-wise masks are drawn per image with probability ``probability``; a masked image
    hides a share of its patches drawn uniformly from ``ratio``.
    """

    weight: float = 0.0
    ratio: tuple[float, float] = (0.1, 0.5)
    """Range of the share of patches a masked image hides (DINOv2: 0.1 to 0.5)."""
    probability: float = 0.5
    """Share of global-view images that are masked at all (DINOv2: 0.5)."""

    def rules(self, prefix: str) -> list[str]:
        problems = super().rules(prefix)
        low, high = self.ratio
        if not 0.0 <= low <= high < 1.0:
            problems.append(
                f"{prefix}ratio must satisfy 0 <= min <= max < 1, got {tuple(self.ratio)}"
            )
        probability = fraction_problem(f"{prefix}probability", self.probability)
        return problems + ([probability] if probability else [])


@dataclass
class KoLeoTermConfig(TermConfig):
    """DINOv2's KoLeo regulariser: spreads the student's CLS embeddings within a batch."""

    weight: float = 0.0


@dataclass
class TermsConfig(Section):
    """One section per loss term, by name."""

    cls: ClsTermConfig = field(default_factory=ClsTermConfig)
    patch: PatchTermConfig = field(default_factory=PatchTermConfig)
    masked: MaskedTermConfig = field(default_factory=MaskedTermConfig)
    koleo: KoLeoTermConfig = field(default_factory=KoLeoTermConfig)


@dataclass
class LossConfig(Section):
    """Loss terms and the options they share (docs/method.md section 4)."""

    terms: TermsConfig = field(default_factory=TermsConfig)
    local_local: bool = False
    """Also pair local views with each other (the teacher then runs on local views too)."""
    cls_weighting: ClsWeighting = "token"
    """token: CLS is one token among 1 + matches (reference); split: fixed cls_weight."""
    cls_weight: float = 0.5
    """CLS share of each view pair with the split weighting, in [0, 1]."""
    centring: Centring = "ema"
    """ema: subtract an EMA centre (DINO) | sinkhorn: Sinkhorn-Knopp normalisation of each
    batch's teacher outputs (DINOv2), for every term."""
    sinkhorn_iterations: int = 3
    """Sinkhorn-Knopp iterations with loss.centring=sinkhorn (DINOv2: 3)."""
    centre: CentreMode = "position"
    """position: one centre per token position (reference) | shared: CLS + one for patches."""
    centre_tokens: CentreTokens = "matched"
    """matched: the centre statistics average the teacher tokens that take part in a pair |
    all: every teacher token (reference; the teacher head also runs on unmatched patches)."""
    centre_momentum: float = 0.9
    """EMA momentum of the centre, in [0, 1)."""
    student_temp: float = 0.1
    """Student softmax temperature."""
    teacher_temp: float = 0.04
    """Teacher softmax temperature after its warm-up."""
    warmup_teacher_temp: float = 0.04
    """Teacher temperature at the start of its warm-up."""
    warmup_teacher_temp_epochs: int = 0
    """Epochs of the linear teacher-temperature warm-up (0: none)."""
    kernel: LossKernel = "auto"
    """auto (torch; see patchdino.losses.kernel) | torch: the factored form in PyTorch |
    chunked: the K-wide-targets form | triton: fused kernels (CUDA). All compute the same
    loss; they differ in speed and memory."""

    @property
    def patch_loss(self) -> bool:
        """Whether matched patches take part (the patch term has a positive weight)."""
        return self.terms.patch.weight > 0

    def rules(self, prefix: str) -> list[str]:
        problems: list[str] = []
        cls_weight = fraction_problem(f"{prefix}cls_weight", self.cls_weight)
        momentum = momentum_problem(f"{prefix}centre_momentum", self.centre_momentum)
        problems += [p for p in (cls_weight, momentum) if p is not None]
        problems += positive_problems(
            {
                f"{prefix}student_temp": self.student_temp,
                f"{prefix}teacher_temp": self.teacher_temp,
                f"{prefix}warmup_teacher_temp": self.warmup_teacher_temp,
                f"{prefix}sinkhorn_iterations": self.sinkhorn_iterations,
            }
        )
        if not any(getattr(self.terms, name).weight for name in ("cls", "patch", "masked")):
            problems.append(
                f"{prefix}terms: the cls, patch and masked terms all have weight 0; nothing "
                "would be distilled"
            )
        return problems


OLD_KEYS = {
    "loss.patch_loss": "loss.terms.patch.weight",
    "loss.matching": "loss.terms.patch.matching",
    "loss.match_threshold": "loss.terms.patch.match_threshold",
    "loss.patch_pairs_per_view": "loss.terms.patch.pairs_per_view",
}
"""Keys of earlier versions and the keys they are now; files and overrides still load."""

__all__ = [
    "OLD_KEYS",
    "CentreMode",
    "CentreTokens",
    "Centring",
    "ClsTermConfig",
    "ClsWeighting",
    "KoLeoTermConfig",
    "LossConfig",
    "LossKernel",
    "MaskedTermConfig",
    "MatchMode",
    "PatchTermConfig",
    "TermConfig",
    "TermsConfig",
]
