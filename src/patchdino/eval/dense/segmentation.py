"""Linear semantic-segmentation probe on frozen patch tokens.

The protocol of DINOv2's "linear" segmentation evaluation: the patch tokens of the last
``layers`` blocks of the frozen backbone are concatenated into a ``(B, layers * D, h, w)`` map;
a batch norm and a 1 x 1 convolution (:class:`SegmentationProbe`) turn it into class logits,
which are upsampled bilinearly to the mask size; cross-entropy ignores :data:`IGNORE` pixels.

Training images have their shorter side resized to the image size ``S`` (masks always with
nearest-neighbour interpolation), then a random ``S x S`` crop and a random horizontal flip.
Evaluation predicts at the original mask size: ``slide`` resizes the shorter side to ``S`` and
averages the logits of overlapping ``S x S`` windows (stride ``2S / 3``); ``resize`` squeezes
the whole image to ``S x S``. Scores: :mod:`patchdino.eval.dense.segmentation_metrics`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset, get_worker_info
from tqdm import tqdm

from patchdino.eval.common.eval_data import (
    Normalise,
    resize_images,
    resize_shorter_side,
    subset_indices,
)
from patchdino.eval.dense.options import SEGMENTATION_EVAL_MODES
from patchdino.eval.dense.segmentation_data import IGNORE, SegmentationDataset
from patchdino.eval.dense.segmentation_metrics import (
    SegmentationScores,
    confusion_matrix,
    segmentation_scores,
)
from patchdino.models import Backbone
from patchdino.precision import autocast_for

T = TypeVar("T")


@dataclass(frozen=True)
class ProbeSettings:
    """How the probe is trained and evaluated.

    Attributes:
        image_size: side ``S`` of the training crops and evaluation windows (a multiple of
            the patch size).
        layers: last blocks whose patch tokens are concatenated.
        epochs: passes over the training images.
        lr: peak AdamW learning rate (cosine decay over all steps).
        weight_decay: AdamW weight decay.
        batch_size: images per step, and per evaluation batch.
        eval_mode: ``"slide"`` or ``"resize"``.
        max_train: train on a seeded random subset of this many images.
        max_test: evaluate a seeded random subset of this many images.
        seed: seed of the subsets, crops, flips and the probe's initialisation.
        num_workers: data loader worker processes.
        progress: show progress bars.
    """

    image_size: int
    layers: int = 1
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    eval_mode: str = "slide"
    max_train: int | None = None
    max_test: int | None = None
    seed: int = 0
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        problems = probe_problems(dataclasses.asdict(self))
        if problems:
            raise ValueError(problems[0])


def probe_problems(values: Mapping[str, Any], name: Callable[[str], str] = str) -> list[str]:
    """Every impossible value among probe settings given by field name (the one check of
    :class:`ProbeSettings`, which the ``segment`` command runs before any work).

    Args:
        values: some or all fields of :class:`ProbeSettings`; None values are not checked.
        name: how a field is named in the messages (e.g. as a command-line option).
    """
    problems = []
    for key in ("image_size", "layers", "epochs", "batch_size", "max_train", "max_test"):
        value = values.get(key)
        if value is not None and value < 1:
            problems.append(f"{name(key)} must be at least 1, got {value}")
    lr, decay = values.get("lr"), values.get("weight_decay")
    if (lr is not None and lr <= 0) or (decay is not None and decay < 0):
        problems.append(f"{name('lr')} must be > 0 and {name('weight_decay')} >= 0")
    mode = values.get("eval_mode")
    if mode is not None and mode not in SEGMENTATION_EVAL_MODES:
        problems.append(
            f"{name('eval_mode')} must be one of {', '.join(SEGMENTATION_EVAL_MODES)}, got {mode!r}"
        )
    return problems


@dataclass
class SegmentationResult:
    """Scores of the probe on the evaluation images and how it trained.

    Attributes:
        scores: mIoU, pixel accuracy, per-class IoU (percent).
        num_train: training images.
        num_test: evaluated images.
        feature_dim: channels of the patch-token map.
        history: mean training loss per epoch.
    """

    scores: SegmentationScores
    num_train: int
    num_test: int
    feature_dim: int
    history: list[float] = field(default_factory=list)


def patch_feature_map(backbone: Backbone, images: Tensor, layers: int = 1) -> Tensor:
    """Patch tokens of the last ``layers`` blocks as a feature map.

    Args:
        backbone: the frozen ViT.
        images: ``(B, C, H, W)`` normalised images, sides multiples of the patch size ``p``.
        layers: number of last blocks, concatenated earliest first.

    Returns:
        ``(B, layers * D, H / p, W / p)`` features.
    """
    h, w = images.shape[-2] // backbone.patch_size, images.shape[-1] // backbone.patch_size
    outputs = backbone.get_intermediate_layers(images, layers)  # layers x (B, P + h w, D)
    tokens = torch.cat([backbone.patch_tokens(out) for out in outputs], dim=-1)  # (B, h w, L D)
    return tokens.transpose(1, 2).reshape(images.shape[0], -1, h, w)


class SegmentationProbe(nn.Module):
    """Batch norm and a 1 x 1 convolution from patch features to class logits.

    Args:
        in_dim: channels of the feature map.
        num_classes: ``K``.
    """

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_dim)
        self.classifier = nn.Conv2d(in_dim, num_classes, kernel_size=1, bias=False)
        self.bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.normal_(self.classifier.weight, std=0.01)

    def forward(self, features: Tensor) -> Tensor:
        """``(B, in_dim, h, w)`` features to ``(B, K, h, w)`` logits."""
        return self.classifier(self.norm(features)) + self.bias[:, None, None]


def resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """``(h, w)`` class mask to ``size`` by nearest neighbour (never mixing labels)."""
    if tuple(mask.shape) == size:
        return mask
    return F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()


class TrainCollate:
    """Training batches: shorter side to ``S``, a random ``S x S`` crop, a random flip.

    Draws from its own generator; in a loader worker, from one seeded by the worker's seed
    (which the loader changes every epoch).

    Args:
        size: ``S``.
        seed: seed of the draws in the main process.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.generator = torch.Generator().manual_seed(seed)
        self.worker_generator: tuple[int, torch.Generator] | None = None

    def _generator(self) -> torch.Generator:
        info = get_worker_info()
        if info is None:
            return self.generator
        if self.worker_generator is None or self.worker_generator[0] != info.seed:
            self.worker_generator = (info.seed, torch.Generator().manual_seed(info.seed))
        return self.worker_generator[1]

    def __call__(self, items: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """Pairs to ``(B, C, S, S)`` uint8 images and ``(B, S, S)`` long masks."""
        generator = self._generator()
        images, masks = [], []
        s = self.size
        for image, mask in items:
            h, w = resize_shorter_side(int(image.shape[-2]), int(image.shape[-1]), s)
            image, mask = resize_images(image[None], h, w)[0], resize_mask(mask, (h, w))
            top = int(torch.randint(0, h - s + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - s + 1, (1,), generator=generator))
            image = image[:, top : top + s, left : left + s]
            mask = mask[top : top + s, left : left + s]
            if bool(torch.rand((), generator=generator) < 0.5):
                image, mask = image.flip(-1), mask.flip(-1)
            images.append(image)
            masks.append(mask)
        return torch.stack(images), torch.stack(masks)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Starts of windows of ``window`` pixels covering ``[0, length)`` with ``stride``."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


class DensePredictor:
    """Class logits at the original resolution from the frozen backbone and a probe.

    Args:
        backbone: the frozen ViT.
        probe: the trained probe.
        normalise: uint8 images to the backbone's input.
        size: window side ``S``.
        layers: last blocks whose patch tokens the probe reads.
        mode: ``"slide"`` or ``"resize"``.
    """

    def __init__(
        self,
        backbone: Backbone,
        probe: SegmentationProbe,
        normalise: Normalise,
        size: int,
        layers: int,
        mode: str,
    ) -> None:
        self.backbone = backbone
        self.probe = probe
        self.normalise = normalise
        self.size = size
        self.layers = layers
        self.mode = mode

    def window_logits(self, images: Tensor) -> Tensor:
        """``(B, C, S, S)`` uint8 on the device to ``(B, K, S, S)`` float32 logits."""
        device = images.device
        with torch.inference_mode(), autocast_for("auto", device):
            features = patch_feature_map(self.backbone, self.normalise(images), self.layers)
            logits = self.probe(features.float())
        return F.interpolate(
            logits.float(), size=images.shape[-2:], mode="bilinear", align_corners=False
        )

    def __call__(self, images: Tensor) -> Tensor:
        """``(B, C, H, W)`` uint8 images (on the device) to ``(B, K, H, W)`` logits."""
        height, width = int(images.shape[-2]), int(images.shape[-1])
        s = self.size
        if self.mode == "resize":
            logits = self.window_logits(resize_images(images, s, s))
        else:
            h, w = resize_shorter_side(height, width, s)
            resized = resize_images(images, h, w)
            stride = max(1, math.ceil(2 * s / 3))
            boxes = [
                (top, left)
                for top in window_starts(h, s, stride)
                for left in window_starts(w, s, stride)
            ]
            crops = torch.cat([resized[:, :, t : t + s, x : x + s] for t, x in boxes])
            window = self.window_logits(crops)  # (n B, K, S, S), window-major
            b = images.shape[0]
            total = window.new_zeros((b, window.shape[1], h, w))
            count = window.new_zeros((1, 1, h, w))
            for i, (top, left) in enumerate(boxes):
                total[:, :, top : top + s, left : left + s] += window[i * b : (i + 1) * b]
                count[:, :, top : top + s, left : left + s] += 1
            logits = total / count
        if tuple(logits.shape[-2:]) == (height, width):
            return logits
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)


def train_segmentation_probe(
    backbone: Backbone,
    normalise: Normalise,
    train_set: SegmentationDataset,
    test_set: SegmentationDataset,
    settings: ProbeSettings,
    device: torch.device,
) -> SegmentationResult:
    """Train a :class:`SegmentationProbe` on ``train_set`` and score it on ``test_set``.

    Args:
        backbone: the frozen ViT (left in eval mode, without gradients).
        normalise: uint8 images to the backbone's input (the training statistics).
        train_set: images and masks the probe learns from.
        test_set: images and masks it is scored on (at their own resolution).
        settings: see :class:`ProbeSettings`.
        device: where everything runs.

    Raises:
        ValueError: the two sets disagree on their classes, or the image size is not a
            multiple of the patch size.
    """
    if list(train_set.classes) != list(test_set.classes):
        raise ValueError("the train and evaluation splits have different classes")
    if settings.image_size % backbone.patch_size:
        raise ValueError(
            f"image size {settings.image_size} is not a multiple of the patch size "
            f"{backbone.patch_size}"
        )
    num_classes = len(train_set.classes)
    backbone = backbone.to(device).eval().requires_grad_(False)
    normalise = normalise.to(device)
    torch.manual_seed(settings.seed)
    probe = SegmentationProbe(settings.layers * backbone.embed_dim, num_classes).to(device)
    train_source = _subset(train_set, settings.max_train, settings.seed)
    loader = DataLoader(
        train_source,
        batch_size=settings.batch_size,
        shuffle=True,
        drop_last=len(train_source) > settings.batch_size,
        num_workers=settings.num_workers,
        collate_fn=TrainCollate(settings.image_size, settings.seed),
        generator=torch.Generator().manual_seed(settings.seed),
    )
    optimiser = torch.optim.AdamW(
        probe.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
    )
    total = settings.epochs * len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
    )
    history: list[float] = []
    for epoch in range(settings.epochs):
        probe.train()
        losses = []
        for images, masks in _progress(loader, settings.progress, f"probe epoch {epoch + 1}"):
            images, masks = images.to(device), masks.to(device)
            with torch.no_grad(), autocast_for("auto", device):
                features = patch_feature_map(backbone, normalise(images), settings.layers)
            logits = probe(features.float())  # (B, K, h, w)
            logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear")
            loss = F.cross_entropy(logits, masks, ignore_index=IGNORE)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(float(loss.detach()))
        history.append(sum(losses) / max(1, len(losses)))
    probe.eval()
    predictor = DensePredictor(
        backbone, probe, normalise, settings.image_size, settings.layers, settings.eval_mode
    )
    test_source = _subset(test_set, settings.max_test, settings.seed)
    confusion = evaluate_predictor(predictor, test_source, num_classes, settings, device)
    return SegmentationResult(
        segmentation_scores(confusion),
        len(train_source),
        len(test_source),
        settings.layers * backbone.embed_dim,
        history,
    )


def evaluate_predictor(
    predictor: DensePredictor,
    dataset: Dataset[tuple[Tensor, Tensor]],
    num_classes: int,
    settings: ProbeSettings,
    device: torch.device,
) -> Tensor:
    """``(K, K)`` confusion matrix of the predictor's argmax over ``dataset``.

    Images of one size within a loader batch are predicted together.
    """
    loader: DataLoader[tuple[Tensor, Tensor]] = DataLoader(
        dataset,
        batch_size=settings.batch_size,
        shuffle=False,
        num_workers=settings.num_workers,
        collate_fn=list,
    )
    confusion = torch.zeros((num_classes, num_classes), dtype=torch.long)
    for items in _progress(loader, settings.progress, "segment"):
        by_size: dict[tuple[int, ...], list[tuple[Tensor, Tensor]]] = {}
        for image, mask in items:
            by_size.setdefault(tuple(image.shape), []).append((image, mask))
        for group in by_size.values():
            images = torch.stack([image for image, _ in group]).to(device)
            masks = torch.stack([mask for _, mask in group])  # (b, H, W)
            prediction = predictor(images).argmax(dim=1).cpu()  # (b, H, W)
            confusion += confusion_matrix(prediction, masks, num_classes, IGNORE)
    return confusion


def _subset(
    dataset: SegmentationDataset, limit: int | None, seed: int
) -> SegmentationDataset | Subset[tuple[Tensor, Tensor]]:
    indices = subset_indices(len(dataset), limit, seed)
    return dataset if indices is None else Subset(dataset, indices.tolist())


def _progress(loader: Iterable[T], show: bool, desc: str) -> Iterable[T]:
    return tqdm(loader, desc=desc, disable=not show, leave=False)
