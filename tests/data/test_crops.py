"""Crop-box and flip sampling against torchvision's RandomResizedCrop semantics."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms import RandomResizedCrop

from patchdino.data.crops import sample_crop_boxes, sample_flips

SCALE = (0.05, 0.4)
RATIO = (3 / 4, 4 / 3)


def _reference_boxes(
    sizes: torch.Tensor, scale: tuple[float, float], ratio: tuple[float, float], seed: int
) -> torch.Tensor:
    """Per-sample loop in plain Python (float64), reading the sampler's random numbers."""
    g = torch.Generator().manual_seed(seed)
    n, attempts = sizes.shape[0], 10
    u_area = torch.rand((n, attempts), generator=g)
    u_ratio = torch.rand((n, attempts), generator=g)
    u_offset = torch.rand((n, 2), generator=g)
    boxes = []
    for b in range(n):
        height, width = (int(v) for v in sizes[b])
        for a in range(attempts):
            area = height * width * (scale[0] + (scale[1] - scale[0]) * float(u_area[b, a]))
            log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
            aspect = math.exp(log_lo + (log_hi - log_lo) * float(u_ratio[b, a]))
            w = round(math.sqrt(area * aspect))
            h = round(math.sqrt(area / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = min(math.floor(float(u_offset[b, 0]) * (height - h + 1)), height - h)
                left = min(math.floor(float(u_offset[b, 1]) * (width - w + 1)), width - w)
                boxes.append([top, left, h, w])
                break
        else:  # torchvision's fallback: central crop, clamped to the ratio range
            if width / height < ratio[0]:
                w, h = width, round(width / ratio[0])
            elif width / height > ratio[1]:
                w, h = round(height * ratio[1]), height
            else:
                w, h = width, height
            boxes.append([(height - h) // 2, (width - w) // 2, h, w])
    return torch.tensor(boxes, dtype=torch.float32)


def _torchvision_fallback(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> list[int]:
    """torchvision's box where no random candidate can fit (its fallback is then certain)."""
    image = torch.zeros(1, height, width)
    top, left, h, w = RandomResizedCrop.get_params(image, list(scale), list(ratio))
    return [top, left, h, w]


def test_boxes_follow_the_per_sample_reference() -> None:
    g = torch.Generator().manual_seed(0)
    sizes = torch.cat([torch.randint(1, 300, (1000, 2), generator=g), torch.tensor([[1, 1]])])
    for scale in [SCALE, (0.4, 1.0), (0.9, 1.0)]:
        got = sample_crop_boxes(sizes, scale, RATIO, torch.Generator().manual_seed(3))
        assert torch.equal(got, _reference_boxes(sizes, scale, RATIO, seed=3))


def test_boxes_are_integer_and_inside_each_image() -> None:
    g = torch.Generator().manual_seed(0)
    sizes = torch.stack(
        [torch.randint(1, 300, (500,), generator=g), torch.randint(1, 300, (500,), generator=g)], 1
    )
    boxes = sample_crop_boxes(sizes, (0.4, 1.0), RATIO, g)
    assert boxes.shape == (500, 4) and boxes.dtype == torch.float32
    assert torch.equal(boxes, boxes.round())
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= sizes[:, 0]).all() and (left + w <= sizes[:, 1]).all()


def test_statistics_match_torchvision() -> None:
    n, height, width = 3000, 180, 240
    sizes = torch.tensor([[height, width]]).expand(n, 2)
    boxes = sample_crop_boxes(sizes, SCALE, RATIO, torch.Generator().manual_seed(1))
    torch.manual_seed(1)
    image = torch.zeros(1, height, width)
    reference = torch.tensor(
        [RandomResizedCrop.get_params(image, list(SCALE), list(RATIO)) for _ in range(n)],
        dtype=torch.float32,
    )
    for b in (boxes, reference):
        h, w = b[:, 2], b[:, 3]
        area = h * w / (height * width)
        aspect = w / h
        # rounding w and h to integers moves the area and aspect by a little
        assert area.min() > SCALE[0] * 0.9 and area.max() < SCALE[1] * 1.1
        assert aspect.min() > RATIO[0] * 0.9 and aspect.max() < RATIO[1] * 1.1
    for stat in [
        lambda b: b[:, 2] * b[:, 3] / (height * width),
        lambda b: torch.log(b[:, 3] / b[:, 2]),
        lambda b: b[:, 0] / (height - b[:, 2]).clamp(min=1),
        lambda b: b[:, 1] / (width - b[:, 3]).clamp(min=1),
    ]:
        ours, theirs = stat(boxes), stat(reference)
        assert abs(ours.mean() - theirs.mean()) < 0.03
        assert abs(ours.std() - theirs.std()) < 0.03


@pytest.mark.parametrize(
    ("height", "width", "scale", "ratio"),
    [
        (4, 400, (0.5, 1.0), RATIO),  # far too wide for any candidate
        (400, 4, (0.5, 1.0), RATIO),  # far too tall
        (10, 10, (1.0, 1.0), (2.0, 3.0)),  # square image, only wide crops allowed
        (10, 14, (1.0, 1.0), (1.2, 1.6)),  # image ratio inside the range, full area
    ],
)
def test_fallback_matches_torchvision(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> None:
    boxes = sample_crop_boxes(torch.tensor([[height, width]] * 4), scale, ratio)
    expected = torch.tensor([_torchvision_fallback(height, width, scale, ratio)] * 4)
    assert torch.equal(boxes, expected.float())


def test_samples_differ_and_seed_reproduces() -> None:
    sizes = torch.tensor([[100, 100]] * 64)
    a = sample_crop_boxes(sizes, SCALE, RATIO, torch.Generator().manual_seed(5))
    b = sample_crop_boxes(sizes, SCALE, RATIO, torch.Generator().manual_seed(5))
    c = sample_crop_boxes(sizes, SCALE, RATIO, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len({tuple(row.tolist()) for row in a}) > 60


def test_flips() -> None:
    g = torch.Generator().manual_seed(0)
    flips = sample_flips(4000, 0.5, g)
    assert flips.dtype == torch.bool and flips.shape == (4000,)
    assert abs(flips.float().mean().item() - 0.5) < 0.05
    assert not sample_flips(100, 0.0, g).any() and sample_flips(100, 1.0, g).all()
    with pytest.raises(ValueError, match="flip probability"):
        sample_flips(3, 1.5)


def test_groups_share_their_draws() -> None:
    sizes = torch.tensor([[100, 100]] * 4 + [[60, 90]] * 4 + [[100, 100]] * 4)
    boxes = sample_crop_boxes(sizes, SCALE, RATIO, torch.Generator().manual_seed(3), group=4)
    groups = boxes.view(3, 4, 4)
    assert all(torch.equal(groups[k], groups[k, :1].expand(4, 4)) for k in range(3))
    assert not torch.equal(groups[0, 0], groups[2, 0])  # groups draw anew
    # A group of one is the per-sample draw.
    one = sample_crop_boxes(sizes, SCALE, RATIO, torch.Generator().manual_seed(3), group=1)
    plain = sample_crop_boxes(sizes, SCALE, RATIO, torch.Generator().manual_seed(3))
    assert torch.equal(one, plain)
    flips = sample_flips(600, 0.5, torch.Generator().manual_seed(1), group=6).view(100, 6)
    assert (flips == flips[:, :1]).all() and 0 < flips[:, 0].sum() < 100
    with pytest.raises(ValueError, match="group"):
        sample_crop_boxes(sizes, SCALE, RATIO, group=5)
    with pytest.raises(ValueError, match="group"):
        sample_flips(6, 0.5, group=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": (0.0, 1.0)}, "scale"),
        ({"scale": (0.5, 1.2)}, "scale"),
        ({"scale": (0.6, 0.5)}, "scale"),
        ({"ratio": (-1.0, 2.0)}, "ratio"),
        ({"attempts": 0}, "attempts"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"scale": SCALE, "ratio": RATIO, **kwargs}
    with pytest.raises(ValueError, match=message):
        sample_crop_boxes(torch.tensor([[10, 10]]), **args)  # type: ignore[arg-type]


def test_bad_sizes_shape() -> None:
    with pytest.raises(ValueError, match="image_sizes"):
        sample_crop_boxes(torch.tensor([10, 10]), SCALE, RATIO)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_with_a_cpu_generator() -> None:
    sizes = torch.tensor([[64, 80], [33, 17]] * 8)
    cpu = sample_crop_boxes(sizes, SCALE, RATIO, torch.Generator().manual_seed(2))
    gpu = sample_crop_boxes(sizes.cuda(), SCALE, RATIO, torch.Generator().manual_seed(2))
    assert gpu.is_cuda and torch.equal(cpu, gpu.cpu())
    cuda_gen = torch.Generator(device="cuda").manual_seed(2)
    boxes = sample_crop_boxes(sizes.cuda(), SCALE, RATIO, cuda_gen)
    assert boxes.is_cuda and (boxes[:, 0] + boxes[:, 2] <= sizes[:, 0].cuda()).all()
    assert sample_flips(8, 0.5, cuda_gen, "cuda").is_cuda
