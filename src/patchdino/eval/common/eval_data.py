"""Deterministic evaluation images: data set splits, the evaluation transform and loaders.

The data sets yield uint8 images on a canvas with their valid region (see
:mod:`patchdino.data.datasets`). For evaluation each valid region becomes one square image of
``size`` pixels, without randomness:

- in-memory data sets (CIFAR, MNIST-like): the whole image is resized to ``size``;
- image files (ImageFolder, flat folders): DINO's evaluation transform, the shorter side
  resized to ``size * 256 / 224`` (aspect kept), then the central ``size`` square.

Evaluation never invents data: an unreadable image file (zero bytes, truncated, not an image)
is left out of its split, named once in the log and listed by :func:`left_out_images`, or it
stops the evaluation (``on_bad_image="fail"``). Training instead replaces such a file by a
neighbour, which would make an evaluation row describe another image.

Resizing runs in the loader workers on uint8 images (bicubic, antialiased, rounded back to
uint8, as a PIL pipeline would); :class:`Normalise` then maps the batch to float on the model's
device with the training statistics.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from patchdino.data.datasets import FILE_KINDS, CanvasDataset, build_dataset, detect_kind
from patchdino.data.datasets.bad_images import BadImageError, BadImageLog, check_policy
from patchdino.data.datasets.base import CanvasItem
from patchdino.data.datasets.canvas import decode_image
from patchdino.data.datasets.files import ImageFileDataset
from patchdino.data.datasets.kinds import FILE_CANVAS
from patchdino.error_text import first_line
from patchdino.errors import InputError

CROP_RATIO = 224 / 256
"""Share of the resized shorter side kept by the centre crop (DINO: 224 of 256)."""
EVAL_MODES = ("resize", "center_crop")
SCAN_CANVAS = 8
"""Canvas of the check that every file of a split decodes (small: JPEGs decode at 1/8 scale)."""
_LEFT_OUT = "left_out_images"

logger = logging.getLogger("patchdino.eval")


class EvalDataError(InputError):
    """An evaluation split cannot be opened; the one-line message says why."""


def eval_mode(kind: str) -> str:
    """``"center_crop"`` for image files, ``"resize"`` for in-memory data sets."""
    return "center_crop" if kind in FILE_KINDS else "resize"


def resize_shorter_side(height: int, width: int, side: int) -> tuple[int, int]:
    """``(h, w)`` once the shorter side equals ``side``, the longer one scaled and truncated
    (as torchvision's ``Resize(int)``)."""
    if height <= width:
        return side, max(side, int(side * width / height))
    return max(side, int(side * height / width)), side


def eval_resize(image: Tensor, size: Tensor, out_size: int | None, mode: str) -> Tensor:
    """The evaluation view of one canvas image.

    Args:
        image: ``(C, Hc, Wc)`` uint8 canvas.
        size: ``(2,)`` valid ``[h, w]`` at the canvas's top-left.
        out_size: side ``S`` of the square output; None returns the valid region unchanged.
        mode: ``"resize"`` (the region squeezed to ``S x S``) or ``"center_crop"`` (shorter
            side to ``round(S / CROP_RATIO)``, then the central ``S x S``).

    Returns:
        ``(C, S, S)`` uint8 image (``(C, h, w)`` when ``out_size`` is None).
    """
    if mode not in EVAL_MODES:
        raise ValueError(f"mode must be one of {EVAL_MODES}, got {mode!r}")
    h, w = int(size[0]), int(size[1])
    region = image[:, :h, :w]  # (C, h, w)
    if out_size is None:
        return region
    if mode == "resize":
        return resize_images(region[None], out_size, out_size)[0]
    rh, rw = resize_shorter_side(h, w, round(out_size / CROP_RATIO))
    resized = resize_images(region[None], rh, rw)[0]  # (C, rh, rw)
    top = round((rh - out_size) / 2.0)
    left = round((rw - out_size) / 2.0)
    return resized[:, top : top + out_size, left : left + out_size]


def resize_images(images: Tensor, height: int, width: int) -> Tensor:
    """``(B, C, h, w)`` uint8 to ``(B, C, height, width)`` uint8, bicubic and antialiased."""
    if tuple(images.shape[-2:]) == (height, width):
        return images
    out = F.interpolate(
        images.float(), size=(height, width), mode="bicubic", align_corners=False, antialias=True
    )
    return out.round_().clamp_(0, 255).to(torch.uint8)


class EvalCollate:
    """Collate canvas items into ``(images, labels)`` evaluation batches.

    Args:
        out_size: side ``S`` of the images; None keeps native sizes (all must then agree).
        mode: ``"resize"`` or ``"center_crop"`` (see :func:`eval_resize`).
    """

    def __init__(self, out_size: int | None, mode: str) -> None:
        if mode not in EVAL_MODES:
            raise ValueError(f"mode must be one of {EVAL_MODES}, got {mode!r}")
        if out_size is not None and out_size < 1:
            raise ValueError(f"out_size must be positive, got {out_size}")
        self.out_size = out_size
        self.mode = mode

    def __call__(self, items: Sequence[CanvasItem]) -> tuple[Tensor, Tensor]:
        """Items to ``(B, C, S, S)`` uint8 images and ``(B,)`` long labels."""
        labels = torch.tensor([label for _, _, label in items], dtype=torch.long)
        canvases = [image for image, _, _ in items]
        sizes = [tuple(int(v) for v in size) for _, size, _ in items]
        whole = all(s == tuple(c.shape[-2:]) for s, c in zip(sizes, canvases))
        if self.mode == "resize" and whole and len({c.shape for c in canvases}) == 1:
            batch = torch.stack(canvases)  # (B, C, h, w): one resize for all
            if self.out_size is not None:
                batch = resize_images(batch, self.out_size, self.out_size)
            return batch, labels
        views = [eval_resize(c, s, self.out_size, self.mode) for c, s, _ in items]
        shapes = {tuple(v.shape) for v in views}
        if len(shapes) > 1:
            raise EvalDataError(
                f"images of different sizes in one batch ({sorted(shapes)[:3]}); give an "
                "image size for the evaluation"
            )
        return torch.stack(views), labels


class Normalise(nn.Module):
    """uint8 images to float, normalised per channel: ``(x / 255 - mean) / std``.

    Args:
        mean: ``C`` channel means in ``[0, 1]`` units.
        std: ``C`` channel standard deviations.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or not mean or any(s <= 0 for s in std):
            raise ValueError(f"need matching means and positive stds, got {mean} and {std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        """``(B, C, H, W)`` uint8 (or float in ``[0, 255]``) to ``(B, C, H, W)`` float32."""
        if images.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"images have {images.shape[1]} channels, the statistics {self.mean.shape[0]}"
            )
        mean = self.mean.to(images.device)
        std = self.std.to(images.device)
        return (images.float() / 255.0 - mean) / std


def data_kind_of(path: str) -> str:
    """The kind of the data set at ``path``.

    Raises:
        EvalDataError: missing folder or unknown layout (one line).
    """
    try:
        return detect_kind(path)
    except ValueError as err:
        raise EvalDataError(first_line(err)) from err


def file_canvas(out_size: int | None, canvas: int | None = None) -> int:
    """Canvas for image files: ``canvas`` (or the default) and room for a 4:3 image whose
    shorter side is the centre crop's resize target."""
    base = FILE_CANVAS if canvas is None else canvas
    if out_size is None:
        return base
    return max(base, math.ceil(round(out_size / CROP_RATIO) * 4 / 3))


def open_split(
    path: str,
    split: str,
    kind: str,
    channels: int | None,
    out_size: int | None,
    canvas: int | None = None,
    on_bad_image: str = "skip",
) -> CanvasDataset:
    """One split of the data set at ``path``, decoded for evaluation.

    Args:
        path: data set folder.
        split: ``"train"`` (the k-NN memory, the probe's training set), ``"test"`` or
            ``"val"`` (the queries; each falls back on the other).
        kind: the data set kind (see :func:`data_kind_of`).
        channels: 1 or 3 to convert to, or None for the data set's own.
        out_size: evaluation image side (sizes the canvas of image files).
        canvas: canvas of image files (see :func:`file_canvas`); in-memory data sets keep
            their native size.
        on_bad_image: ``"skip"`` leaves unreadable image files out of the split (see
            :func:`readable_items`), ``"fail"`` stops at the first.

    Raises:
        EvalDataError: the split is missing or unreadable, or (with ``"fail"``) holds an
            unreadable image (one line naming it).
    """
    try:
        dataset = build_dataset(
            path,
            kind,
            split,
            canvas=file_canvas(out_size, canvas) if kind in FILE_KINDS else None,
            channels=channels,
            on_bad_image="fail",
        )
    except ValueError as err:
        raise EvalDataError(f"{split} split of {path}: {first_line(err)}") from err
    return readable_items(dataset, on_bad_image, f"{split} split of {path}")


def readable_items(dataset: CanvasDataset, on_bad_image: str, where: str) -> CanvasDataset:
    """``dataset`` without its unreadable image files, each named once in the log.

    Every file is decoded once, small (:data:`SCAN_CANVAS`). The result holds the readable
    items in their order, with their labels and names (:meth:`item_names`), reads with the
    ``"fail"`` policy (a file that breaks later stops the evaluation rather than be
    replaced), and lists the names of the files left out (:func:`left_out_images`).
    In-memory data sets are returned as they are.

    Args:
        dataset: a split opened with ``on_bad_image="fail"``.
        on_bad_image: ``"skip"`` (leave such files out) or ``"fail"``.
        where: the split, as errors and the log name it (``"train split of photos"``).

    Raises:
        EvalDataError: an unknown policy, or an unreadable file with ``"fail"``.
    """
    try:
        check_policy(on_bad_image)
    except ValueError as err:
        raise EvalDataError(str(err)) from err
    if not isinstance(dataset, ImageFileDataset):
        return dataset
    names = dataset.item_names()
    keep: list[int] = []
    left_out: list[str] = []
    for index, path in enumerate(dataset.paths):
        try:
            decode_image(path, dataset.channels, SCAN_CANVAS)
        except BadImageError as err:
            if on_bad_image == "fail":
                raise EvalDataError(
                    f"{where}: cannot read image {path}: {err.reason}; remove or replace "
                    "it, or leave such images out (--on-bad-image skip)"
                ) from err
            logger.warning("leaving out unreadable image %s (%s)", path, err.reason)
            left_out.append(names[index])
            continue
        keep.append(index)
    if len(keep) == len(names):
        setattr(dataset, _LEFT_OUT, [])
        return dataset
    if not keep:
        raise EvalDataError(f"{where}: none of its {len(names)} images can be read")
    readable = copy.copy(dataset)
    readable.paths = [dataset.paths[i] for i in keep]
    readable.labels = dataset.labels[keep]
    readable.bad_images = BadImageLog(readable.paths)
    setattr(readable, _LEFT_OUT, left_out)
    return readable


def left_out_images(dataset: CanvasDataset) -> list[str]:
    """Names (as :meth:`item_names` gives them) of the unreadable files left out of a split
    opened by :func:`open_split`; empty for other data sets."""
    return list(getattr(dataset, _LEFT_OUT, []))


def subset_indices(num: int, limit: int | None, seed: int = 0) -> Tensor | None:
    """Sorted seeded random choice of ``limit`` of ``num`` indices; None keeps them all."""
    if limit is None or limit >= num:
        return None
    if limit < 1:
        raise EvalDataError(f"a sample limit must be at least 1, got {limit}")
    order = torch.randperm(num, generator=torch.Generator().manual_seed(seed))
    return order[:limit].sort().values


def eval_loader(
    dataset: CanvasDataset,
    kind: str,
    out_size: int | None,
    batch_size: int,
    num_workers: int = 0,
    indices: Tensor | None = None,
    pin_memory: bool = False,
    mode: str | None = None,
) -> DataLoader[CanvasItem]:
    """Batches ``(images (B, C, S, S) uint8, labels (B,) long)`` in data set order.

    Args:
        dataset: the split.
        kind: its kind, which picks the transform (:func:`eval_mode`).
        out_size: image side ``S``; None keeps native sizes.
        batch_size: images per batch.
        num_workers: loader worker processes.
        indices: optional subset of the split, in this order.
        pin_memory: pin batches for faster copies to a GPU.
        mode: ``"resize"`` or ``"center_crop"`` instead of the kind's own (:func:`eval_mode`).
    """
    if batch_size < 1:
        raise EvalDataError(f"the batch size must be at least 1, got {batch_size}")
    source: torch.utils.data.Dataset[CanvasItem] = dataset
    if indices is not None:
        source = Subset(dataset, indices.tolist())
    return DataLoader(
        source,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=EvalCollate(out_size, eval_mode(kind) if mode is None else mode),
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def align_labels(
    train_classes: Sequence[str] | None, test_classes: Sequence[str] | None, test_labels: Tensor
) -> Tensor:
    """Map test labels to the train split's class indices, matching classes by name.

    Image folders number their classes per split, so a validation folder that lacks a class
    would otherwise shift every later label.

    Args:
        train_classes: class names of the train split.
        test_classes: class names of the test split.
        test_labels: ``(M,)`` test labels indexing ``test_classes``.

    Returns:
        ``(M,)`` long labels indexing ``train_classes``.

    Raises:
        EvalDataError: a split is unlabelled, or test images belong to classes the train
            split does not have.
    """
    if train_classes is None or test_classes is None:
        raise EvalDataError(
            "the data set has no labels (a flat folder of images); k-NN and linear "
            "evaluations need class sub-folders or a labelled data set"
        )
    if list(train_classes) == list(test_classes):
        return test_labels.long()
    index = {name: i for i, name in enumerate(train_classes)}
    used = sorted({int(v) for v in test_labels.tolist()})
    unknown = [test_classes[i] for i in used if test_classes[i] not in index]
    if unknown:
        raise EvalDataError(
            f"the test split has {len(unknown)} classes that the train split lacks "
            f"({', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}); both splits "
            "must share their classes"
        )
    lookup = torch.tensor([index.get(name, -1) for name in test_classes], dtype=torch.long)
    return lookup[test_labels.long()]
