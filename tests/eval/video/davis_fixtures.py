"""A tiny DAVIS-2017 folder written from hand-made frames and masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from patchdino.eval.video.davis import (
    annotations_dir,
    frames_dir,
    write_frame,
    write_mask,
    write_split,
)


def tiny_masks(num_frames: int, height: int = 24, width: int = 32) -> np.ndarray:
    """``(T, H, W)`` uint8: object 1 a square moving right, object 2 a fixed bar."""
    masks = np.zeros((num_frames, height, width), np.uint8)
    for t in range(num_frames):
        masks[t, 4:12, 2 + t : 10 + t] = 1
        masks[t, 16:20, 4:28] = 2
    return masks


def write_tiny_davis(root: Path, names: tuple[str, ...] = ("a", "b"), num_frames: int = 4) -> Path:
    """Sequences of grey frames (bright where objects are) with every annotation."""
    for name in names:
        masks = tiny_masks(num_frames)
        for t, mask in enumerate(masks):
            frame = (mask * 100 + 20).astype(np.uint8)
            write_frame(frames_dir(root, name) / f"{t:05d}.jpg", np.stack([frame] * 3, -1))
            write_mask(annotations_dir(root, name) / f"{t:05d}.png", mask)
    write_split(root, names)
    return root
