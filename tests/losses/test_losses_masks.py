"""Block-wise masks: how many images, how many patches, blocks, and repeatable draws."""

from __future__ import annotations

import pytest
import torch

from patchdino.losses.masks import BlockMasking


def test_share_of_masked_images_and_patches() -> None:
    masking = BlockMasking(ratio=(0.1, 0.5), probability=0.5)
    masks = masking(2, 32, (14, 14), torch.Generator().manual_seed(0))
    assert len(masks) == 2 and all(m.shape == (32, 196) and m.dtype == torch.bool for m in masks)
    hidden = torch.cat(masks).sum(dim=1)  # (64,)
    assert int((hidden > 0).sum()) == 32  # int(64 * 0.5) images masked, the others not
    shares = hidden[hidden > 0].double() / 196
    assert float(shares.max()) <= 0.5 + 1 / 196
    assert float(shares.min()) >= 0.1 - 4 / 196  # short of the target by less than a block
    assert float(shares.mean()) == pytest.approx(0.3, abs=0.05)


def test_masks_are_blocks() -> None:
    masks = BlockMasking(ratio=(0.3, 0.3), probability=1.0)(1, 8, (10, 10))
    grid = masks[0].reshape(8, 10, 10)
    for image in grid:
        # Most hidden patches have a hidden neighbour: blocks, not scattered patches.
        padded = torch.nn.functional.pad(image.float()[None, None], (1, 1, 1, 1))[0, 0]
        neighbours = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
        assert float((neighbours[image] > 0).float().mean()) > 0.9


def test_the_same_generator_state_gives_the_same_masks() -> None:
    masking = BlockMasking()
    first = masking(2, 6, (4, 4), torch.Generator().manual_seed(3))
    again = masking(2, 6, (4, 4), torch.Generator().manual_seed(3))
    other = masking(2, 6, (4, 4), torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize(
    ("ratio", "probability", "fragment"),
    [((0.2, 1.0), 0.5, "ratio must satisfy 0 <= min <= max < 1"), ((0.1, 0.5), 1.5, "probability")],
)
def test_bad_settings(ratio: tuple[float, float], probability: float, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        BlockMasking(ratio, probability)
