"""Writers of tiny segmentation data sets in the Pascal VOC and ADE20K layouts, for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def scene(height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image with one coloured rectangle on a grey background, and its class mask.

    Returns:
        ``(H, W, 3)`` uint8 image and ``(H, W)`` uint8 mask: 0 background, ``1 + seed % 2``
        on the rectangle (red for class 1, blue for class 2).
    """
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 110, np.uint8) + rng.integers(0, 10, (height, width, 3))
    mask = np.zeros((height, width), np.uint8)
    label = 1 + seed % 2
    top, left = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
    bottom, right = top + height // 2, left + width // 2
    mask[top:bottom, left:right] = label
    image[top:bottom, left:right] = (230, 30, 30) if label == 1 else (30, 30, 230)
    return image.astype(np.uint8), mask


def write_voc(root: Path, sizes: dict[str, list[tuple[int, int]]]) -> Path:
    """A VOC-layout folder: ``{"train": [(h, w), ...], "val": [...]}`` scenes, palette PNG
    masks with a 255 border around each rectangle."""
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "SegmentationClass").mkdir(exist_ok=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    seed = 0
    for split, shapes in sizes.items():
        names = []
        for h, w in shapes:
            image, mask = scene(h, w, seed)
            border = (np.roll(mask, 1, 0) != mask) | (np.roll(mask, 1, 1) != mask)
            mask[border] = 255
            name = f"2007_{seed:06d}"
            Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
            png = Image.fromarray(mask, mode="P")
            png.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
            png.save(root / "SegmentationClass" / f"{name}.png")
            names.append(name)
            seed += 1
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def write_ade(root: Path, sizes: dict[str, list[tuple[int, int]]]) -> Path:
    """An ADE20K-layout folder; stored mask values are the class + 1 (0 = other)."""
    seed = 0
    for split, shapes in sizes.items():
        folder = {"train": "training", "val": "validation"}[split]
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / folder).mkdir(parents=True, exist_ok=True)
        for h, w in shapes:
            image, mask = scene(h, w, seed)
            name = f"ADE_{folder}_{seed:08d}"
            Image.fromarray(image).save(root / "images" / folder / f"{name}.jpg", quality=95)
            Image.fromarray(mask + 1, mode="L").save(root / "annotations" / folder / f"{name}.png")
            seed += 1
    return root
