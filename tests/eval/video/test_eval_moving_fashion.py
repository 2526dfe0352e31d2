"""Moving Fashion-MNIST: deterministic bytes, masks from the garment pixels, DAVIS layout."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from patchdino.eval.common.garments import GARMENT_THRESHOLD
from patchdino.eval.video.davis import find_sequences, read_frame, read_mask
from patchdino.eval.video.moving_fashion import (
    VideoSettings,
    fold,
    generate_videos,
    write_moving_fashion,
)

SETTINGS = VideoSettings(num_videos=3, num_frames=5, seed=7)


def garments(count: int = 10) -> torch.Tensor:
    """``(count, 28, 28)`` uint8: bright blobs with a faint halo below the threshold."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, GARMENT_THRESHOLD, (count, 28, 28), generator=gen)
    for i in range(count):
        top, left = 4 + i % 5, 3 + i % 7
        images[i, top : top + 16, left : left + 12] = 120 + 10 * i
    return images.to(torch.uint8)


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    first = write_moving_fashion(garments(), tmp_path / "one", SETTINGS)
    write_moving_fashion(garments(), tmp_path / "two", SETTINGS)
    write_moving_fashion(garments(), tmp_path / "other", replace(SETTINGS, seed=8))
    assert first == ["fashion-000", "fashion-001", "fashion-002"]
    one = digest(tmp_path / "one")
    assert len(one) == 3 * 5 * 2 + 2  # frames, annotations, val.txt, moving_fashion.json
    assert one == digest(tmp_path / "two")
    assert one != digest(tmp_path / "other")


def test_masks_are_the_drawn_garment_pixels() -> None:
    for _, frames, masks, chosen in generate_videos(garments(), SETTINGS):
        assert frames.shape == masks.shape == (5, 84, 112)
        assert 2 <= len(chosen) <= 3 and len(set(chosen)) == len(chosen)
        assert torch.equal(masks > 0, frames > GARMENT_THRESHOLD)
        assert set(masks.unique().tolist()) <= set(range(len(chosen) + 1))
        for k in range(1, len(chosen) + 1):
            assert (masks[0] == k).sum() >= 40  # every garment visible in the first frame


def test_written_layout_reads_back(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    write_moving_fashion(garments(), root, SETTINGS)
    sequences = find_sequences(root)
    assert [s.name for s in sequences] == ["fashion-000", "fashion-001", "fashion-002"]
    _, frames, masks, _ = next(iter(generate_videos(garments(), SETTINGS)))
    first = sequences[0]
    assert all(a is not None for a in first.annotations)
    for t in (0, 4):
        assert torch.equal(read_frame(first.frames[t], channels=1)[0], frames[t])
        path = first.annotations[t]
        assert path is not None and torch.equal(read_mask(path), masks[t])


def test_fold_bounces_between_the_bounds() -> None:
    x = np.array([0.0, 3.0, 10.0, 12.0, 21.0, -2.0])
    assert fold(x, np.array(0.0), np.array(10.0)).tolist() == [0.0, 3.0, 10.0, 8.0, 1.0, 2.0]


def test_bad_settings_and_sources() -> None:
    with pytest.raises(ValueError, match="smaller than the largest garment"):
        VideoSettings(height=40)
    with pytest.raises(ValueError, match="min_objects"):
        VideoSettings(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        next(iter(generate_videos(torch.zeros(4, 16, 16, dtype=torch.uint8), SETTINGS)))
