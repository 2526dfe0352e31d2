"""Crop + resize + flip: pixels must be exactly the recorded box, resized and flipped."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from coordinate_views import check_view, coordinate_image
from torchvision.transforms.v2 import functional as TF

from patchdino.data.crops import sample_crop_boxes, sample_flips
from patchdino.data.resample import crop_resize, replicate_padding


@pytest.mark.parametrize("size", [8, 16, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_views_are_their_boxes_resized_and_flipped(size: int, dtype: torch.dtype) -> None:
    height, width, per_image = 37, 53, 6
    images = coordinate_image(3, height, width).to(dtype)
    g = torch.Generator().manual_seed(size)
    sizes = torch.tensor([[height, width]]).repeat(3 * per_image, 1)
    boxes = torch.cat(
        [
            sample_crop_boxes(sizes[:9], (0.05, 0.4), (0.75, 4 / 3), g),
            sample_crop_boxes(sizes[9:], (0.9, 1.0), (0.5, 2.0), g),  # touching the border
        ]
    )
    flips = sample_flips(len(boxes), 0.5, g)
    index = torch.arange(3).repeat(per_image)
    views = crop_resize(images, boxes, size, flips, index)
    assert views.shape == (3 * per_image, 2, size, size) and views.dtype == dtype
    assert flips.any() and not flips.all()
    for view, box, flipped in zip(views, boxes, flips):
        check_view(view.double(), box, bool(flipped), (height, width))


def test_whole_image_box_with_one_box_per_image() -> None:
    images = coordinate_image(2, 20, 30).float()
    boxes = torch.tensor([[0.0, 0.0, 20.0, 30.0], [5.0, 7.0, 10.0, 10.0]])
    flips = torch.tensor([True, False])
    views = crop_resize(images, boxes, 12, flips)
    for view, box, flipped in zip(views, boxes, flips):
        check_view(view.double(), box, bool(flipped), (20, 30))


def test_replicate_padding_matches_a_loop() -> None:
    images = torch.randn(3, 2, 9, 11)
    sizes = torch.tensor([[9, 11], [4, 6], [1, 1]])
    out = replicate_padding(images, sizes)
    for b, (h, w) in enumerate(sizes.tolist()):
        for y in range(9):
            for x in range(11):
                assert torch.equal(out[b, :, y, x], images[b, :, min(y, h - 1), min(x, w - 1)])


def test_padding_never_leaks_into_views() -> None:
    height, width = 40, 50
    images = torch.full((2, 2, height, width), 1e4)
    valid = torch.tensor([[25, 18], [40, 50]])
    coords = coordinate_image(2, height, width)
    for b, (h, w) in enumerate(valid.tolist()):
        images[b, :, :h, :w] = coords[b, :, :h, :w].float()
    filled = replicate_padding(images, valid)
    g = torch.Generator().manual_seed(0)
    for scale in [(0.05, 0.4), (0.8, 1.0)]:
        boxes = sample_crop_boxes(valid.repeat(5, 1), scale, (0.75, 4 / 3), g)
        flips = sample_flips(10, 0.5, g)
        views = crop_resize(filled, boxes, 16, flips, torch.arange(2).repeat(5))
        for k, (view, box, flipped) in enumerate(zip(views, boxes, flips)):
            h, w = valid[k % 2].tolist()
            check_view(view.double(), box, bool(flipped), (h, w))


def _smooth_image(seed: int, height: int, width: int) -> torch.Tensor:
    """``(1, 3, H, W)`` natural-looking image: upsampled noise plus a gradient, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 3, height // 4, width // 4, generator=g)
    image = F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False)
    image = image + 0.3 * torch.rand(1, 3, height, width, generator=g)
    return image.clamp(0, 1)


@pytest.mark.parametrize("antialias", [False, True])
def test_upscaling_agrees_with_torchvision(antialias: bool) -> None:
    image = _smooth_image(0, 48, 64)
    for top, left, h, w, size in [(0, 0, 48, 64, 96), (5, 9, 20, 17, 32), (30, 40, 18, 24, 40)]:
        box = torch.tensor([[top, left, h, w]], dtype=torch.float32)
        ours = crop_resize(image, box, size, torch.tensor([False]))[0]
        theirs = TF.resized_crop(image[0], top, left, h, w, [size, size], antialias=antialias)
        # torchvision clamps at the crop's edge, we read the real neighbours outside the crop:
        # they agree wherever the sample point lies at least half a pixel inside the box.
        rows = top + (torch.arange(size) + 0.5) * h / size
        cols = left + (torch.arange(size) + 0.5) * w / size
        inside = ((rows >= top + 0.5) & (rows <= top + h - 0.5)).unsqueeze(1) & (
            (cols >= left + 0.5) & (cols <= left + w - 0.5)
        ).unsqueeze(0)
        assert torch.allclose(ours[:, inside], theirs[:, inside], atol=1e-5)
        assert (ours - theirs).abs().mean() < 0.01
        if (top, left, h, w) == (0, 0, 48, 64):  # same edges: identical everywhere
            assert torch.allclose(ours, theirs, atol=1e-5)


def test_integer_downscaling_averages_the_area() -> None:
    image = _smooth_image(1, 64, 64)
    box = torch.tensor([[0.0, 0.0, 64.0, 64.0], [16.0, 8.0, 32.0, 32.0]])
    views = crop_resize(image, box, 16, torch.tensor([False, False]), torch.tensor([0, 0]))
    assert torch.allclose(views[0], F.avg_pool2d(image, 4)[0], atol=1e-5)
    assert torch.allclose(views[1], F.avg_pool2d(image[..., 16:48, 8:40], 2)[0], atol=1e-5)


def test_bad_inputs() -> None:
    images = torch.zeros(2, 3, 8, 8)
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0]] * 2)
    flips = torch.zeros(2, dtype=torch.bool)
    with pytest.raises(ValueError, match="floating-point"):
        crop_resize(images.to(torch.uint8), boxes, 4, flips)
    with pytest.raises(ValueError, match="boxes"):
        crop_resize(images, boxes[:, :3], 4, flips)
    with pytest.raises(ValueError, match="flipped"):
        crop_resize(images, boxes, 4, flips[:1])
    with pytest.raises(ValueError, match="batch_index"):
        crop_resize(images, boxes[:1], 4, flips[:1])
    with pytest.raises(ValueError, match="size"):
        crop_resize(images, boxes, 0, flips)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    images = _smooth_image(2, 50, 70).repeat(2, 1, 1, 1)
    sizes = torch.tensor([[50, 70], [30, 40]])
    g = torch.Generator().manual_seed(0)
    boxes = sample_crop_boxes(sizes.repeat(4, 1), (0.05, 1.0), (0.75, 4 / 3), g)
    flips = sample_flips(8, 0.5, g)
    index = torch.arange(2).repeat(4)
    cpu = crop_resize(replicate_padding(images, sizes), boxes, 24, flips, index)
    gpu = crop_resize(
        replicate_padding(images.cuda(), sizes.cuda()),
        boxes.cuda(),
        24,
        flips.cuda(),
        index.cuda(),
    )
    assert gpu.is_cuda and torch.allclose(cpu, gpu.cpu(), atol=1e-5)
