"""The evaluation pipeline: weights and data set set-up, then features of whole splits.

Every evaluation (k-NN, linear probe, dense and retrieval tasks, the ``features`` command,
the benchmarks) starts the same way: read the weights (a checkpoint, an export, random weights
or the raw-pixel baseline), find the data set's kind and decide how its images are prepared
(:func:`prepare`), open a split (:func:`open_split`) and encode it (:func:`split_features`,
:func:`labelled_features`). Every function takes explicit arguments and raises
:class:`EvalSetupError` (a ``ValueError`` with a one-line message) on input the user can fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from patchdino.config import Config, ConfigError, load_config
from patchdino.data.datasets import CanvasDataset
from patchdino.data.datasets.bad_images import BAD_IMAGE_POLICIES
from patchdino.error_text import first_line
from patchdino.errors import InputError
from patchdino.models import Backbone

PIXELS = "pixels"
"""``weights`` value of the raw-pixel baseline."""
RANDOM = "random"
"""``weights`` value of a randomly initialised network of the config's architecture."""


class EvalSetupError(InputError):
    """Weights, data or an option that the evaluation cannot use; the message says why."""


@dataclass
class EvalSetup:
    """What an evaluation needs: the model input pipeline and the network.

    Attributes:
        data: the data set folder.
        kind: its kind.
        backbone: the frozen network, or None for the raw-pixel baseline.
        config: configuration of the architecture (defaults for pixels without a config).
        channels: image channels to load (None: the data set's own).
        image_size: side of the evaluation images (None: native size).
        mean: normalisation means in ``[0, 1]`` units (empty for pixels).
        std: normalisation standard deviations (empty for pixels).
        device: where the network runs.
        on_bad_image: ``"skip"`` leaves unreadable image files out of every split,
            ``"fail"`` stops at the first (:func:`patchdino.eval.common.eval_data.readable_items`).
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
    on_bad_image: str = "skip"


@dataclass(frozen=True)
class Extraction:
    """How splits are encoded.

    Attributes:
        batch_size: images per forward pass.
        num_workers: data loader worker processes.
        progress: show progress bars.
    """

    batch_size: int = 256
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise EvalSetupError(f"the batch size must be at least 1, got {self.batch_size}")
        if self.num_workers < 0:
            raise EvalSetupError(f"the number of workers must be >= 0, got {self.num_workers}")


def prepare(
    data: str | Path,
    weights: str | Path,
    device: torch.device,
    config: str | Path | None = None,
    checkpoint_key: str = "teacher",
    image_size: int | None = None,
    kind: str | None = None,
    on_bad_image: str = "skip",
) -> EvalSetup:
    """Load ``weights`` and decide how the images of ``data`` are prepared for it.

    Args:
        data: data set folder of any supported kind.
        weights: a ``checkpoint.pt`` of ``patchdino pretrain`` (or its run folder), a
            ``.safetensors`` export, :data:`RANDOM` or :data:`PIXELS`.
        device: where the network will run.
        config: YAML config: the architecture of random weights; with a checkpoint its
            tensors must fit it. For pixels it sets the image size of file data sets.
        checkpoint_key: ``"teacher"`` or ``"student"``.
        image_size: side of the square evaluation images (default: the config's
            ``views.global_size``; for pixels without a config, the native size of
            in-memory data sets).
        kind: the data's kind when the caller knows it (e.g. a segmentation layout whose
            images are files: ``"imagefolder"``); detected from ``data`` when None.
        on_bad_image: ``"skip"`` (leave unreadable image files out) or ``"fail"``.

    Raises:
        EvalSetupError: missing or incompatible weights, an unknown data layout, an image size
            that is not a multiple of the patch size, an unknown ``on_bad_image``.
    """
    from patchdino.data.datasets import FILE_KINDS
    from patchdino.eval.common.eval_data import data_kind_of

    if image_size is not None and image_size < 1:
        raise EvalSetupError(f"the image size must be at least 1, got {image_size}")
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise EvalSetupError(
            f"on_bad_image must be one of {', '.join(BAD_IMAGE_POLICIES)}, got {on_bad_image!r}"
        )
    data, weights = str(data), str(weights)
    if kind is None:
        try:
            kind = data_kind_of(data)
        except ValueError as err:
            raise EvalSetupError(str(err)) from err
    if weights == PIXELS:
        try:
            cfg = Config() if config is None else load_config(config)
        except ConfigError as err:
            raise EvalSetupError(f"invalid configuration: {'; '.join(err.problems)}") from err
        size = image_size
        if size is None and (config is not None or kind in FILE_KINDS):
            size = cfg.views.global_size
        return EvalSetup(
            data, kind, None, cfg, cfg.data.channels, size, (), (), device, on_bad_image
        )
    network = load_network(weights, device, kind, config, checkpoint_key)
    backbone = network.backbone
    size = image_size if image_size is not None else network.config.views.global_size
    if size % backbone.patch_size:
        raise EvalSetupError(
            f"image size {size} is not a multiple of the patch size {backbone.patch_size}"
        )
    return EvalSetup(
        data,
        kind,
        backbone,
        network.config,
        network.channels,
        size,
        network.mean,
        network.std,
        device,
        on_bad_image,
    )


@dataclass(frozen=True)
class Network:
    """A frozen backbone with what its input needs.

    Attributes:
        backbone: the network, in eval mode on the requested device.
        config: its configuration.
        channels: image channels it takes.
        mean: normalisation means in ``[0, 1]`` units, one per channel.
        std: normalisation standard deviations.
    """

    backbone: Backbone
    config: Config
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def load_network(
    weights: str | Path,
    device: torch.device,
    kind: str,
    config: str | Path | None = None,
    checkpoint_key: str = "teacher",
) -> Network:
    """Load ``weights`` (a checkpoint, its run folder, an export or :data:`RANDOM`).

    Args:
        weights: see :func:`prepare`.
        device: where the network will run.
        kind: kind of the data it will see: the channels of random weights and the
            normalisation statistics of networks whose config does not name its data's kind.
        config: YAML config (the architecture of random weights).
        checkpoint_key: ``"teacher"`` or ``"student"``.

    Raises:
        EvalSetupError: missing, unreadable or incompatible weights or config.
    """
    from patchdino.data.datasets import normalisation
    from patchdino.eval.common.backbone_loading import load_backbone

    try:
        in_chans = data_channels(kind, config) if str(weights) == RANDOM else None
        backbone, cfg, channels = load_backbone(
            str(weights), checkpoint_key, None if config is None else Path(config), device, in_chans
        )
        trained_on = kind if cfg.data.kind == "auto" else cfg.data.kind
        mean, std = normalisation(cfg, trained_on, channels)
    except ConfigError as err:
        raise EvalSetupError(f"invalid configuration: {'; '.join(err.problems)}") from err
    except EvalSetupError:
        raise
    except ValueError as err:
        raise EvalSetupError(first_line(err)) from err
    return Network(backbone, cfg, channels, tuple(mean), tuple(std))


def data_channels(kind: str, config: str | Path | None = None) -> int:
    """Channels random weights are built for: the config's, else the data set's own."""
    from patchdino.data.datasets import get_kind

    if config is not None:
        channels = load_config(config).data.channels
        if channels is not None:
            return int(channels)
    return get_kind(kind).channels


def open_split(setup: EvalSetup, split: str) -> CanvasDataset:
    """One split (``"train"``, ``"test"`` or ``"val"``) of the set-up's data, for evaluation.

    Unreadable image files are left out (:func:`patchdino.eval.common.eval_data.left_out_images`
    names them) or stop the evaluation, as ``setup.on_bad_image`` says.

    Raises:
        EvalSetupError: the split is missing or unreadable, or holds an unreadable image
            under ``"fail"``.
    """
    from patchdino.eval.common.eval_data import open_split as open_eval_split

    try:
        return open_eval_split(
            setup.data,
            split,
            setup.kind,
            setup.channels,
            setup.image_size,
            canvas=setup.config.data.canvas,
            on_bad_image=setup.on_bad_image,
        )
    except ValueError as err:
        raise EvalSetupError(first_line(err)) from err


def feature_model(setup: EvalSetup, pool: str) -> nn.Module:
    """The backbone followed by token pooling (``"cls"``, ``"mean"`` or ``"both"``).

    The module maps ``(B, C, S, S)`` normalised images to ``(B, D)`` (``(B, 2D)`` for both).
    """
    from patchdino.eval.common.backbone_loading import PooledBackbone
    from patchdino.eval.common.features import POOLS

    if pool not in POOLS:
        raise EvalSetupError(f"the pooling must be one of {', '.join(POOLS)}, got {pool!r}")
    if setup.backbone is None:
        raise EvalSetupError("pixels has no network to pool")
    return PooledBackbone(setup.backbone, pool)


def split_features(
    setup: EvalSetup,
    dataset: CanvasDataset,
    model: nn.Module | None,
    extraction: Extraction = Extraction(),
    limit: int | None = None,
    desc: str = "features",
    pixel_stats: tuple[Tensor, Tensor] | None = None,
    mode: str | None = None,
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """Features and labels of (a seeded subset of ``limit`` images of) ``dataset``.

    With ``model`` None the features are raw pixels (:func:`patchdino.eval.pixel_features`),
    standardised with ``pixel_stats`` or, when None, with this split's own statistics.
    ``mode`` (``"resize"`` or ``"center_crop"``) overrides the kind's evaluation transform.

    Returns:
        ``(N, D)`` float32 features, ``(N,)`` labels (CPU), and the pixel statistics used
        (None for a model).
    """
    from patchdino.eval.common.eval_data import Normalise, eval_loader, subset_indices
    from patchdino.eval.common.features import extract_features
    from patchdino.eval.common.pixels import pixel_features, pixel_statistics

    try:
        loader = eval_loader(
            dataset,
            setup.kind,
            setup.image_size,
            extraction.batch_size,
            extraction.num_workers,
            indices=subset_indices(len(dataset), limit),
            pin_memory=setup.device.type == "cuda",
            mode=mode,
        )
        if model is None:
            batches = list(loader)
            if not batches:
                raise EvalSetupError("the split holds no images")
            images = torch.cat([b[0] for b in batches])  # (N, C, S, S) uint8
            labels = torch.cat([b[1] for b in batches])  # (N,)
            stats = pixel_stats if pixel_stats is not None else pixel_statistics(images)
            return pixel_features(images, *stats), labels, stats
        features, labels = extract_features(
            model.to(setup.device),
            loader,
            setup.device,
            transform=Normalise(setup.mean, setup.std).to(setup.device),
            progress=extraction.progress,
            desc=desc,
        )
    except EvalSetupError:
        raise
    except ValueError as err:
        raise EvalSetupError(first_line(err)) from err
    return features, labels, None


@dataclass(frozen=True)
class LabelledFeatures:
    """Features of the train split (memory / probe training) and the test split (queries).

    Attributes:
        train: ``(N, D)`` features and ``(N,)`` labels.
        test: ``(M, D)`` features and ``(M,)`` labels, numbered as the train classes.
        classes: class names of the train split.
        skipped: per split (``"train"``, ``"test"``), the unreadable files left out.
    """

    train: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    classes: list[str]
    skipped: dict[str, list[str]] = field(default_factory=dict)


def labelled_features(
    setup: EvalSetup,
    model: nn.Module | None,
    purpose: str,
    extraction: Extraction = Extraction(),
    max_train: int | None = None,
    max_test: int | None = None,
) -> LabelledFeatures:
    """Features of both labelled splits, test labels aligned to the train classes.

    Args:
        setup: see :func:`prepare`.
        model: maps images to ``(B, D)`` features (:func:`feature_model`); None for pixels.
        purpose: what needs the labels, for the error on unlabelled data (``"k-NN"``).
        extraction: batch size, workers, progress bars.
        max_train: encode a seeded random subset of this many train images.
        max_test: the same for the test split.

    Raises:
        EvalSetupError: unlabelled data, a missing split, test classes the train split lacks.
    """
    from patchdino.eval.common.eval_data import EvalDataError, align_labels, left_out_images

    train_set = open_split(setup, "train")
    test_set = open_split(setup, "test")
    if train_set.classes is None:
        raise EvalSetupError(f"{setup.data} has no labels; {purpose} needs a labelled data set")
    train_feats, train_labels, stats = split_features(
        setup, train_set, model, extraction, max_train, "features train"
    )
    test_feats, test_labels, _ = split_features(
        setup, test_set, model, extraction, max_test, "features test", pixel_stats=stats
    )
    try:
        test_labels = align_labels(train_set.classes, test_set.classes, test_labels)
    except EvalDataError as err:
        raise EvalSetupError(str(err)) from err
    return LabelledFeatures(
        (train_feats, train_labels),
        (test_feats, test_labels),
        list(train_set.classes),
        {"train": left_out_images(train_set), "test": left_out_images(test_set)},
    )
