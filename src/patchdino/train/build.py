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
    statistics,
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


def normalisation(config: Config, kind: str, channels: int) -> tuple[tuple[float, ...], ...]:
    """``(mean, std)`` of the configured or usual statistics, with ``channels`` entries.

    The usual statistics are the kind's (:func:`~patchdino.data.datasets.statistics`);
    ImageNet's for any other ``kind`` name.
    """
    if config.data.mean is not None and config.data.std is not None:
        mean, std = config.data.mean, config.data.std
    else:
        mean, std = statistics(kind)
    if len(mean) == channels:
        return mean, std
    if channels == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    return mean * 3, std * 3


def build_augmentation(
    config: Config, mean: tuple[float, ...], std: tuple[float, ...]
) -> MultiCropAugmentation:
    """The multi-crop view sampler of ``config.views``."""
    spec = MultiCropSpec.from_views(
        config.views, patch_size=config.model.patch_size, mean=mean, std=std
    )
    return MultiCropAugmentation(spec)


def build_model(config: Config, in_chans: int) -> StudentTeacher:
    """Student backbone and heads with an identical EMA teacher."""
    m = config.model
    return StudentTeacher.create(
        m.arch,
        patch_size=m.patch_size,
        img_size=config.views.global_size,
        in_chans=in_chans,
        drop_path=m.drop_path,
        out_dim=m.out_dim,
        hidden_dim=m.hidden_dim,
        bottleneck_dim=m.bottleneck_dim,
        norm_last_layer=m.norm_last_layer,
        patch_head=m.patch_head,
        patch_out_dim=m.patch_out_dim,
    )


def build_loss(config: Config) -> LocalGlobalLoss:
    """The local-global loss of ``config.loss`` for the configured view sizes."""
    lo, v, m = config.loss, config.views, config.model
    return LocalGlobalLoss(
        out_dim=m.out_dim,
        num_patches=(v.global_size // m.patch_size) ** 2,
        patch_out_dim=m.patch_out_dim if m.patch_head == "separate" else None,
        num_local_patches=(v.local_size // m.patch_size) ** 2,
        student_temp=lo.student_temp,
        centre_mode=lo.centre,
        centre_momentum=lo.centre_momentum,
        centre_tokens=lo.centre_tokens,
        patch_loss=lo.patch_loss,
        cls_weighting=lo.cls_weighting,
        cls_weight=lo.cls_weight,
        local_local=lo.local_local,
    )


def build_step(config: Config, in_chans: int, device: torch.device | str = "cpu") -> PretrainStep:
    """Model, loss and matching of ``config`` as one :class:`PretrainStep` on ``device``.

    The weights are initialised from ``run.seed`` (the global generator is seeded with it);
    with ``run.compile`` the student and teacher backbones are compiled.
    """
    torch.manual_seed(config.run.seed)
    step = PretrainStep(
        build_model(config, in_chans),
        build_loss(config),
        config.loss.matching,
        config.loss.match_threshold,
        patch_pairs_per_view=config.loss.patch_pairs_per_view,
    ).to(device)
    if config.run.compile:
        step.model.student.backbone.compile()
        step.model.teacher.backbone.compile()
    return step
