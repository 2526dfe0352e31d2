"""Segmentation layouts: VOC, ADE20K and the Fashion-MNIST task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from idx_files import write_idx_split
from patchdino.eval.common.garments import GARMENT_THRESHOLD
from patchdino.eval.dense.segmentation_data import (
    IGNORE,
    VOC_CLASSES,
    SegmentationDataError,
    open_segmentation,
    read_mask,
    segmentation_layout,
)
from segmentation_files import scene, write_ade, write_voc


def test_voc_pairs_and_ignore_border(tmp_path: Path) -> None:
    root = write_voc(tmp_path / "voc", {"train": [(20, 30), (24, 24)], "val": [(18, 26)]})
    assert segmentation_layout(root) == "voc"
    train = open_segmentation(root, "train", None)
    assert len(train) == 2 and train.classes == list(VOC_CLASSES) and train.channels == 3
    image, mask = train[0]
    assert image.shape == (3, 20, 30) and image.dtype == torch.uint8
    assert mask.shape == (20, 30) and mask.dtype == torch.long
    _, expected = scene(20, 30, 0)
    inside = mask != IGNORE
    assert set(mask.unique().tolist()) <= {0, 1, IGNORE} and (mask == IGNORE).any()
    assert torch.equal(mask[inside], torch.from_numpy(expected.astype(np.int64))[inside])
    gray, _ = open_segmentation(root, "val", 1)[0]
    assert gray.shape == (1, 18, 26)


def test_ade_shifts_classes_and_ignores_other(tmp_path: Path) -> None:
    root = write_ade(tmp_path / "ade", {"train": [(16, 16)], "val": [(16, 20)]})
    assert segmentation_layout(root) == "ade20k"
    val = open_segmentation(root, "val", None)
    assert len(val.classes) == 150
    _, mask = val[0]
    _, stored = scene(16, 20, 1)
    assert torch.equal(mask, torch.from_numpy(stored.astype(np.int64)))  # stored - 1
    Image.fromarray(np.zeros((16, 20), np.uint8), mode="L").save(
        root / "annotations" / "validation" / "ADE_validation_00000001.png"
    )
    assert (val[0][1] == IGNORE).all()


def test_fashion_task_masks(tmp_path: Path) -> None:
    images = np.zeros((3, 28, 28), np.uint8)
    images[:, 5:9, 6:12] = 200
    images[:, 0, 0] = GARMENT_THRESHOLD  # not above the threshold: background
    images[:, 1, 1] = GARMENT_THRESHOLD + 1
    labels = np.array([0, 4, 9])
    write_idx_split(tmp_path, "train", images, labels)
    write_idx_split(tmp_path, "test", images[:2], labels[:2])
    assert segmentation_layout(tmp_path) == "fashion_mnist"
    train = open_segmentation(tmp_path, "train", None)
    assert len(train.classes) == 11 and train.classes[0] == "background"
    image, mask = train[1]
    assert image.shape == (1, 28, 28)
    assert mask[6, 7] == 5 and mask[0, 0] == 0 and mask[1, 1] == 5 and mask[20, 20] == 0
    assert int((mask > 0).sum()) == 4 * 6 + 1
    assert len(open_segmentation(tmp_path, "val", 3)) == 2
    assert open_segmentation(tmp_path, "val", 3)[0][0].shape == (3, 28, 28)


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(SegmentationDataError, match="does not exist"):
        segmentation_layout(tmp_path / "absent")
    with pytest.raises(SegmentationDataError, match="not a segmentation data set"):
        segmentation_layout(tmp_path)
    root = write_voc(tmp_path / "voc", {"train": [(16, 16)]})
    with pytest.raises(SegmentationDataError, match=r"val\.txt is missing"):
        open_segmentation(root, "val", None)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("nothing_here\n")
    with pytest.raises(SegmentationDataError, match=r"listed in .* but missing"):
        open_segmentation(root, "val", None)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(rgb)
    with pytest.raises(SegmentationDataError, match="palette or 8-bit grayscale"):
        read_mask(rgb)
    with pytest.raises(SegmentationDataError, match="split must be"):
        open_segmentation(root, "test", None)


def test_check_finds_bad_masks_before_any_work(tmp_path: Path) -> None:
    root = write_voc(tmp_path / "voc", {"train": [(16, 16), (16, 20)], "val": [(16, 16)]})
    open_segmentation(root, "train", None, check=True)
    masks = root / "SegmentationClass"
    wrong_size = Image.fromarray(np.zeros((10, 10), np.uint8), mode="P")
    wrong_size.save(masks / "2007_000001.png")
    with pytest.raises(SegmentationDataError, match=r"mask of \(10, 10\) pixels"):
        open_segmentation(root, "train", None, check=True)
    too_high = np.zeros((16, 20), np.uint8)
    too_high[3, 4] = 37
    Image.fromarray(too_high, mode="L").save(masks / "2007_000001.png")
    with pytest.raises(SegmentationDataError, match="value 37 is not one of the 21 classes"):
        open_segmentation(root, "train", None, check=True)
    ade = write_ade(tmp_path / "ade", {"train": [(16, 16)], "val": [(16, 16)]})
    stored = np.full((16, 16), 151, np.uint8)
    Image.fromarray(stored, mode="L").save(
        ade / "annotations" / "training" / "ADE_training_00000000.png"
    )
    with pytest.raises(SegmentationDataError, match="value 151 is not one of the 150"):
        open_segmentation(ade, "train", None, check=True)
