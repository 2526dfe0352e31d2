"""Multi-crop sampler: truthful per-sample geometry, statistics, reproducibility, validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from coordinate_views import check_view
from PIL import Image

from patchdino.config import ViewsConfig
from patchdino.data.batch import MultiCropBatch
from patchdino.data.multicrop import (
    MultiCropAugmentation,
    MultiCropSpec,
    images_to_batch,
)

SMALL = {"global_size": 32, "local_size": 16, "patch_size": 8, "num_local": 4}


def _coordinate_canvas(
    sizes: torch.Tensor, height: int, width: int, channels: int, transpose: bool = False
) -> torch.Tensor:
    """``(B, C, H, W)`` uint8 canvas: channel 0 = column, channel 1 = row (channel 2 = 0);
    with one channel and ``transpose``, the row. Padding holds 255."""
    canvas = torch.full((len(sizes), channels, height, width), 255, dtype=torch.uint8)
    cols = torch.arange(width).expand(height, width)
    rows = torch.arange(height).unsqueeze(1).expand(height, width)
    planes = [rows] if transpose else [cols, rows, torch.zeros_like(rows)]
    for b, (h, w) in enumerate(sizes.tolist()):
        for c in range(channels):
            canvas[b, c, :h, :w] = planes[c][:h, :w]
    return canvas


def _check_batch(
    batch: MultiCropBatch, sizes: torch.Tensor, channels: int, transpose: bool = False
) -> None:
    axes = "xy" if channels == 3 else ("y" if transpose else "x")
    for view, geometry in zip(batch.views, batch.geometry):
        pixels = view.double() * 255  # back to coordinate units
        for b in range(len(sizes)):
            limits = (int(sizes[b, 0]), int(sizes[b, 1]))
            box, flipped = geometry.boxes[b], bool(geometry.flipped[b])
            check_view(pixels[b, : len(axes)], box, flipped, limits, axes)


@pytest.mark.parametrize(("channels", "transpose"), [(3, False), (1, False), (1, True)])
@pytest.mark.parametrize("as_float", [False, True])
def test_every_view_is_its_recorded_geometry(
    channels: int, transpose: bool, as_float: bool
) -> None:
    height, width = 60, 70
    sizes = torch.tensor([[60, 70], [41, 29], [20, 66], [60, 70]])
    images = _coordinate_canvas(sizes, height, width, channels, transpose)
    if as_float:
        images = images.float() / 255
    spec = MultiCropSpec(**SMALL, photometric=False, num_global=3)
    batch = MultiCropAugmentation(spec)(
        images, sizes, generator=torch.Generator().manual_seed(0), normalize=False
    )
    flips = torch.cat([g.flipped for g in batch.geometry])
    assert flips.any() and not flips.all()
    for geometry in batch.geometry:
        top, left, h, w = geometry.boxes.unbind(1)
        assert (top >= 0).all() and (left >= 0).all()
        assert (top + h <= sizes[:, 0]).all() and (left + w <= sizes[:, 1]).all()
    _check_batch(batch, sizes, channels, transpose)


def test_shapes_dtypes_and_labels() -> None:
    spec = MultiCropSpec(**SMALL)
    images = torch.randint(0, 256, (3, 3, 40, 50), dtype=torch.uint8)
    labels = torch.tensor([4, -1, 2])
    batch = MultiCropAugmentation(spec)(images, labels=labels)
    assert isinstance(batch, MultiCropBatch) and batch.batch_size == 3
    assert len(batch.global_views) == 2 and len(batch.local_views) == 4
    assert all(v.shape == (3, 3, 32, 32) and v.dtype == torch.float32 for v in batch.global_views)
    assert all(v.shape == (3, 3, 16, 16) for v in batch.local_views)
    assert [g.size for g in batch.geometry] == [32, 32, 16, 16, 16, 16]
    assert all(g.patch_size == 8 and g.boxes.shape == (3, 4) for g in batch.geometry)
    assert batch.labels is labels
    none = MultiCropAugmentation(MultiCropSpec(**{**SMALL, "num_local": 0}))(images)
    assert none.local_views == [] and none.local_geometry == []


def test_crop_statistics_inside_each_valid_region() -> None:
    spec = MultiCropSpec(**{**SMALL, "num_local": 8}, photometric=False)
    sizes = torch.tensor([[200, 160], [90, 150]]).repeat(32, 1)
    images = torch.zeros(64, 1, 200, 160, dtype=torch.uint8)
    batch = MultiCropAugmentation(spec)(images, sizes, generator=torch.Generator().manual_seed(1))
    for geometries, (low, high) in [
        (batch.global_geometry, spec.global_scale),
        (batch.local_geometry, spec.local_scale),
    ]:
        boxes = torch.cat([g.boxes for g in geometries])
        valid = sizes.repeat(len(geometries), 1).float()
        area = boxes[:, 2] * boxes[:, 3] / (valid[:, 0] * valid[:, 1])
        aspect = boxes[:, 3] / boxes[:, 2]
        assert area.min() >= low * 0.9 and area.max() <= high * 1.05
        assert aspect.min() >= spec.ratio[0] * 0.9 and aspect.max() <= spec.ratio[1] * 1.1
        assert (boxes[:, 0] + boxes[:, 2] <= valid[:, 0]).all()
        assert (boxes[:, 1] + boxes[:, 3] <= valid[:, 1]).all()
        if high < 0.5:  # small crops always fit: the area fraction is uniform
            assert abs(area.mean() - (low + high) / 2) < 0.02


def test_samples_get_their_own_draws() -> None:
    image = torch.randint(0, 256, (1, 3, 48, 48), dtype=torch.uint8)
    images = image.expand(8, 3, 48, 48)
    batch = MultiCropAugmentation(MultiCropSpec(**SMALL))(
        images, generator=torch.Generator().manual_seed(0)
    )
    for view, geometry in zip(batch.views, batch.geometry):
        assert len({tuple(box.tolist()) for box in geometry.boxes}) > 4
        assert len({tuple(v.flatten()[:16].tolist()) for v in view}) == 8


def test_per_batch_geometry_is_shared_across_the_batch() -> None:
    sizes = torch.tensor([[48, 40]] * 6)
    images = _coordinate_canvas(sizes, 48, 40, 3)
    spec = MultiCropSpec(**SMALL, geometry="per_batch", photometric=False)
    augment = MultiCropAugmentation(spec)
    flipped = set()
    for seed in range(6):
        batch = augment(images, generator=torch.Generator().manual_seed(seed), normalize=False)
        for geometry in batch.geometry:
            assert (geometry.boxes == geometry.boxes[:1]).all()
            assert (geometry.flipped == geometry.flipped[:1]).all()
            flipped.add(bool(geometry.flipped[0]))
        assert len({tuple(g.boxes[0].tolist()) for g in batch.geometry}) > 1  # views differ
        _check_batch(batch, sizes, 3)  # the pixels are still the recorded geometry
    assert flipped == {False, True}
    # Images of different sizes share the draw, each box inside its own image.
    mixed = torch.tensor([[48, 40], [30, 44], [48, 40], [20, 20]])
    batch = augment(
        _coordinate_canvas(mixed, 48, 44, 3),
        mixed,
        generator=torch.Generator().manual_seed(0),
        normalize=False,
    )
    for geometry in batch.geometry:
        assert torch.equal(geometry.boxes[0], geometry.boxes[2])
        assert (geometry.flipped == geometry.flipped[:1]).all()
    _check_batch(batch, mixed, 3)


def test_seed_reproduces_and_photometry_keeps_geometry() -> None:
    images = torch.randint(0, 256, (4, 3, 48, 40), dtype=torch.uint8)
    augment = MultiCropAugmentation(MultiCropSpec(**SMALL))
    a = augment(images, generator=torch.Generator().manual_seed(7))
    b = augment(images, generator=torch.Generator().manual_seed(7))
    c = augment(images, generator=torch.Generator().manual_seed(8))
    assert all(torch.equal(x, y) for x, y in zip(a.views, b.views))
    assert not torch.equal(a.global_views[0], c.global_views[0])
    plain = MultiCropAugmentation(MultiCropSpec(**SMALL, photometric=False))(
        images, generator=torch.Generator().manual_seed(7)
    )
    for x, y in zip(a.geometry, plain.geometry):
        assert torch.equal(x.boxes, y.boxes) and torch.equal(x.flipped, y.flipped)
    assert not torch.equal(a.global_views[0], plain.global_views[0])


@pytest.mark.parametrize("channels", [1, 3])
def test_normalisation(channels: int) -> None:
    images = torch.randint(0, 256, (2, channels, 40, 40), dtype=torch.uint8)
    spec = MultiCropSpec(**SMALL)
    augment = MultiCropAugmentation(spec)
    raw = augment(images, generator=torch.Generator().manual_seed(0), normalize=False)
    normed = augment(images, generator=torch.Generator().manual_seed(0))
    assert raw.global_views[0].min() >= 0 and raw.global_views[0].max() <= 1
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    if channels == 1:
        mean, std = mean.mean(dim=1, keepdim=True), std.mean(dim=1, keepdim=True)
    for x, y in zip(raw.views, normed.views):
        assert torch.allclose((x - mean) / std, y, atol=1e-5)


def test_images_to_batch_pads_pil_and_tensor_images() -> None:
    rgb = Image.fromarray(np.full((10, 7, 3), 200, dtype=np.uint8))
    gray = Image.fromarray(np.full((5, 12), 50, dtype=np.uint8))
    images, sizes = images_to_batch([rgb, gray])
    assert images.shape == (2, 3, 10, 12) and images.dtype == torch.uint8
    assert sizes.tolist() == [[10, 7], [5, 12]]
    assert (images[0, :, :10, :7] == 200).all() and (images[0, :, :, 7:] == 0).all()
    assert (images[1, :, :5] == 50).all() and (images[1, :, 5:] == 0).all()
    single, single_sizes = images_to_batch([gray])
    assert single.shape == (1, 1, 5, 12) and single_sizes.tolist() == [[5, 12]]
    mixed, _ = images_to_batch([torch.full((8, 8), 255, dtype=torch.uint8), torch.ones(3, 4, 6)])
    assert mixed.dtype == torch.float32 and mixed.shape == (2, 3, 8, 8)
    assert torch.equal(mixed[0], torch.ones(3, 8, 8)) and mixed[1, :, :4, :6].eq(1).all()
    views = MultiCropAugmentation(MultiCropSpec(**SMALL))(images, sizes)
    assert views.global_views[0].shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="at least one"):
        images_to_batch([])
    with pytest.raises(ValueError, match="C = 1 or 3"):
        images_to_batch([torch.zeros(2, 4, 4)])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"global_size": 225}, "global_size 225 is not divisible by patch_size 16"),
        ({"local_size": 100}, "local_size 100 is not divisible by patch_size 16"),
        ({"patch_size": 0}, "patch_size must be positive"),
        ({"local_size": 256}, "local_size 256 is larger than global_size 224"),
        ({"global_scale": (0.0, 1.0)}, "global_scale"),
        ({"local_scale": (0.05, 1.5)}, "local_scale"),
        ({"local_scale": (0.5, 0.4)}, "local_scale"),
        ({"ratio": (0.0, 1.0)}, "ratio"),
        ({"num_local": -1}, "num_local"),
        ({"num_global": 0}, "num_global"),
        ({"flip_p": 1.5}, "flip_p"),
        ({"grayscale_p": -0.1}, "grayscale_p"),
        ({"blur_p": (1.0, 0.1)}, "blur_p needs 3 probabilities"),
        ({"solarize_p": (0.0, 2.0, 0.0)}, "solarize_p"),
        ({"color_jitter": (0.4, 0.4, 0.2)}, "color_jitter"),
        ({"mean": (0.5, 0.5)}, "mean and std"),
        ({"std": (0.2, 0.0, 0.2)}, "std must be positive"),
        ({"blur_sigma": (0.0, 2.0)}, "blur_sigma"),
        ({"geometry": "per_image"}, "geometry: 'per_image' is not one of per_sample, per_batch"),
    ],
)
def test_spec_validation(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MultiCropSpec(**changes)  # type: ignore[arg-type]


def test_spec_defaults_and_lists() -> None:
    spec = MultiCropSpec()
    assert (spec.global_size, spec.local_size, spec.num_local, spec.patch_size) == (224, 96, 8, 16)
    assert spec.blur_p == (1.0, 0.1, 0.5) and spec.solarize_p == (0.0, 0.2, 0.0)
    from_yaml = MultiCropSpec(global_scale=[0.3, 1.0], blur_p=[1.0, 0.1, 0.5])  # type: ignore[arg-type]
    assert from_yaml.global_scale == (0.3, 1.0) and isinstance(from_yaml.blur_p, tuple)
    assert dataclasses.replace(spec, num_local=0).num_local == 0


def test_spec_from_config_views() -> None:
    views = ViewsConfig(global_size=32, local_size=16, num_local=2, flip_p=0.0)
    spec = MultiCropSpec.from_views(views, patch_size=8, mean=(0.5,), std=(0.25,))
    assert (spec.global_size, spec.local_size, spec.num_local, spec.flip_p) == (32, 16, 2, 0.0)
    assert (spec.patch_size, spec.mean, spec.num_global) == (8, (0.5,), 2)
    with pytest.raises(ValueError, match="global_size 32 is not divisible by patch_size 5"):
        MultiCropSpec.from_views(views, patch_size=5)
    assert views.problems("views.") + views.patch_problems(8, "views.", "model.patch_size") == []


def test_bad_inputs() -> None:
    augment = MultiCropAugmentation(MultiCropSpec(**SMALL))
    images = torch.zeros(2, 3, 20, 20, dtype=torch.uint8)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        augment(torch.zeros(2, 2, 20, 20))
    with pytest.raises(ValueError, match="uint8 or float"):
        augment(images.int())
    with pytest.raises(ValueError, match=r"image_sizes must have shape \(2, 2\)"):
        augment(images, torch.tensor([[20, 20]]))
    with pytest.raises(ValueError, match="image_sizes must lie"):
        augment(images, torch.tensor([[20, 20], [21, 5]]))
    with pytest.raises(ValueError, match="labels"):
        augment(images, labels=torch.zeros(3, dtype=torch.long))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    sizes = torch.tensor([[48, 40], [30, 44]])
    images = torch.randint(0, 256, (2, 3, 48, 44), dtype=torch.uint8)
    augment = MultiCropAugmentation(MultiCropSpec(**SMALL))
    cpu = augment(images, sizes, generator=torch.Generator().manual_seed(0))
    gpu = augment(images.cuda(), sizes.cuda(), generator=torch.Generator().manual_seed(0))
    for x, y in zip(cpu.views, gpu.views):
        assert y.is_cuda and torch.allclose(x, y.cpu(), atol=1e-3)
    for x, y in zip(cpu.geometry, gpu.geometry):
        assert y.boxes.is_cuda and torch.equal(x.boxes, y.boxes.cpu())
    on_device = augment(
        images.cuda(), sizes.cuda(), generator=torch.Generator("cuda").manual_seed(0)
    )
    assert on_device.global_views[0].is_cuda
