"""Turn a :class:`~patchdino.config.Config` into data, augmentation, model and loss."""

from __future__ import annotations

from pathlib import Path

import torch

from patchdino.config import Config
from patchdino.data.datasets import (
    CanvasDataset,
    build_dataset,
    canvas_for,
    default_root,
    detect_kind,
)
from patchdino.data.datasets.holdout import holdout_part
from patchdino.data.multicrop import MultiCropAugmentation, MultiCropSpec
from patchdino.losses import LocalGlobalLoss
from patchdino.models import StudentTeacher
from patchdino.train.step import PretrainStep


def data_path(config: Config) -> Path:
    """The data root; an empty ``data.path`` means the default Fashion-MNIST folder."""
    if config.data.path:
        return Path(config.data.path)
    root = default_root(config.data.kind)
    if root is not None:
        return root
    raise ValueError(f"data.path is empty; give the folder of the {config.data.kind} data set")


def data_kind(config: Config) -> str:
    """The data set kind, detected from the folder when ``data.kind`` is auto."""
    path = data_path(config)
    if not path.exists():
        raise ValueError(f"data folder {path} does not exist")
    return detect_kind(path) if config.data.kind == "auto" else config.data.kind


def kind_hint(config: Config) -> str | None:
    """How to fix a ``data.kind`` that does not fit the folder, or None when it fits.

    A packaged config names its data set's kind; given another folder with ``--data``, the
    folder holds another kind, which ``data.kind=auto`` detects.
    """
    if config.data.kind == "auto":
        return None
    try:
        found = detect_kind(data_path(config))
    except ValueError:
        return None
    if found == config.data.kind:
        return None
    return (
        f"data.kind is {config.data.kind}, but {data_path(config)} holds a data set of kind "
        f"{found}: pass data.kind=auto to detect the kind of the folder"
    )


def open_dataset(config: Config, split: str = "train") -> CanvasDataset:
    """The configured data set split, decoded onto its canvas.

    With ``data.holdout`` the training split loses its held-out validation images
    (:func:`~patchdino.data.datasets.holdout.holdout_part`). When the folder cannot be read as
    ``data.kind`` but holds another kind, the error says so (:func:`kind_hint`).
    """
    kind = data_kind(config)
    try:
        dataset = build_dataset(
            data_path(config),
            kind,
            split,
            canvas=canvas_for(kind, config.data.canvas),
            channels=config.data.channels,
            on_bad_image=config.data.on_bad_image,
        )
    except ValueError as err:
        hint = kind_hint(config)
        if hint is None:
            raise
        raise ValueError(f"{err}; {hint}") from err
    if config.data.holdout and split == "train":
        return holdout_part(dataset, config.data.holdout, "train")
    return dataset


def build_augmentation(
    config: Config, mean: tuple[float, ...], std: tuple[float, ...]
) -> MultiCropAugmentation:
    """The multi-crop view sampler of ``config.views``."""
    spec = MultiCropSpec.from_views(
        config.views, patch_size=config.model.patch_size, mean=mean, std=std
    )
    return MultiCropAugmentation(spec)


def build_model(config: Config, in_chans: int) -> StudentTeacher:
    """Student backbone and heads with an identical EMA teacher (see ``from_config``)."""
    return StudentTeacher.from_config(config, in_chans)


def build_loss(config: Config) -> LocalGlobalLoss:
    """The loss of ``config.loss`` for the configured views (see ``from_config``)."""
    return LocalGlobalLoss.from_config(config)


def build_step(config: Config, in_chans: int, device: torch.device | str = "cpu") -> PretrainStep:
    """Model, loss and matching of ``config`` as one :class:`PretrainStep` on ``device``.

    The weights are initialised from ``run.seed`` (the global generator is seeded with it);
    with ``run.compile`` the student and teacher backbones are compiled.
    """
    torch.manual_seed(config.run.seed)
    step = PretrainStep.from_config(config, in_chans).to(device)
    if config.run.compile:
        step.model.student.backbone.compile()
        step.model.teacher.backbone.compile()
    return step
