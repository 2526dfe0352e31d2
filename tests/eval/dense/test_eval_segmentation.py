"""The linear segmentation probe: feature maps, crops, sliding windows, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patchdino.eval.common.eval_data import Normalise
from patchdino.eval.dense.segmentation import (
    DensePredictor,
    ProbeSettings,
    SegmentationProbe,
    TrainCollate,
    patch_feature_map,
    resize_mask,
    train_segmentation_probe,
    window_starts,
)
from patchdino.eval.dense.segmentation_data import IGNORE, SegmentationDataset
from patchdino.models import Backbone, create_backbone

CPU = torch.device("cpu")


def tiny_backbone(in_chans: int = 1) -> Backbone:
    torch.manual_seed(0)
    return create_backbone("vit_pico", patch_size=4, img_size=16, in_chans=in_chans).eval()


class Squares(SegmentationDataset):
    """Dark noise with a bright square (class 1) or a mid-grey square (class 2)."""

    image_kind = "fashion_mnist"
    channels = 1

    def __init__(self, n: int, side: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.classes = ["background", "bright", "grey"]
        self.items = []
        for i in range(n):
            image = rng.integers(0, 30, (1, side, side)).astype(np.uint8)
            mask = np.zeros((side, side), np.int64)
            top, left = rng.integers(0, side // 2, 2)
            label = 1 + i % 2
            image[0, top : top + side // 2, left : left + side // 2] = 250 if label == 1 else 130
            mask[top : top + side // 2, left : left + side // 2] = label
            self.items.append((torch.from_numpy(image), torch.from_numpy(mask)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.items[index]


def test_feature_map_is_the_patch_tokens_in_row_major_order() -> None:
    backbone = tiny_backbone()
    images = torch.randn(2, 1, 16, 24)
    with torch.no_grad():
        fmap = patch_feature_map(backbone, images, layers=2)
        last, before = backbone.get_intermediate_layers(images, 2)[::-1]
    d = backbone.embed_dim
    assert fmap.shape == (2, 2 * d, 4, 6)
    # Patch (row 1, column 4) is token 1 + 1 * 6 + 4; the earlier block comes first.
    torch.testing.assert_close(fmap[:, :d, 1, 4], before[:, 1 + 6 + 4])
    torch.testing.assert_close(fmap[:, d:, 1, 4], last[:, 1 + 6 + 4])


def test_geometry_helpers() -> None:
    assert window_starts(16, 16, 11) == [0]
    assert window_starts(24, 16, 11) == [0, 8]
    assert window_starts(40, 16, 11) == [0, 11, 22, 24]
    mask = torch.randint(0, 3, (13, 17))
    mask[0] = IGNORE
    for size in ((7, 9), (40, 31)):
        assert set(resize_mask(mask, size).unique().tolist()) <= set(mask.unique().tolist())


def test_train_collate_crops_image_and_mask_alike() -> None:
    mask = torch.arange(20 * 30).remainder(200).view(20, 30)
    image = mask.to(torch.uint8)[None]  # the image is its own mask: crops must agree
    items = [(image, mask)] * 4
    first = TrainCollate(16, seed=3)(items)
    again = TrainCollate(16, seed=3)(items)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    images, masks = first
    assert images.shape == (4, 1, 16, 16) and masks.shape == (4, 16, 16)
    # 20 x 30 resized to 16 x 24: the mask by nearest neighbour, so every crop's values exist.
    assert set(masks.unique().tolist()) <= set(mask.unique().tolist())


def _slow_slide(predictor: DensePredictor, image: torch.Tensor, starts: list[int]) -> torch.Tensor:
    """Window by window, each pixel averaged over the windows that cover it."""
    s = predictor.size
    total = torch.zeros(1, 3, image.shape[-2], image.shape[-1])
    count = torch.zeros(image.shape[-2], image.shape[-1])
    for left in starts:
        total[..., left : left + s] += predictor.window_logits(image[..., left : left + s])
        count[:, left : left + s] += 1
    return total / count


def test_sliding_windows_average_the_overlap() -> None:
    backbone = tiny_backbone()
    torch.manual_seed(1)
    probe = SegmentationProbe(backbone.embed_dim, 3).eval()
    with torch.no_grad():
        probe.norm.running_mean.normal_()
        probe.classifier.weight.normal_()
    normalise = Normalise((0.5,), (0.25,))
    image = torch.randint(0, 256, (1, 1, 16, 40), dtype=torch.uint8)
    slide = DensePredictor(backbone, probe, normalise, 16, 1, "slide")
    expected = _slow_slide(slide, image, [0, 11, 22, 24])
    torch.testing.assert_close(slide(image), expected, atol=1e-5, rtol=1e-5)
    square = image[..., :16]
    resize = DensePredictor(backbone, probe, normalise, 16, 1, "resize")
    torch.testing.assert_close(slide(square), resize(square))
    # Larger than the window in both directions: logits at the original size.
    assert slide(torch.randint(0, 256, (2, 1, 32, 50), dtype=torch.uint8)).shape == (2, 3, 32, 50)


def test_probe_learns_an_easy_task_and_settings_are_checked() -> None:
    backbone = tiny_backbone()
    settings = ProbeSettings(
        image_size=16, epochs=8, lr=0.05, batch_size=16, eval_mode="resize", progress=False
    )
    normalise = Normalise((0.2,), (0.3,))
    result = train_segmentation_probe(
        backbone, normalise, Squares(64, 16, 0), Squares(16, 16, 1), settings, CPU
    )
    assert result.num_train == 64 and result.num_test == 16
    assert result.history[-1] < 0.5 * result.history[0]
    assert result.scores.pixel_accuracy > 85.0
    assert result.scores.miou > 65.0
    with pytest.raises(ValueError, match="multiple of the patch size"):
        train_segmentation_probe(
            backbone,
            normalise,
            Squares(4, 16, 0),
            Squares(4, 16, 1),
            ProbeSettings(image_size=14),
            CPU,
        )
    with pytest.raises(ValueError, match="eval_mode"):
        ProbeSettings(image_size=16, eval_mode="tiles")
