"""Moving Fashion-MNIST: short synthetic videos of garments for label propagation.

Each video shows 2 to 3 Fashion-MNIST test images (distinct garments) on a black canvas,
each moving on a straight line that bounces off the canvas sides and growing or shrinking
steadily between 1x and 1.6x its 28 px size. Garments are drawn back to front in a fixed
order, so later ones hide earlier ones where they overlap.

A garment's pixels are those whose intensity, after bilinear resizing, is above
:data:`GARMENT_THRESHOLD` (of 255); only those are drawn, and the annotation gives them the
garment's id (1 for the back one, 2, 3 in drawing order) where they are visible, 0 elsewhere.
The videos are written in the DAVIS-2017 layout (:mod:`patchdino.eval.video.davis`: grey PNG
frames, palette PNG annotations for every frame, ``ImageSets/2017/val.txt``) together with
``moving_fashion.json`` (settings and the test images used), and depend only on the seed:
the same seed writes the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from patchdino.eval.common.garments import GARMENT_THRESHOLD
from patchdino.eval.video.davis import (
    annotations_dir,
    frames_dir,
    write_frame,
    write_mask,
    write_split,
)

SIDE = 28
MIN_VISIBLE = 40
"""Pixels each garment shows in the first frame at least (drawing parameters are redrawn
until it does)."""


@dataclass(frozen=True)
class VideoSettings:
    """What the videos look like.

    Attributes:
        num_videos: number of sequences.
        num_frames: frames per sequence.
        height: canvas height in pixels.
        width: canvas width in pixels.
        min_objects: fewest garments in a video.
        max_objects: most garments in a video.
        min_scale: smallest garment scale (1 = 28 px).
        max_scale: largest garment scale.
        max_speed: largest speed of a garment's centre, pixels per frame.
        threshold: garment intensity threshold (see :data:`GARMENT_THRESHOLD`).
        seed: seed of every random choice.
    """

    num_videos: int = 30
    num_frames: int = 20
    height: int = 84
    width: int = 112
    min_objects: int = 2
    max_objects: int = 3
    min_scale: float = 1.0
    max_scale: float = 1.6
    max_speed: float = 3.0
    threshold: int = GARMENT_THRESHOLD
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_videos < 1 or self.num_frames < 1:
            raise ValueError("num_videos and num_frames must be at least 1")
        if not 1 <= self.min_objects <= self.max_objects <= 255:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects <= 255, got {self.min_objects}, "
                f"{self.max_objects}"
            )
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {self.min_scale}")
        largest = round(SIDE * self.max_scale)
        if self.height < largest or self.width < largest:
            raise ValueError(
                f"canvas {self.height}x{self.width} is smaller than the largest garment "
                f"({largest} px)"
            )
        if not 0 <= self.threshold < 255:
            raise ValueError(f"threshold must be in 0..254, got {self.threshold}")


def fold(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Positions of points moving freely, bounced back into ``[low, high]`` (a triangle wave).

    All arguments broadcast together; where ``high <= low`` the result is ``low``.
    """
    span = np.maximum(high - low, 1e-9)
    phase = np.mod(x - low, 2 * span)
    return low + np.where(phase > span, 2 * span - phase, phase)


def _resized(garment: Tensor, size: int) -> Tensor:
    """``(28, 28)`` uint8 to ``(size, size)`` float intensities (bilinear, antialiased)."""
    x = garment.float()[None, None]
    out = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0].round().clamp(0, 255)


def render_video(
    garments: Tensor, rng: np.random.Generator, settings: VideoSettings
) -> tuple[Tensor, Tensor]:
    """Draw one video.

    Args:
        garments: ``(K, 28, 28)`` uint8 images, back to front.
        rng: source of the motion and scale parameters.
        settings: canvas size, frame count, scales, speed and threshold.

    Returns:
        ``(T, H, W)`` uint8 frames and ``(T, H, W)`` uint8 annotations (0 background, ``k``
        the ``k``-th garment).
    """
    while True:
        frames, masks = _draw(garments, rng, settings)
        visible = torch.stack([(masks[0] == k + 1).sum() for k in range(len(garments))])
        if int(visible.min()) >= MIN_VISIBLE:
            return frames, masks


def _draw(garments: Tensor, rng: np.random.Generator, s: VideoSettings) -> tuple[Tensor, Tensor]:
    count, steps = len(garments), np.arange(s.num_frames, dtype=np.float64)
    scale_start = rng.uniform(s.min_scale, s.max_scale, count)
    scale_end = rng.uniform(s.min_scale, s.max_scale, count)
    progress = steps / max(s.num_frames - 1, 1)
    scales = scale_start[:, None] + (scale_end - scale_start)[:, None] * progress  # (K, T)
    sizes = np.rint(SIDE * scales).astype(np.int64)  # (K, T)
    angle = rng.uniform(0, 2 * np.pi, count)
    speed = rng.uniform(0.3, 1.0, count) * s.max_speed
    start_y = rng.uniform(0, s.height, count)
    start_x = rng.uniform(0, s.width, count)
    half = sizes / 2  # (K, T)
    travel = speed[:, None] * steps  # (K, T)
    centre_y = fold(start_y[:, None] + travel * np.sin(angle)[:, None], half, s.height - half)
    centre_x = fold(start_x[:, None] + travel * np.cos(angle)[:, None], half, s.width - half)
    tops = np.clip(np.rint(centre_y - half), 0, s.height - sizes).astype(np.int64)  # (K, T)
    lefts = np.clip(np.rint(centre_x - half), 0, s.width - sizes).astype(np.int64)
    frames = torch.zeros(s.num_frames, s.height, s.width, dtype=torch.uint8)
    masks = torch.zeros_like(frames)
    for k in range(count):
        for t in range(s.num_frames):
            size, top, left = int(sizes[k, t]), int(tops[k, t]), int(lefts[k, t])
            image = _resized(garments[k], size)  # (size, size)
            inside = image > s.threshold
            frames[t, top : top + size, left : left + size][inside] = image[inside].to(torch.uint8)
            masks[t, top : top + size, left : left + size][inside] = k + 1
    return frames, masks


def generate_videos(
    images: Tensor, settings: VideoSettings
) -> Iterator[tuple[str, Tensor, Tensor, list[int]]]:
    """The videos of ``settings``, drawn from ``images``.

    Args:
        images: ``(N, 28, 28)`` uint8 source images (Fashion-MNIST's test set).
        settings: what to draw, including the seed.

    Yields:
        ``(name, frames (T, H, W) uint8, masks (T, H, W) uint8, source indices)`` per video;
        names are ``fashion-000``, ``fashion-001``, ...
    """
    if images.ndim != 3 or tuple(images.shape[1:]) != (SIDE, SIDE):
        raise ValueError(f"expected (N, 28, 28) source images, got {tuple(images.shape)}")
    rng = np.random.default_rng(settings.seed)
    for index in range(settings.num_videos):
        count = int(rng.integers(settings.min_objects, settings.max_objects + 1))
        if count > len(images):
            raise ValueError(f"{count} garments needed but only {len(images)} images given")
        chosen = [int(i) for i in rng.choice(len(images), size=count, replace=False)]
        frames, masks = render_video(images[chosen], rng, settings)
        yield f"fashion-{index:03d}", frames, masks, chosen


def write_moving_fashion(images: Tensor, root: Path, settings: VideoSettings) -> list[str]:
    """Write the videos in the DAVIS-2017 layout under ``root``.

    Args:
        images: ``(N, 28, 28)`` uint8 source images.
        root: output folder (created; existing sequences of the same names are overwritten).
        settings: what to draw.

    Returns:
        The sequence names, also listed in ``root/ImageSets/2017/val.txt``.
    """
    root = Path(root)
    names, sources = [], {}
    for name, frames, masks, chosen in generate_videos(images, settings):
        for t in range(len(frames)):
            write_frame(frames_dir(root, name) / f"{t:05d}.png", frames[t])
            write_mask(annotations_dir(root, name) / f"{t:05d}.png", masks[t])
        names.append(name)
        sources[name] = chosen
    write_split(root, names)
    record = {
        "settings": asdict(settings),
        "source": "Fashion-MNIST test images",
        "images": sources,
    }
    (root / "moving_fashion.json").write_text(json.dumps(record, indent=1) + "\n")
    return names


def fashion_test_images(folder: Path | None = None) -> Tensor:
    """Fashion-MNIST's 10,000 test images, ``(10000, 28, 28)`` uint8.

    Args:
        folder: folder of the IDX files (or its ``raw/`` parent); None reads
            :data:`patchdino.data.datasets.DEFAULT_FASHION_MNIST_DIR`.

    Raises:
        ValueError: the test files are missing or unreadable (one line).
    """
    from patchdino.data.datasets import DEFAULT_FASHION_MNIST_DIR, IdxDataset

    root = DEFAULT_FASHION_MNIST_DIR if folder is None else Path(folder)
    return IdxDataset(root, "test").images[:, 0].contiguous()
