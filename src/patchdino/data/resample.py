"""Crop, resize and flip a batch of images in one call.

Coordinates follow ``ViewGeometry``: source pixel ``(y, x)`` covers ``[y, y + 1) x [x, x + 1)``,
so its centre is at ``(y + 0.5, x + 0.5)``. Output pixel ``(i, j)`` of a view of side ``S`` cut
from box ``(t, l, h, w)`` covers the source region ``t + [i, i + 1) * h / S`` by
``l + [j, j + 1) * w / S`` and takes the mean of ``ceil(h / S) x ceil(w / S)`` bilinear samples
spread evenly over that region (``torchvision.ops.roi_align`` with ``aligned=True`` and an
adaptive sampling ratio). Upscaling therefore reads one bilinear sample at the output pixel's
centre, and downscaling averages the covered area, which avoids aliasing. A flipped view is the
resized crop mirrored left-right: its column ``j`` shows column ``S - 1 - j`` of the crop.

Edges: samples are bilinear between the four nearest pixel centres and are clamped to the edge
pixels of the image (within half a pixel of its border). Pixels beyond a sample's valid region
(bottom/right padding of a shared canvas) must be filled first with ``replicate_padding`` so that
clamping happens at the edge of each sample's own image rather than blending with the padding.
Away from these half-pixel margins, a view's pixels are exactly its box resized.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align


def replicate_padding(images: Tensor, image_sizes: Tensor) -> Tensor:
    """Fill each sample's padding with copies of its last valid row and column.

    Args:
        images: ``(B, C, H, W)`` tensor; sample ``b`` is valid in rows ``< image_sizes[b, 0]``
            and columns ``< image_sizes[b, 1]``.
        image_sizes: ``(B, 2)`` integer tensor ``(height, width)`` of each valid region.

    Returns:
        ``(B, C, H, W)`` tensor equal to ``images`` inside each valid region and extended with
        clamp-to-edge values outside it.
    """
    batch, channels, height, width = images.shape
    sizes = image_sizes.to(device=images.device, dtype=torch.long)
    rows = torch.arange(height, device=images.device).unsqueeze(0)  # (1, H)
    cols = torch.arange(width, device=images.device).unsqueeze(0)  # (1, W)
    rows = torch.minimum(rows, sizes[:, 0:1] - 1)  # (B, H)
    cols = torch.minimum(cols, sizes[:, 1:2] - 1)  # (B, W)
    shape = (batch, channels, height, width)
    out = images.gather(2, rows[:, None, :, None].expand(shape))
    return out.gather(3, cols[:, None, None, :].expand(shape))


def crop_resize(
    images: Tensor,
    boxes: Tensor,
    size: int,
    flipped: Tensor,
    batch_index: Tensor | None = None,
) -> Tensor:
    """Cut boxes out of a batch of images, resize them to squares and flip some of them.

    Args:
        images: ``(B, C, H, W)`` floating-point tensor.
        boxes: ``(K, 4)`` tensor ``[top, left, height, width]`` in source pixels.
        size: side ``S`` of the square outputs.
        flipped: ``(K,)`` bool tensor, True where the output is mirrored left-right.
        batch_index: ``(K,)`` integer tensor, the image each box is cut from. None means box
            ``k`` belongs to image ``k`` (then ``K`` must equal ``B``).

    Returns:
        ``(K, C, S, S)`` tensor of the dtype of ``images``.
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"images must be a floating-point (B, C, H, W) tensor, got {images.dtype} "
            f"of shape {tuple(images.shape)}"
        )
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (K, 4), got {tuple(boxes.shape)}")
    count = boxes.shape[0]
    if flipped.shape != (count,):
        raise ValueError(f"flipped must have shape ({count},), got {tuple(flipped.shape)}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if batch_index is None:
        if count != images.shape[0]:
            raise ValueError(
                f"{count} boxes for {images.shape[0]} images: pass batch_index to map boxes "
                "to images"
            )
        batch_index = torch.arange(count, device=images.device)
    elif batch_index.shape != (count,):
        raise ValueError(f"batch_index must have shape ({count},), got {batch_index.shape}")

    boxes = boxes.to(device=images.device, dtype=images.dtype)
    top, left, height, width = boxes.unbind(dim=1)
    rois = torch.stack(
        [batch_index.to(boxes), left, top, left + width, top + height], dim=1
    )  # (K, 5): image index, x1, y1, x2, y2
    out = roi_align(images, rois, output_size=(size, size), sampling_ratio=-1, aligned=True)
    mirror = flipped.to(device=images.device, dtype=torch.bool).view(count, 1, 1, 1)
    return torch.where(mirror, out.flip(-1), out)
