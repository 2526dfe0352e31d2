"""Seeded strong copies of images: the queries of a copy-detection benchmark.

Each copy is a crop keeping 10-50% of the original's area, then, each with its own chance, a
rotation of up to 30 degrees either way, a horizontal flip, colour jitter, conversion to
grayscale (colour images), a Gaussian blur and a pasted patch of another image; then a resize
to 50-150% and JPEG compression at quality 10-50 (the file written). The random choices of
copy ``i`` come from a generator seeded by ``(seed, i)`` alone, so the same seed writes the
same bytes, and a larger ``count`` only adds copies.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from patchdino.data.datasets import CanvasDataset
from patchdino.errors import InputError
from patchdino.eval.retrieval.options import CopySettings

GROUND_TRUTH = "ground_truth.json"
"""File of the query -> original mapping written next to the queries folder."""
MANIFEST = "copies.json"
"""File of the parameters of every copy."""
QUERIES = "queries"
"""Sub-folder of the query images."""
MIN_SIDE = 8
"""Smallest side of a copy in pixels, after cropping and resizing."""


class CopyError(InputError):
    """Copies cannot be made as asked; the message says why."""


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def random_crop_box(
    height: int, width: int, area: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a crop keeping a share of ``area`` of the image, aspect ratio
    3:4 to 4:3 (clipped to the image, so a thin image may keep more)."""
    share = _uniform(rng, area)
    ratio = math.exp(_uniform(rng, (math.log(3 / 4), math.log(4 / 3))))
    target = share * height * width
    h = min(height, max(1, round(math.sqrt(target / ratio))))
    w = min(width, max(1, round(target / h)))
    top = int(rng.integers(0, height - h + 1))
    left = int(rng.integers(0, width - w + 1))
    return top, left, h, w


def strong_copy(
    image: Tensor, other: Tensor, rng: np.random.Generator, settings: CopySettings = CopySettings()
) -> tuple[bytes, dict[str, Any]]:
    """One strong copy of ``image``, encoded as JPEG.

    Args:
        image: ``(C, H, W)`` uint8 original, C in (1, 3).
        other: ``(C, h, w)`` uint8 image a patch may be pasted from.
        rng: the copy's own generator.
        settings: ranges and chances of the transforms.

    Returns:
        The JPEG file's bytes and the parameters drawn (JSON-ready).
    """
    channels, height, width = (int(s) for s in image.shape)
    top, left, h, w = random_crop_box(height, width, settings.area, rng)
    params: dict[str, Any] = {"crop": [top, left, h, w], "area": h * w / (height * width)}
    x = image[:, top : top + h, left : left + w].float()  # (C, h, w)
    # Each transform draws its numbers whether applied or not, so one change of chance
    # leaves the other draws of the copy in place.
    draws = rng.uniform(size=6)
    angle = _uniform(rng, (-settings.angle, settings.angle))
    factors = rng.uniform(0.6, 1.4, size=3)
    sigma_share = _uniform(rng, (0.005, 0.02))
    patch_share = _uniform(rng, (0.05, 0.2))
    patch_pos = rng.uniform(size=4)
    scale = _uniform(rng, settings.scale)
    quality = int(rng.integers(settings.quality[0], settings.quality[1] + 1))
    if draws[0] < settings.p_rotate:
        x = TF.rotate(x, angle, interpolation=InterpolationMode.BILINEAR, fill=0.0)
        params["angle"] = angle
    if draws[1] < settings.p_flip:
        x = TF.horizontal_flip(x)
        params["flip"] = True
    if draws[2] < settings.p_jitter:
        x = TF.adjust_brightness(x / 255.0, float(factors[0]))
        x = TF.adjust_contrast(x, float(factors[1]))
        if channels == 3:
            x = TF.adjust_saturation(x, float(factors[2]))
        x = x.clamp(0, 1) * 255.0
        params["jitter"] = [float(f) for f in factors]
    if channels == 3 and draws[3] < settings.p_gray:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
        params["gray"] = True
    if draws[4] < settings.p_blur:
        sigma = max(0.3, sigma_share * max(h, w))
        kernel = 2 * math.ceil(3 * sigma) + 1
        x = TF.gaussian_blur(x, [kernel, kernel], [sigma, sigma])
        params["blur"] = sigma
    if draws[5] < settings.p_overlay:
        x = _paste(x, other.float(), patch_share, patch_pos)
        params["overlay"] = patch_share
    out_h = max(MIN_SIDE, round(h * scale))
    out_w = max(MIN_SIDE, round(w * scale))
    x = TF.resize(x, [out_h, out_w], antialias=True)
    params.update(size=[out_h, out_w], quality=quality)
    array = x.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()  # (h, w, C)
    picture = Image.fromarray(array[:, :, 0] if channels == 1 else array)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue(), params


def _paste(x: Tensor, other: Tensor, share: float, position: np.ndarray) -> Tensor:
    """``x`` (``(C, h, w)`` float) with a rectangle of ``other`` covering ``share`` of it."""
    _, h, w = x.shape
    ph = min(h, max(1, round(math.sqrt(share * h * w))))
    pw = min(w, max(1, round(share * h * w / ph)))
    oh, ow = other.shape[1:]
    sh, sw = min(ph, oh), min(pw, ow)
    src_top = int(position[0] * (oh - sh + 1))
    src_left = int(position[1] * (ow - sw + 1))
    patch = other[:, src_top : src_top + sh, src_left : src_left + sw]
    patch = TF.resize(patch, [ph, pw], antialias=True) if (sh, sw) != (ph, pw) else patch
    top = int(position[2] * (h - ph + 1))
    left = int(position[3] * (w - pw + 1))
    out = x.clone()
    out[:, top : top + ph, left : left + pw] = patch
    return out


def _region(dataset: CanvasDataset, index: int) -> Tensor:
    """``(C, h, w)`` uint8 valid region of item ``index``."""
    image, size, _ = dataset[index]
    return image[:, : int(size[0]), : int(size[1])]


@dataclass(frozen=True)
class QuerySet:
    """What :func:`make_queries` wrote.

    Attributes:
        folder: the queries folder.
        ground_truth: the JSON file mapping each query file to its original's name.
        manifest: the JSON file of the parameters of every copy.
        count: number of queries.
    """

    folder: Path
    ground_truth: Path
    manifest: Path
    count: int


def make_queries(
    dataset: CanvasDataset,
    names: list[str],
    out: Path,
    count: int,
    seed: int,
    settings: CopySettings = CopySettings(),
    source: str = "",
    progress: bool = True,
) -> QuerySet:
    """Write ``count`` strong copies of distinct images of ``dataset`` and their ground truth.

    Args:
        dataset: the originals (decode at native size: ``canvas=None``).
        names: name of each original in the ground truth (see
            :meth:`patchdino.data.datasets.CanvasDataset.item_names`).
        out: folder receiving ``queries/NNNNN.jpg``, :data:`GROUND_TRUTH` and :data:`MANIFEST`.
        count: number of copies, at most the number of originals.
        seed: seed of the choice of originals and of every copy.
        settings: ranges and chances of the transforms.
        source: description of the originals recorded in the manifest.
        progress: show a progress bar.

    Raises:
        CopyError: ``count`` out of range, or a queries folder that already holds files.
    """
    n = len(dataset)
    if len(names) != n:
        raise CopyError(f"{len(names)} names for {n} images")
    if not 1 <= count <= n:
        raise CopyError(
            f"the number of copies must lie in [1, {n}] (one per original), got {count}"
        )
    folder = out / QUERIES
    if folder.is_dir() and any(folder.iterdir()):
        raise CopyError(f"{folder} already holds files; give an empty or new --out folder")
    folder.mkdir(parents=True, exist_ok=True)
    originals = np.random.default_rng([seed, n]).permutation(n)[:count]
    width = max(5, len(str(count - 1)))
    truth: dict[str, list[str]] = {}
    records = []
    for i in tqdm(range(count), desc="copies", disable=not progress):
        rng = np.random.default_rng([seed, i])
        index = int(originals[i])
        other = (index + 1 + int(rng.integers(0, max(1, n - 1)))) % n
        data, params = strong_copy(_region(dataset, index), _region(dataset, other), rng, settings)
        name = f"{i:0{width}d}.jpg"
        (folder / name).write_bytes(data)
        truth[name] = [names[index]]
        records.append({"query": name, "original": names[index], "overlay": names[other], **params})
    ground_truth = out / GROUND_TRUTH
    ground_truth.write_text(json.dumps(truth, indent=1) + "\n")
    manifest = out / MANIFEST
    manifest.write_text(
        json.dumps(
            {
                "seed": seed,
                "count": count,
                "source": source,
                "settings": asdict(settings),
                "copies": records,
            },
            indent=1,
        )
        + "\n"
    )
    return QuerySet(folder, ground_truth, manifest, count)
