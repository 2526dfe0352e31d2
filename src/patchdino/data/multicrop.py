"""Multi-crop views of a batch with recorded geometry (docs/method.md section 1).

Each view of each sample gets its own crop box, flip and photometric draw; with
``geometry="per_batch"`` (the reference) one box and flip per view is drawn for the whole batch
instead (images of different sizes share it relative to their size), while photometric
draws stay per sample. Pixels are produced
for the whole batch at once (crop + resize + flip by ``crop_resize``, then batched photometric
changes), on the device of the images, so the same code runs on CPU and GPU tensors.

The photometric probabilities of blur and solarisation are given per view kind as
``(global 1, global 2, locals)``; global views beyond the second use the second entry.
Resizing is bilinear with area averaging when downscaling (DINO resizes bicubically).

All geometry (boxes and flips of every view) is drawn before any photometric parameter, so a
seeded generator gives the same geometry with ``photometric`` on or off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from patchdino.config.checks import interval_problem, literal_values
from patchdino.config.views import Geometry, ViewsConfig
from patchdino.data.batch import MultiCropBatch
from patchdino.data.crops import sample_crop_boxes, sample_flips
from patchdino.data.geometry import ViewGeometry
from patchdino.data.photometric import PhotometricAugmentation
from patchdino.data.photometric import normalize as _normalize
from patchdino.data.resample import crop_resize, replicate_padding

GEOMETRIES: tuple[str, ...] = literal_values(Geometry) or ()
"""``views.geometry`` values: crop boxes and flips drawn per sample or once per batch."""


@dataclass
class MultiCropSpec(ViewsConfig):
    """Views to cut from every image: the view settings of a config and what they need besides.

    The configurable fields (sizes, scales, ``num_local``, ``ratio``, flip and photometric
    probabilities) are those of :class:`~patchdino.config.ViewsConfig`, with its defaults;
    :meth:`from_views` copies them from a config section. Lists are accepted for tuples
    (e.g. from YAML). The configurable fields are checked by the section's own checks
    (:meth:`~patchdino.config.views.ViewsConfig.problems`), the others here.

    Attributes:
        patch_size: ViT patch side; must divide both view sizes.
        num_global: number of global views.
        mean: per-channel normalisation mean; with 1-channel images and 3 entries, their
            average is used.
        std: per-channel normalisation std, treated like ``mean``.
        color_jitter: jitter strengths ``(brightness, contrast, saturation, hue)``.
        blur_sigma: range of the blur's standard deviation, in view pixels.
    """

    patch_size: int = 16
    num_global: int = 2
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    @classmethod
    def from_views(cls, views: ViewsConfig, **fields_: Any) -> MultiCropSpec:
        """The spec of the config section ``views``, with ``fields_`` of this class added."""
        configured = {f.name: getattr(views, f.name) for f in fields(ViewsConfig)}
        return cls(**configured, **fields_)

    def __post_init__(self) -> None:
        for f in fields(self):  # accept lists, e.g. from YAML
            if isinstance(getattr(self, f.name), list):
                setattr(self, f.name, tuple(getattr(self, f.name)))
        problems = self.problems("") + self.patch_problems(self.patch_size, "", "patch_size")
        blur_sigma = interval_problem("blur_sigma", self.blur_sigma)
        if blur_sigma is not None:
            problems.append(blur_sigma)
        if self.num_global < 1:
            problems.append(f"num_global must be >= 1, got {self.num_global}")
        if len(self.color_jitter) != 4 or min(self.color_jitter) < 0:
            problems.append(f"color_jitter needs 4 non-negative strengths: {self.color_jitter}")
        if len(self.mean) not in (1, 3) or len(self.std) != len(self.mean):
            problems.append(f"mean and std need 1 or 3 entries each, got {self.mean}, {self.std}")
        elif min(self.std) <= 0:
            problems.append(f"std must be positive, got {self.std}")
        if problems:
            raise ValueError(problems[0])


def _as_chw(image: Image.Image | Tensor) -> Tensor:
    if isinstance(image, Image.Image):
        mode = "L" if image.mode in ("1", "L", "LA") else "RGB"
        pixels = torch.from_numpy(np.array(image.convert(mode)))  # (H, W) or (H, W, 3)
        return pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)
    if image.ndim == 2:
        return image.unsqueeze(0)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image tensors must be (H, W) or (C, H, W), C = 1 or 3: {image.shape}")
    return image


def images_to_batch(images: Sequence[Image.Image | Tensor]) -> tuple[Tensor, Tensor]:
    """Pad images of any sizes onto one canvas (bottom/right) for ``MultiCropAugmentation``.

    Args:
        images: PIL images (modes "1", "L" and "LA" become 1-channel, others RGB) or
            ``(C, H, W)`` / ``(H, W)`` CPU tensors, uint8 or float in ``[0, 1]``. If some are
            RGB and some grayscale, the grayscale ones are repeated to 3 channels.

    Returns:
        ``(B, C, H, W)`` zero-padded canvas (uint8, or float32 if any input is float) and
        ``(B, 2)`` long ``(height, width)`` of each image.
    """
    if len(images) == 0:
        raise ValueError("images_to_batch needs at least one image")
    tensors = [_as_chw(image) for image in images]
    channels = max(t.shape[0] for t in tensors)
    floating = any(t.is_floating_point() for t in tensors)
    dtype = torch.float32 if floating else torch.uint8
    sizes = torch.tensor([t.shape[1:] for t in tensors], dtype=torch.long)  # (B, 2)
    height, width = (int(v) for v in sizes.max(dim=0).values)
    canvas = torch.zeros(len(tensors), channels, height, width, dtype=dtype)
    for b, t in enumerate(tensors):
        if floating and not t.is_floating_point():
            t = t / 255.0
        canvas[b, :, : t.shape[1], : t.shape[2]] = t.to(dtype).expand(channels, -1, -1)
    return canvas, sizes


def _unit_float(images: Tensor) -> Tensor:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (B, C, H, W) with C = 1 or 3, got {images.shape}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
    return images.float()


def _check_sizes(image_sizes: Tensor, images: Tensor) -> Tensor:
    batch, _, height, width = images.shape
    if image_sizes.shape != (batch, 2):
        raise ValueError(f"image_sizes must have shape ({batch}, 2), got {image_sizes.shape}")
    canvas = torch.tensor([height, width], device=image_sizes.device)
    if bool(((image_sizes < 1) | (image_sizes > canvas)).any()):
        raise ValueError(f"image_sizes must lie in [1, {height}] x [1, {width}]")
    return image_sizes.to(device=images.device, dtype=torch.long)


class MultiCropAugmentation:
    """Cut ``spec.num_global`` global and ``spec.num_local`` local views from every image.

    Args:
        spec: the views to produce.
    """

    def __init__(self, spec: MultiCropSpec) -> None:
        self.spec = spec
        brightness, contrast, saturation, hue = spec.color_jitter
        self.photometric = [
            PhotometricAugmentation(
                color_jitter_p=spec.color_jitter_p,
                brightness=brightness,
                contrast=contrast,
                saturation=saturation,
                hue=hue,
                grayscale_p=spec.grayscale_p,
                blur_p=blur_p,
                blur_sigma=spec.blur_sigma,
                solarize_p=solarize_p,
            )
            for blur_p, solarize_p in zip(spec.blur_p, spec.solarize_p)
        ]  # global 1, global 2, locals

    def __call__(
        self,
        images: Tensor,
        image_sizes: Tensor | None = None,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        normalize: bool = True,
    ) -> MultiCropBatch:
        """Views of a batch.

        Args:
            images: ``(B, C, H, W)`` uint8 or float (in ``[0, 1]``) canvas, C = 1 or 3.
            image_sizes: ``(B, 2)`` long ``(height, width)`` of each image's valid region at
                the top-left of the canvas; None means the whole canvas.
            labels: optional ``(B,)`` labels, passed through.
            generator: optional source of randomness (on any device) for reproducible views.
            normalize: False returns the views in ``[0, 1]`` (for display) instead of
                normalised with ``spec.mean`` and ``spec.std``.

        Returns:
            The views, each ``(B, C, S, S)`` float32, with their geometry; boxes are in pixels
            of ``images``.
        """
        spec = self.spec
        pixels = _unit_float(images)
        if image_sizes is None:
            image_sizes = torch.tensor(pixels.shape[-2:], device=pixels.device).expand(
                pixels.shape[0], 2
            )
        else:
            image_sizes = _check_sizes(image_sizes, pixels)
            pixels = replicate_padding(pixels, image_sizes)
        if labels is not None and labels.shape != (pixels.shape[0],):
            raise ValueError(f"labels must have shape ({pixels.shape[0]},), got {labels.shape}")

        global_views, global_geometry = self._views(
            pixels, image_sizes, spec.num_global, spec.global_size, spec.global_scale, generator
        )
        local_views, local_geometry = self._views(
            pixels, image_sizes, spec.num_local, spec.local_size, spec.local_scale, generator
        )
        if spec.photometric:
            global_views = [
                self.photometric[min(i, 1)](view, generator) for i, view in enumerate(global_views)
            ]
            if local_views:
                batch = torch.cat(local_views)  # one call for all local views
                local_views = list(self.photometric[2](batch, generator).split(pixels.shape[0]))
        if normalize:
            mean, std = spec.mean, spec.std
            if pixels.shape[1] == 1 and len(mean) == 3:
                mean, std = (sum(mean) / 3,), (sum(std) / 3,)
            global_views = [_normalize(v, mean, std) for v in global_views]
            local_views = [_normalize(v, mean, std) for v in local_views]
        return MultiCropBatch(global_views, local_views, global_geometry, local_geometry, labels)

    def _views(
        self,
        pixels: Tensor,
        image_sizes: Tensor,
        count: int,
        size: int,
        scale: tuple[float, float],
        generator: torch.Generator | None,
    ) -> tuple[list[Tensor], list[ViewGeometry]]:
        """``count`` views of side ``size`` per sample: lists of ``(B, C, S, S)`` and geometry."""
        if count == 0:
            return [], []
        batch, device = pixels.shape[0], pixels.device
        group = batch if self.spec.geometry == "per_batch" else 1  # samples sharing a draw
        sizes = image_sizes.repeat(count, 1)  # (count * B, 2), view-major
        boxes = sample_crop_boxes(sizes, scale, self.spec.ratio, generator, group=group)
        flips = sample_flips(count * batch, self.spec.flip_p, generator, device, group=group)
        index = torch.arange(batch, device=device).repeat(count)
        views = crop_resize(pixels, boxes, size, flips, index)  # (count * B, C, S, S)
        geometry = [
            ViewGeometry(
                boxes[v * batch : (v + 1) * batch],
                flips[v * batch : (v + 1) * batch],
                size,
                self.spec.patch_size,
            )
            for v in range(count)
        ]
        return list(views.split(batch)), geometry
