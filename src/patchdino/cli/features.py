"""``patchdino features``: frozen features of one data set split, saved to a file.

Also holds what the evaluation commands (``features``, ``knn``, ``linear``) share: their
common options, the weights-and-data set-up (:func:`prepare`) and feature extraction of a
split (:func:`split_features`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from patchdino.cli.errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from patchdino.config import Config
    from patchdino.data.datasets import CanvasDataset
    from patchdino.models import Backbone

PIXELS = "pixels"
RANDOM = "random"
OUTPUT_SUFFIXES = (".pt", ".npz")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by the evaluation commands."""
    parser.add_argument("--data", required=True, help="data set folder (any supported kind)")
    parser.add_argument(
        "--weights",
        required=True,
        metavar="CKPT|random|pixels",
        help="checkpoint.pt of 'patchdino pretrain' (or its run folder), a .safetensors "
        "export, 'random' (the architecture of --config with random weights), or 'pixels' "
        "(raw-pixel baseline)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML config: the architecture for 'random' (defaults without it); with a "
        "checkpoint, its tensors must fit this architecture",
    )
    parser.add_argument(
        "--checkpoint-key",
        default="teacher",
        metavar="teacher|student",
        help="network of the checkpoint to evaluate (default: teacher)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        help="side of the square images the model sees (default: views.global_size of the "
        "config; the native size of in-memory data sets for pixels without --config)",
    )
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--num-workers", type=int, default=0, help="data loader workers")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument(
        "--split", default="train", metavar="train|test|val", help="split to encode"
    )
    parser.add_argument(
        "--pool",
        default="cls",
        metavar="cls|mean|both",
        help="CLS token, mean patch token, or both concatenated",
    )
    parser.add_argument("--max-images", type=int, help="encode a seeded random subset")
    parser.add_argument(
        "--output",
        type=Path,
        required=True,
        help="file: .pt (torch.save of {'features', 'labels'}) or .npz",
    )


@dataclass
class EvalSetup:
    """What the evaluation commands need: the model input pipeline and the network.

    Attributes:
        data: the data set folder.
        kind: its kind.
        backbone: the frozen network, or None for the raw-pixel baseline.
        config: configuration of the architecture (defaults for pixels without --config).
        channels: image channels to load (None: the data set's own).
        image_size: side of the evaluation images (None: native size).
        mean: normalisation means (unused for pixels).
        std: normalisation standard deviations.
        device: where the network runs.
    """

    data: str
    kind: str
    backbone: Backbone | None
    config: Config
    channels: int | None
    image_size: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    device: torch.device


def resolve_device(name: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` as a device that exists here."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if not (name in ("cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA device is available")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA devices")
        return device
    return torch.device(name)


def check_positive(**values: int | None) -> None:
    """Raise a UsageError for any given option that is below 1."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def prepare(args: argparse.Namespace) -> EvalSetup:
    """Load the weights named by ``args.weights`` and decide how images are prepared.

    Raises:
        UsageError: missing or incompatible weights, an unknown data layout, a bad option.
    """
    from patchdino.config import Config, ConfigError, load_config
    from patchdino.eval.backbone_loading import load_backbone
    from patchdino.eval.eval_data import data_kind_of
    from patchdino.train.build import normalisation

    check_positive(batch_size=args.batch_size, image_size=args.image_size)
    if args.num_workers < 0:
        raise UsageError(f"--num-workers must be >= 0, got {args.num_workers}")
    device = resolve_device(args.device)
    try:
        kind = data_kind_of(args.data)
        if args.weights == PIXELS:
            config = Config() if args.config is None else load_config(args.config)
            size = args.image_size
            if size is None and (args.config is not None or kind in ("imagefolder", "flat")):
                size = config.views.global_size
            return EvalSetup(
                args.data, kind, None, config, config.data.channels, size, (), (), device
            )
        in_chans = _data_channels(args, kind) if args.weights == RANDOM else None
        backbone, config, channels = load_backbone(
            args.weights, args.checkpoint_key, args.config, device, in_chans=in_chans
        )
        trained_on = kind if config.data.kind == "auto" else config.data.kind
        mean, std = normalisation(config, trained_on, channels)
    except ConfigError as err:
        raise UsageError(f"invalid configuration: {'; '.join(err.problems)}") from err
    except ValueError as err:
        raise UsageError(str(err).strip().splitlines()[0]) from err
    size = args.image_size if args.image_size is not None else config.views.global_size
    if size % backbone.patch_size:
        raise UsageError(
            f"image size {size} is not a multiple of the patch size {backbone.patch_size}"
        )
    return EvalSetup(args.data, kind, backbone, config, channels, size, mean, std, device)


def _data_channels(args: argparse.Namespace, kind: str) -> int:
    """Channels random weights are built for: the config's, else the data set's own."""
    from patchdino.config import load_config

    if args.config is not None:
        channels = load_config(args.config).data.channels
        if channels is not None:
            return int(channels)
    return 1 if kind in ("fashion_mnist", "mnist") else 3


def open_split(setup: EvalSetup, split: str) -> CanvasDataset:
    """One split of the data set, opened for evaluation (UsageError when missing)."""
    from patchdino.eval.eval_data import open_split as open_eval_split

    try:
        return open_eval_split(
            setup.data,
            split,
            setup.kind,
            setup.channels,
            setup.image_size,
            canvas=setup.config.data.canvas,
            on_bad_image=setup.config.data.on_bad_image,
        )
    except ValueError as err:
        raise UsageError(str(err)) from err


def feature_model(setup: EvalSetup, pool: str) -> nn.Module:
    """The backbone followed by token pooling."""
    from patchdino.eval.backbone_loading import PooledBackbone
    from patchdino.eval.features import POOLS

    if pool not in POOLS:
        raise UsageError(f"--pool must be one of {', '.join(POOLS)}, got {pool!r}")
    if setup.backbone is None:
        raise UsageError("pixels has no network to pool")
    return PooledBackbone(setup.backbone, pool)


def split_features(
    setup: EvalSetup,
    dataset: CanvasDataset,
    model: nn.Module | None,
    args: argparse.Namespace,
    limit: int | None = None,
    desc: str = "features",
    pixel_stats: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """Features and labels of (a seeded subset of) ``dataset``.

    With ``model`` None the features are raw pixels (:func:`patchdino.eval.pixel_features`),
    standardised with ``pixel_stats`` or, when None, with this split's own statistics.

    Returns:
        ``(N, D)`` float32 features, ``(N,)`` labels (CPU), and the pixel statistics used
        (None for a model).
    """
    from patchdino.eval.eval_data import Normalise, eval_loader, subset_indices
    from patchdino.eval.features import extract_features
    from patchdino.eval.knn import pixel_features, pixel_statistics

    try:
        loader = eval_loader(
            dataset,
            setup.kind,
            setup.image_size,
            args.batch_size,
            args.num_workers,
            indices=subset_indices(len(dataset), limit),
            pin_memory=setup.device.type == "cuda",
        )
        if model is None:
            batches = list(loader)
            images = _cat([b[0] for b in batches])  # (N, C, S, S) uint8
            labels = _cat([b[1] for b in batches])  # (N,)
            stats = pixel_stats if pixel_stats is not None else pixel_statistics(images)
            return pixel_features(images, *stats), labels, stats
        features, labels = extract_features(
            model.to(setup.device),
            loader,
            setup.device,
            transform=Normalise(setup.mean, setup.std).to(setup.device),
            progress=not args.no_progress,
            desc=desc,
        )
    except ValueError as err:
        raise UsageError(str(err).strip().splitlines()[0]) from err
    return features, labels, None


@dataclass(frozen=True)
class LabelledFeatures:
    """Features of the train split (memory / probe training) and the test split (queries).

    Attributes:
        train: ``(N, D)`` features and ``(N,)`` labels.
        test: ``(M, D)`` features and ``(M,)`` labels, numbered as the train classes.
        classes: class names of the train split.
    """

    train: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    classes: list[str]


def labelled_features(
    setup: EvalSetup, model: nn.Module | None, args: argparse.Namespace, purpose: str
) -> LabelledFeatures:
    """Features of both labelled splits with test labels aligned to the train classes.

    Args:
        purpose: what needs the labels, for the error on unlabelled data ("k-NN").
    """
    from patchdino.eval.eval_data import EvalDataError, align_labels

    train_set = open_split(setup, "train")
    test_set = open_split(setup, "test")
    if train_set.classes is None:
        raise UsageError(f"{args.data} has no labels; {purpose} needs a labelled data set")
    train_feats, train_labels, stats = split_features(
        setup, train_set, model, args, args.max_train, "features train"
    )
    test_feats, test_labels, _ = split_features(
        setup, test_set, model, args, args.max_test, "features test", pixel_stats=stats
    )
    try:
        test_labels = align_labels(train_set.classes, test_set.classes, test_labels)
    except EvalDataError as err:
        raise UsageError(str(err)) from err
    return LabelledFeatures(
        (train_feats, train_labels), (test_feats, test_labels), list(train_set.classes)
    )


def _cat(parts: list[Tensor]) -> Tensor:
    import torch

    if not parts:
        raise UsageError("the split holds no images")
    return torch.cat(parts)


def run(args: argparse.Namespace) -> int:
    import time

    import numpy as np
    import torch

    output: Path = args.output
    if output.suffix not in OUTPUT_SUFFIXES:
        raise UsageError(f"--output must end in .pt or .npz, got {output}")
    check_positive(max_images=args.max_images)
    started = time.perf_counter()
    setup = prepare(args)
    dataset = open_split(setup, args.split)
    model = None if setup.backbone is None else feature_model(setup, args.pool)
    features, labels, _ = split_features(
        setup, dataset, model, args, limit=args.max_images, desc=f"features {args.split}"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".pt":
        torch.save({"features": features, "labels": labels}, output)
    else:
        np.savez(output, features=features.numpy(), labels=labels.numpy())
    seconds = time.perf_counter() - started
    print(
        f"{features.shape[0]} x {features.shape[1]} features of the {args.split} split "
        f"in {seconds:.1f} s -> {output}",
        file=sys.stdout,
    )
    return 0
