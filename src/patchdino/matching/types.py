"""Result type of the patch matchers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PatchMatches:
    """Matched patch pairs between view A and view B, for a batch of ``B`` samples.

    Indices are patch indices ``row * n + col`` (0-based, CLS excluded) in each view's own,
    possibly flipped, layout. The CLS pair is implicit and never listed here. Rows are padded to
    a common length ``K``; padded entries hold index 0 and ``valid == False``.

    Attributes:
        index_a: ``(B, K)`` long tensor, patch index in view A.
        index_b: ``(B, K)`` long tensor, patch index in view B.
        valid: ``(B, K)`` bool tensor, True for real pairs.
    """

    index_a: Tensor
    index_b: Tensor
    valid: Tensor

    @property
    def counts(self) -> Tensor:
        """``(B,)`` number of valid pairs per sample."""
        return self.valid.sum(dim=1)

    def swap(self) -> PatchMatches:
        """The same pairs seen from view B's side."""
        return PatchMatches(self.index_b, self.index_a, self.valid)

    def to(self, device: torch.device | str) -> PatchMatches:
        return PatchMatches(self.index_a.to(device), self.index_b.to(device), self.valid.to(device))

    def pairs(self, sample: int) -> list[tuple[int, int]]:
        """Valid pairs of one sample as a Python list of ``(index_a, index_b)``."""
        keep = self.valid[sample]
        a = self.index_a[sample][keep].tolist()
        b = self.index_b[sample][keep].tolist()
        return list(zip(a, b))
