"""Sampling of matched patch pairs (loss.terms.patch.pairs_per_view)."""

from __future__ import annotations

import pytest
import torch

from patchdino.config import ConfigError, load_config
from patchdino.data.multicrop import MultiCropAugmentation, MultiCropSpec
from patchdino.losses import LocalGlobalLoss
from patchdino.matching.types import PatchMatches
from patchdino.models import StudentTeacher
from patchdino.train.step import PretrainStep, sample_matches


def _matches(seed: int = 0, batch: int = 6, width: int = 20) -> PatchMatches:
    g = torch.Generator().manual_seed(seed)
    index_a = torch.randperm(batch * width, generator=g).view(batch, width)  # all distinct
    index_b = index_a + 1000
    valid = torch.rand(batch, width, generator=g) < 0.7
    valid[0] = True  # a full row
    valid[1] = False  # an empty row
    valid[2, :3] = True
    valid[2, 3:] = False  # fewer valid pairs than the limit
    return PatchMatches(index_a, index_b, valid)


def _pairs(m: PatchMatches, b: int) -> set[tuple[int, int]]:
    return set(m.pairs(b))


def test_keeps_at_most_n_valid_pairs_chosen_among_the_valid_ones() -> None:
    m = _matches()
    out = sample_matches(m, 5, torch.Generator().manual_seed(1))
    assert out.valid.shape == (6, 5)
    for b in range(6):
        kept, before = _pairs(out, b), _pairs(m, b)
        assert len(kept) == min(5, len(before)) == int(out.valid[b].sum())
        assert kept <= before  # only real pairs, index_a and index_b kept together
    assert _pairs(out, 2) == _pairs(m, 2)  # fewer than the limit: all kept


def test_zero_or_a_large_limit_keeps_everything() -> None:
    m = _matches()
    assert sample_matches(m, 0) is m
    assert sample_matches(m, 20) is m
    with pytest.raises(ValueError, match=">= 0"):
        sample_matches(m, -1)


def test_choices_change_with_the_generator_and_repeat_with_its_seed() -> None:
    m = _matches()

    def kept(seed: int) -> list[set[tuple[int, int]]]:
        out = sample_matches(m, 4, torch.Generator().manual_seed(seed))
        return [_pairs(out, b) for b in range(6)]

    assert kept(3) == kept(3)
    assert kept(3) != kept(4)
    # Across many draws every valid pair of the full row gets chosen (uniform subsets).
    seen: set[tuple[int, int]] = set()
    for seed in range(60):
        seen |= kept(seed)[0]
    assert seen == _pairs(m, 0)


def test_pretrain_step_plan_samples_pairs_per_sample_and_view_pair() -> None:
    spec = MultiCropSpec(
        global_size=32, local_size=16, num_local=2, patch_size=8, photometric=False
    )
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    batch = MultiCropAugmentation(spec)(images, generator=torch.Generator().manual_seed(0))
    model = StudentTeacher.create(
        "vit_pico", patch_size=8, img_size=32, out_dim=16, hidden_dim=8, bottleneck_dim=4
    )

    def plan(limit: int, seed: int) -> tuple[float, torch.Tensor]:
        loss = LocalGlobalLoss(16, 16, num_local_patches=4)
        step = PretrainStep(model, loss, "grid", 0.5, patch_pairs_per_view=limit)
        p = step.plan(batch, torch.Generator().manual_seed(seed))
        assert p.patch is not None
        return float(p.matched_patches), p.patch.student.positions

    full, _ = plan(0, 0)
    two, rows_a = plan(2, 0)
    _, rows_b = plan(2, 1)
    assert full > 2 and 0 < two <= 2
    assert not torch.equal(rows_a, rows_b) or rows_a.shape != rows_b.shape
    with pytest.raises(ValueError, match="patch_pairs_per_view"):
        PretrainStep(model, LocalGlobalLoss(16, 16), "grid", 0.5, patch_pairs_per_view=-1)


def test_config_field_is_validated() -> None:
    assert (
        load_config(None, ["loss.terms.patch.pairs_per_view=8"]).loss.terms.patch.pairs_per_view
        == 8
    )
    assert load_config(None).loss.terms.patch.pairs_per_view == 0
    with pytest.raises(ConfigError, match=r"loss\.terms\.patch\.pairs_per_view"):
        load_config(None, ["loss.terms.patch.pairs_per_view=-1"])
