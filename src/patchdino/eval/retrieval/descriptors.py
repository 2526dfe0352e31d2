"""Global image descriptors for retrieval and copy detection, and how folders are encoded.

A descriptor is the CLS token, the generalised-mean (GeM) pool of the patch tokens, or both
concatenated (as DINO does for copy detection), each part L2-normalised, the whole
L2-normalised again so that dot products are cosine similarities. :class:`PcaWhitening`, learned
on a separate set of distractor images, optionally decorrelates them.

Retrieval images are never centre-cropped: a copy or a query box may sit anywhere in its image,
so each image is resized whole to ``S x S`` (the ``"resize"`` evaluation transform of
:mod:`patchdino.eval.common.eval_data`) whatever its data set kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from patchdino.data.datasets import CanvasDataset
from patchdino.error_text import first_line
from patchdino.eval.common.pipeline import EvalSetup, EvalSetupError, Extraction
from patchdino.eval.retrieval.options import DESCRIPTORS, GEM_POWER
from patchdino.models.backbone import prefix_count


def gem(tokens: Tensor, power: float = GEM_POWER, eps: float = 1e-6) -> Tensor:
    """Generalised mean of patch tokens: ``mean(clamp(x, eps) ** p) ** (1 / p)`` per channel.

    Args:
        tokens: ``(B, N, D)`` patch tokens.
        power: ``p``; 1 is the mean of the clamped tokens, large values approach the maximum.
        eps: lower clamp, so that the power of negative activations is defined.

    Returns:
        ``(B, D)`` float32 pooled features.
    """
    if power <= 0:
        raise ValueError(f"the GeM power must be > 0, got {power}")
    clamped = tokens.float().clamp(min=eps)
    return clamped.pow(power).mean(dim=1).pow(1.0 / power)


class RetrievalDescriptor(nn.Module):
    """A backbone followed by the retrieval descriptor: images to unit vectors.

    Args:
        backbone: maps ``(B, C, S, S)`` images to ``(B, P + N, D)`` tokens: CLS, any
            registers, then patches.
        descriptor: one of :data:`DESCRIPTORS`.
        power: GeM exponent.
    """

    def __init__(self, backbone: nn.Module, descriptor: str = "both", power: float = GEM_POWER):
        super().__init__()
        if descriptor not in DESCRIPTORS:
            raise ValueError(f"descriptor must be one of {DESCRIPTORS}, got {descriptor!r}")
        if power <= 0:
            raise ValueError(f"the GeM power must be > 0, got {power}")
        self.backbone = backbone
        self.descriptor = descriptor
        self.power = power

    def forward(self, images: Tensor) -> Tensor:
        """``(B, C, S, S)`` normalised images to ``(B, D)`` (``(B, 2D)`` for both) unit vectors."""
        tokens = self.backbone(images)  # (B, P + N, D)
        parts = []
        if self.descriptor in ("cls", "both"):
            parts.append(F.normalize(tokens[:, 0].float(), dim=1))
        if self.descriptor in ("gem", "both"):
            patches = tokens[:, prefix_count(self.backbone) :]  # (B, N, D)
            parts.append(F.normalize(gem(patches, self.power), dim=1))
        return F.normalize(torch.cat(parts, dim=1), dim=1)


@dataclass(frozen=True)
class PcaWhitening:
    """PCA whitening: centre, project on the principal axes, divide by their spread.

    Attributes:
        mean: ``(D,)`` mean of the features it was learned on.
        projection: ``(D, K)`` principal axes, each divided by the square root of its variance.
    """

    mean: Tensor
    projection: Tensor

    @classmethod
    def fit(cls, features: Tensor, dim: int | None = None, shrinkage: float = 1e-6) -> PcaWhitening:
        """Learn the whitening of ``features``.

        Args:
            features: ``(M, D)`` features of distractor images, ``M >= 2``.
            dim: axes kept (default: all ``min(M - 1, D)`` axes that carry variance).
            shrinkage: variances below ``shrinkage`` times the largest are raised to it, so
                near-empty axes are not blown up.

        Raises:
            EvalSetupError: fewer than two feature vectors or ``dim`` out of range.
        """
        if features.ndim != 2 or features.shape[0] < 2:
            raise EvalSetupError(
                f"whitening needs at least 2 images, got {tuple(features.shape)} features"
            )
        x = features.double()
        mean = x.mean(dim=0)  # (D,)
        centred = x - mean
        covariance = centred.T @ centred / (x.shape[0] - 1)  # (D, D)
        variances, axes = torch.linalg.eigh(covariance)  # ascending
        variances, axes = variances.flip(0), axes.flip(1)
        most = min(int(x.shape[0]) - 1, int(x.shape[1]))
        keep = most if dim is None else dim
        if not 1 <= keep <= most:
            raise EvalSetupError(
                f"the whitening dimension must lie in [1, {most}] for {x.shape[0]} images of "
                f"{x.shape[1]} features, got {keep}"
            )
        floor = variances[0].clamp(min=0) * shrinkage + 1e-12
        spread = variances[:keep].clamp(min=floor).sqrt()
        projection = axes[:, :keep] / spread  # (D, K)
        return cls(mean.float(), projection.float())

    def __call__(self, features: Tensor) -> Tensor:
        """``(N, D)`` features to ``(N, K)`` whitened, L2-normalised features."""
        mean, projection = self.mean.to(features), self.projection.to(features)
        return F.normalize((features - mean) @ projection, dim=1)


def descriptor_model(setup: EvalSetup, descriptor: str, power: float = GEM_POWER) -> nn.Module:
    """The set-up's backbone followed by :class:`RetrievalDescriptor`.

    Raises:
        EvalSetupError: the raw-pixel baseline (no network) or an unknown descriptor.
    """
    if setup.backbone is None:
        raise EvalSetupError("pixels has no network to describe images with")
    try:
        return RetrievalDescriptor(setup.backbone, descriptor, power)
    except ValueError as err:
        raise EvalSetupError(str(err)) from err


def open_folder(
    setup: EvalSetup, path: str | Path, split: str, role: str, channels: int | None = None
) -> CanvasDataset:
    """A data set split other than the set-up's own (queries, distractors), for retrieval.

    Args:
        setup: see :func:`patchdino.eval.common.pipeline.prepare`.
        path: data set folder of any kind (a flat folder of images for queries).
        split: the split to open.
        role: what the folder is for, named in errors (``"queries"``).
        channels: channels to load when the set-up leaves them open (pixels); give the
            database's so that every folder agrees.

    Raises:
        EvalSetupError: the folder is missing, empty or of no known layout.
    """
    from patchdino.eval.common.eval_data import data_kind_of
    from patchdino.eval.common.eval_data import open_split as open_eval_split

    try:
        kind = data_kind_of(str(path))
        return open_eval_split(
            str(path),
            split,
            kind,
            setup.channels if setup.channels is not None else channels,
            setup.image_size,
            canvas=setup.config.data.canvas,
            on_bad_image=setup.on_bad_image,
        )
    except ValueError as err:
        raise EvalSetupError(f"{role}: {first_line(err)}") from err


def encode(
    setup: EvalSetup,
    dataset: torch.utils.data.Dataset[tuple[Tensor, Tensor, int]],
    model: nn.Module | None,
    extraction: Extraction | None = None,
    desc: str = "features",
    pixel_stats: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    """Descriptors of every image of ``dataset``, each resized whole to ``S x S``.

    Args:
        setup: see :func:`patchdino.eval.common.pipeline.prepare`.
        dataset: canvas items ``(image, size, label)``.
        model: :func:`descriptor_model`, or None for raw pixels.
        extraction: batch size, workers, progress bars (default: :class:`Extraction`'s).
        desc: progress bar label.
        pixel_stats: per-pixel ``(mean, std)`` for raw pixels (default: this set's own).

    Returns:
        ``(N, D)`` float32 unit vectors on the CPU, and the pixel statistics used (None for a
        model).

    Raises:
        EvalSetupError: no images, or images of different sizes without an image size.
    """
    from patchdino.eval.common.pipeline import split_features

    extraction = Extraction() if extraction is None else extraction
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise EvalSetupError(f"{desc}: no images")
    features, _, stats = split_features(
        setup,
        dataset,  # type: ignore[arg-type]
        model,
        extraction,
        desc=desc,
        pixel_stats=pixel_stats,
        mode="resize",
    )
    return F.normalize(features, dim=1), stats
