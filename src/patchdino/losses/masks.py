"""Block-wise masks of the student's global views (BEiT, iBOT, DINOv2's ``MaskingGenerator``).

Of the ``n = B * G`` global-view images of a batch (``G`` global views), ``int(n * p)`` are
masked (``p`` the masking probability), chosen at random. As in DINOv2 their mask ratios are
stratified: sorted into ``int(n * p)`` equal strata of ``[r_min, r_max]``, one uniform draw
in each, the strata shuffled over the masked images. An image with ratio ``r`` hides about
``r * N`` of its ``N`` patches as a union of rectangular blocks: each proposal draws an area
between ``min_block`` patches and what is still to hide, a log-uniform aspect ratio in
``[0.3, 1 / 0.3]`` and a position, and is kept only if it hides at least one new patch and
no more than are still to hide. Every draw of the batch is made at once from one generator
(no per-image loop, no host synchronisation), so the masks repeat exactly from its state.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from patchdino.config.loss import MaskedTermConfig


class BlockMasking:
    """Draws block-wise patch masks for the global views of a batch.

    Args:
        ratio: ``(r_min, r_max)`` range of the share of patches a masked image hides, in
            ``[0, 1)``.
        probability: share of the global-view images that are masked at all.
        min_block: smallest block area, in patches (DINOv2: 4).
        proposals: block proposals per image (each kept or rejected as above).
    """

    def __init__(
        self,
        ratio: tuple[float, float] = (0.1, 0.5),
        probability: float = 0.5,
        min_block: int = 4,
        proposals: int = 32,
    ) -> None:
        problems = MaskedTermConfig(weight=1.0, ratio=ratio, probability=probability).rules("")
        if problems:
            raise ValueError(problems[0])
        if min_block < 1 or proposals < 1:
            raise ValueError(f"min_block and proposals must be >= 1, got {min_block}, {proposals}")
        self.ratio = ratio
        self.probability = probability
        self.min_block = min_block
        self.proposals = proposals

    @classmethod
    def from_config(cls, section: MaskedTermConfig) -> BlockMasking:
        """The masking of the ``loss.terms.masked`` section."""
        return cls(tuple(section.ratio), section.probability)  # type: ignore[arg-type]

    def __call__(
        self,
        num_views: int,
        batch_size: int,
        grid: tuple[int, int],
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> list[Tensor]:
        """Masks of ``num_views`` global views of ``batch_size`` images.

        Args:
            num_views: global views ``G``.
            batch_size: ``B``.
            grid: ``(h, w)`` patches of a global view.
            generator: source of every draw (on ``device``); None uses torch's global one.
            device: where the masks are made.

        Returns:
            ``G`` bool tensors ``(B, h * w)``, True for a hidden patch.
        """
        h, w = grid
        n, patches = num_views * batch_size, h * w

        def uniform(*shape: int) -> Tensor:
            source = generator.device if generator is not None else device
            return torch.rand(shape, generator=generator, device=source).to(device)

        masked = int(n * self.probability)
        low, high = self.ratio
        strata = torch.arange(masked, device=device, dtype=torch.float32)
        ratios = low + (high - low) * (strata + uniform(masked)) / max(masked, 1)  # (masked,)
        which = uniform(n).argsort()[:masked]  # the masked images, in random order
        target = torch.zeros(n, device=device)
        target[which] = ratios
        remaining = (target * patches).round()  # (n,) patches still to hide
        mask = torch.zeros(n, h, w, dtype=torch.bool, device=device)
        rows = torch.arange(h, device=device)[None, :, None]  # (1, h, 1)
        cols = torch.arange(w, device=device)[None, None, :]  # (1, 1, w)
        draws = uniform(self.proposals, 4, n)  # area, aspect, top, left per proposal
        log_aspect = math.log(0.3)
        for k in range(self.proposals):
            area_u, aspect_u, top_u, left_u = draws[k]
            area = self.min_block + area_u * (remaining - self.min_block).clamp_min(0)
            aspect = torch.exp(log_aspect + aspect_u * (-2 * log_aspect))
            bh = torch.sqrt(area * aspect).round().clamp(1, h)  # (n,)
            bw = torch.sqrt(area / aspect).round().clamp(1, w)
            top = (top_u * (h - bh + 1)).floor()
            left = (left_u * (w - bw + 1)).floor()
            block = (
                (rows >= top[:, None, None])
                & (rows < (top + bh)[:, None, None])
                & (cols >= left[:, None, None])
                & (cols < (left + bw)[:, None, None])
            )  # (n, h, w)
            new = block & ~mask
            added = new.flatten(1).sum(dim=1)  # (n,)
            keep = (added > 0) & (added <= remaining)
            mask |= new & keep[:, None, None]
            remaining = remaining - added * keep
        return list(mask.reshape(num_views, batch_size, patches).unbind(0))
