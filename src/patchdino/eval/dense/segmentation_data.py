"""Semantic segmentation data: Pascal VOC, ADE20K and a Fashion-MNIST task.

Every data set yields ``(image, mask)`` pairs: a ``(C, H, W)`` uint8 image and an ``(H, W)``
long mask of class indices in ``[0, K)``, or :data:`IGNORE` where no label counts.

Layouts (:func:`segmentation_layout` tells them apart):

- ``voc``: Pascal VOC 2012, ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette
  PNGs whose indices are the 21 classes, 255 on object borders = ignore) and
  ``ImageSets/Segmentation/{train,val}.txt``.
- ``ade20k``: ADEChallengeData2016, ``images/{training,validation}/*.jpg`` and
  ``annotations/{training,validation}/*.png`` (value 0 = "other", ignored; 1..150 are the 150
  classes, numbered here from 0).
- ``fashion_mnist``: built from the IDX files of Fashion-MNIST (or MNIST). Each pixel whose
  intensity is above :data:`GARMENT_THRESHOLD` is labelled with its image's class + 1, every
  other pixel 0 (background): 11 classes, no ignored pixels.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from patchdino.data.datasets import IdxDataset, detect_kind
from patchdino.data.datasets.bad_images import BadImageError, check_policy
from patchdino.data.datasets.canvas import decode_image
from patchdino.errors import InputError
from patchdino.eval.common.eval_data import SCAN_CANVAS
from patchdino.eval.common.garments import garment_mask

IGNORE = 255
"""Mask value of pixels that count neither in the loss nor in the scores."""
SEGMENTATION_LAYOUTS = ("voc", "ade20k", "fashion_mnist")
VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
ADE20K_NUM_CLASSES = 150
_ADE_SPLITS = {"train": "training", "val": "validation"}


logger = logging.getLogger("patchdino.eval")


class SegmentationDataError(InputError):
    """A segmentation data set cannot be opened or read; the one-line message says why."""


class SegmentationDataset(Dataset[tuple[Tensor, Tensor]]):
    """Pairs of an image and its class mask.

    Attributes:
        classes: the ``K`` class names; mask values index them.
        image_kind: data set kind of the images, for their normalisation statistics
            (``"imagefolder"`` for photographs, ``"fashion_mnist"``).
        channels: channels of the images returned.
    """

    classes: list[str]
    image_kind: str
    channels: int

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        """``(C, H, W)`` uint8 image and ``(H, W)`` long mask."""


class FileSegmentation(SegmentationDataset):
    """Image files with mask PNGs of the same size (VOC, ADE20K).

    Args:
        pairs: ``(image file, mask file)`` per sample.
        classes: class names.
        label_map: ``(256,)`` table from stored mask values to class indices, IGNORE, or
            -1 for values that no mask may hold.
        channels: 3 (RGB) or 1 (luminance).
    """

    image_kind = "imagefolder"

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        classes: Sequence[str],
        label_map: np.ndarray,
        channels: int = 3,
    ) -> None:
        if channels not in (1, 3):
            raise SegmentationDataError(f"channels must be 1 or 3, got {channels}")
        self.pairs = list(pairs)
        self.classes = list(classes)
        self.label_map = torch.from_numpy(label_map.astype(np.int64))  # (256,)
        self.channels = channels
        self.left_out: list[str] = []
        """Image files :meth:`check` left out (unreadable)."""

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, mask_path = self.pairs[index]
        image = decode_image(image_path, self.channels, None)  # (C, H, W)
        mask = self._labels(mask_path, (int(image.shape[-2]), int(image.shape[-1])))
        return image, mask

    def check(self, on_bad_image: str = "fail") -> list[str]:
        """Decode every image (small) and read every mask; leave out or refuse bad images.

        Args:
            on_bad_image: ``"skip"`` leaves the pairs of unreadable image files out (named in
                the log once), ``"fail"`` stops at the first.

        Returns:
            The image files left out (empty with ``"fail"``).

        Raises:
            SegmentationDataError: an unreadable image with ``"fail"``, no readable image, a
                mask that cannot be read, whose size differs from its image's, or that holds a
                value outside the classes (and the ignore value).
        """
        try:
            check_policy(on_bad_image)
        except ValueError as err:
            raise SegmentationDataError(str(err)) from err
        kept, left_out = [], []
        for image_path, mask_path in self.pairs:
            try:
                decode_image(image_path, self.channels, SCAN_CANVAS)  # the whole file
                with Image.open(image_path) as image:
                    width, height = image.size
            except (BadImageError, OSError, ValueError) as err:
                reason = err.reason if isinstance(err, BadImageError) else type(err).__name__
                if on_bad_image == "fail":
                    raise SegmentationDataError(
                        f"{image_path}: cannot read image: {reason}; remove or replace it, or "
                        "leave such images out (--on-bad-image skip)"
                    ) from err
                logger.warning("leaving out unreadable image %s (%s)", image_path, reason)
                left_out.append(str(image_path))
                continue
            self._labels(mask_path, (height, width))
            kept.append((image_path, mask_path))
        if not kept:
            raise SegmentationDataError(f"none of the {len(self.pairs)} images can be read")
        self.pairs = kept
        return left_out

    def _labels(self, mask_path: Path, size: tuple[int, int]) -> Tensor:
        """The ``(H, W)`` class mask of ``mask_path``, checked against the image ``size``."""
        stored = read_mask(mask_path)  # (H, W)
        if tuple(stored.shape) != size:
            raise SegmentationDataError(
                f"{mask_path}: mask of {tuple(stored.shape)} pixels for an image of {size}"
            )
        mask = self.label_map[stored]
        if bool((mask < 0).any()):
            value = int(stored[mask < 0][0])
            raise SegmentationDataError(
                f"{mask_path}: value {value} is not one of the {len(self.classes)} classes "
                f"(0-{len(self.classes) - 1}) or the ignore value"
            )
        return mask


def read_mask(path: Path) -> Tensor:
    """An index PNG (palette or 8-bit grayscale) as its stored values: ``(H, W)`` long.

    Raises:
        SegmentationDataError: the file is missing, unreadable or not an index image.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise SegmentationDataError(
                    f"{path}: a mask must be a palette or 8-bit grayscale PNG, got mode "
                    f"{image.mode}"
                )
            values = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError) as err:
        if isinstance(err, SegmentationDataError):
            raise
        raise SegmentationDataError(f"{path}: unreadable mask ({type(err).__name__})") from err
    return torch.from_numpy(values.astype(np.int64))


class FashionSegmentation(SegmentationDataset):
    """Fashion-MNIST as a segmentation task: garment pixels carry their image's class + 1.

    Args:
        root: folder of the IDX files.
        split: ``"train"`` or ``"val"``/``"test"`` (the 10,000 test images).
        channels: 1 (native) or 3 (replicated).
    """

    image_kind = "fashion_mnist"

    def __init__(self, root: str | Path, split: str, channels: int = 1) -> None:
        if channels not in (1, 3):
            raise SegmentationDataError(f"channels must be 1 or 3, got {channels}")
        try:
            source = IdxDataset(root, "test" if split == "val" else split)
        except ValueError as err:
            raise SegmentationDataError(str(err).splitlines()[0]) from err
        self.images = source.images  # (N, 1, 28, 28) uint8
        self.labels = source.labels  # (N,)
        self.classes = ["background", *(source.classes or [])]
        self.channels = channels

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index]  # (1, 28, 28)
        mask = garment_mask(image[0], int(self.labels[index]))
        if self.channels == 3:
            image = image.expand(3, -1, -1)
        return image.contiguous(), mask


def segmentation_layout(root: str | Path) -> str:
    """Which of :data:`SEGMENTATION_LAYOUTS` the folder ``root`` holds.

    Raises:
        SegmentationDataError: the folder is missing or holds none of them.
    """
    path = Path(root)
    if not path.is_dir():
        raise SegmentationDataError(f"segmentation data folder {path} does not exist")
    if (path / "JPEGImages").is_dir() and (path / "SegmentationClass").is_dir():
        return "voc"
    if (path / "images").is_dir() and (path / "annotations").is_dir():
        return "ade20k"
    try:
        kind = detect_kind(path)
    except ValueError:
        kind = None
    if kind in ("fashion_mnist", "mnist"):
        return "fashion_mnist"
    raise SegmentationDataError(
        f"{path} is not a segmentation data set: expected Pascal VOC (JPEGImages/, "
        "SegmentationClass/), ADE20K (images/, annotations/) or Fashion-MNIST IDX files"
    )


def open_segmentation(
    root: str | Path,
    split: str,
    channels: int | None,
    check: bool = False,
    on_bad_image: str = "fail",
) -> SegmentationDataset:
    """The ``"train"`` or ``"val"`` split of the segmentation data set at ``root``.

    Args:
        root: data folder (see :func:`segmentation_layout`).
        split: ``"train"`` or ``"val"`` (Fashion-MNIST: its test images).
        channels: image channels the model takes; None for the data's own.
        check: decode every image and read every mask now (:meth:`FileSegmentation.check`),
            so that a bad one stops the evaluation before any work, or (``on_bad_image``
            ``"skip"``) is left out; the files left out are then :func:`left_out_pairs`.
        on_bad_image: ``"skip"`` or ``"fail"``, with ``check``.

    Raises:
        SegmentationDataError: an unknown layout, a missing split list or file, an empty split.
    """
    if split not in ("train", "val"):
        raise SegmentationDataError(f"split must be 'train' or 'val', got {split!r}")
    path = Path(root)
    layout = segmentation_layout(path)
    if layout == "fashion_mnist":
        dataset: SegmentationDataset = FashionSegmentation(path, split, channels or 1)
    elif layout == "voc":
        label_map = np.full(256, -1)
        label_map[: len(VOC_CLASSES)] = np.arange(len(VOC_CLASSES))
        label_map[IGNORE] = IGNORE
        dataset = FileSegmentation(_voc_pairs(path, split), VOC_CLASSES, label_map, channels or 3)
    else:
        label_map = np.full(256, -1)  # 0 -> ignore, k -> k - 1 for the 150 classes
        label_map[0] = IGNORE
        label_map[1 : ADE20K_NUM_CLASSES + 1] = np.arange(ADE20K_NUM_CLASSES)
        classes = [f"class_{i}" for i in range(1, ADE20K_NUM_CLASSES + 1)]
        dataset = FileSegmentation(_ade_pairs(path, split), classes, label_map, channels or 3)
    if len(dataset) == 0:
        raise SegmentationDataError(f"the {split} split of {path} holds no images")
    if check and isinstance(dataset, FileSegmentation):
        dataset.left_out = dataset.check(on_bad_image)
    return dataset


def left_out_pairs(dataset: SegmentationDataset) -> list[str]:
    """The image files :func:`open_segmentation` left out of ``dataset`` (unreadable)."""
    return list(getattr(dataset, "left_out", []))


def _voc_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise SegmentationDataError(f"{listing} is missing: it lists the {split} images")
    pairs = []
    for name in listing.read_text().split():
        image = root / "JPEGImages" / f"{name}.jpg"
        mask = root / "SegmentationClass" / f"{name}.png"
        for file in (image, mask):
            if not file.is_file():
                raise SegmentationDataError(f"{file} is listed in {listing} but missing")
        pairs.append((image, mask))
    return pairs


def _ade_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    images = root / "images" / _ADE_SPLITS[split]
    masks = root / "annotations" / _ADE_SPLITS[split]
    if not images.is_dir() or not masks.is_dir():
        raise SegmentationDataError(f"{images} or {masks} is missing")
    pairs = []
    for image in sorted(images.glob("*.jpg")):
        mask = masks / f"{image.stem}.png"
        if not mask.is_file():
            raise SegmentationDataError(f"{image} has no annotation {mask}")
        pairs.append((image, mask))
    return pairs
