"""DAVIS-2017 layout: palette, mask round trip, sequence discovery and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from davis_fixtures import tiny_masks, write_tiny_davis
from PIL import Image

from patchdino.eval.video.davis import (
    DAVIS_PALETTE,
    DavisLayoutError,
    annotations_dir,
    find_sequences,
    frames_dir,
    read_frame,
    read_mask,
    split_file,
    write_mask,
)


def test_palette_is_the_davis_one() -> None:
    colours = [tuple(DAVIS_PALETTE[3 * i : 3 * i + 3]) for i in range(9)]
    assert colours == [
        (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128),
        (128, 0, 128), (0, 128, 128), (128, 128, 128), (64, 0, 0),
    ]  # fmt: skip
    assert len(DAVIS_PALETTE) == 768


def test_mask_round_trip_with_palette(tmp_path: Path) -> None:
    mask = np.random.default_rng(0).integers(0, 6, (7, 9)).astype(np.uint8)
    path = write_mask(tmp_path / "m" / "00000.png", torch.from_numpy(mask))
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.getpalette()[:24] == DAVIS_PALETTE[:24]
        rgb = np.array(image.convert("RGB"))
    assert torch.equal(read_mask(path), torch.from_numpy(mask))
    assert tuple(rgb[mask == 1][0]) == (128, 0, 0)


def test_rgb_annotation_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rgb.png"
    Image.new("RGB", (4, 4)).save(path)
    with pytest.raises(DavisLayoutError, match="index"):
        read_mask(path)


def test_sequences_are_found_in_list_order(tmp_path: Path) -> None:
    root = write_tiny_davis(tmp_path / "davis", ("b", "a"), num_frames=3)
    (annotations_dir(root, "a") / "00002.png").unlink()
    sequences = find_sequences(root)
    assert [s.name for s in sequences] == ["b", "a"]
    a = sequences[1]
    assert [p.name for p in a.frames] == ["00000.jpg", "00001.jpg", "00002.jpg"]
    assert a.annotations[2] is None and a.annotations[0] is not None
    assert [s.name for s in find_sequences(root, ["a"])] == ["a"]
    frame = read_frame(a.frames[0], channels=1)
    assert frame.shape == (1, 24, 32) and frame.dtype == torch.uint8
    assert read_frame(a.frames[0]).shape == (3, 24, 32)
    assert torch.equal(read_mask(a.annotations[0]), torch.from_numpy(tiny_masks(1)[0]))


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DavisLayoutError, match="does not exist"):
        find_sequences(tmp_path / "nowhere")
    root = write_tiny_davis(tmp_path / "davis", ("a", "b"), num_frames=2)
    with pytest.raises(DavisLayoutError, match="'c' is not listed"):
        find_sequences(root, ["c"])
    (annotations_dir(root, "b") / "00000.png").unlink()
    with pytest.raises(DavisLayoutError, match="'b' has no annotation of its first frame"):
        find_sequences(root)
    write_mask(annotations_dir(root, "b") / "00000.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(DavisLayoutError, match="5x5 pixels but the first frame is 32x24"):
        find_sequences(root)
    for path in frames_dir(root, "a").iterdir():
        path.unlink()
    with pytest.raises(DavisLayoutError, match="'a' has no frames"):
        find_sequences(root)
    split_file(root).unlink()
    with pytest.raises(DavisLayoutError, match=r"val\.txt is missing"):
        find_sequences(root)
