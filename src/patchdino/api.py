"""What a notebook needs from trained weights, importable as ``patchdino.<name>``.

- :func:`load_backbone`: weights (a ``checkpoint.pt``, its run folder, a ``.safetensors``
  export, or ``"random"``) to a frozen :class:`~patchdino.models.Backbone`;
- :func:`eval_transform`: the command line's evaluation transform for those weights, a
  torchvision-compatible callable (see :mod:`patchdino.eval.common.transform` for its steps,
  including the canvas resize);
- :func:`extract_features`: features of a data set split, as ``patchdino features`` makes
  them (the same pipeline, :mod:`patchdino.eval.common.pipeline`);
- :func:`match_views`: the views of one image and their matched patches, as
  ``patchdino match`` draws them.

Example::

    import patchdino
    loaded = patchdino.load_backbone("runs/fashion")        # backbone, config, in_chans
    transform = patchdino.eval_transform(loaded)            # image -> (C, S, S) tensor
    tokens = loaded.backbone(transform(image)[None])        # (1, 1 + N, D), CLS first
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from patchdino.eval.common.backbone_loading import LoadedBackbone, load_backbone
from patchdino.eval.common.transform import EvalTransform
from patchdino.matching.views import ViewMatches, match_views

__all__ = [
    "EvalTransform",
    "LoadedBackbone",
    "ViewMatches",
    "eval_transform",
    "extract_features",
    "load_backbone",
    "match_views",
]


def eval_transform(
    weights: LoadedBackbone | str | Path,
    image_size: int | None = None,
    kind: str | None = None,
    checkpoint_key: str = "teacher",
) -> EvalTransform:
    """The evaluation transform of the command line for ``weights``.

    Args:
        weights: a :class:`LoadedBackbone` (from :func:`load_backbone`) or weights to load.
        image_size: side ``S`` of the images (default: the weights' ``views.global_size``).
        kind: kind of data set the images come from: image files (``"imagefolder"``:
            canvas, resize and centre crop) or an in-memory kind such as ``"cifar10"``
            (whole image resized). Default: the kind the weights were trained on, as their
            checkpoint or export records it (an export's ``eval_transform`` metadata), and
            ``"imagefolder"`` when they record none (random weights). It also gives the
            normalisation of weights that do not record their training data.
        checkpoint_key: ``"teacher"`` or ``"student"``, when ``weights`` is a checkpoint.

    Returns:
        A callable mapping a PIL image, an image path or uint8 pixels to the ``(C, S, S)``
        float32 tensor the network expects.

    Raises:
        InputError: unreadable weights, an unknown kind or a size that is not a multiple of
            the patch size.
    """
    from patchdino.data.datasets import get_kind, normalisation
    from patchdino.errors import InputError
    from patchdino.eval.common.eval_data import eval_mode

    loaded = (
        weights if isinstance(weights, LoadedBackbone) else load_backbone(weights, checkpoint_key)
    )
    config = loaded.config
    if kind is None:
        kind = "imagefolder" if config.data.kind == "auto" else config.data.kind
    try:
        get_kind(kind)
    except ValueError as err:
        raise InputError(str(err)) from err
    size = config.views.global_size if image_size is None else image_size
    if size % loaded.backbone.patch_size:
        raise InputError(
            f"image size {size} is not a multiple of the patch size {loaded.backbone.patch_size}"
        )
    trained_on = kind if config.data.kind == "auto" else config.data.kind
    mean, std = normalisation(config, trained_on, loaded.in_chans)
    return EvalTransform(size, mean, std, eval_mode(kind), config.data.canvas)


def extract_features(
    weights: str | Path,
    data: str | Path,
    split: str = "train",
    pool: str = "cls",
    image_size: int | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    num_workers: int = 0,
    max_images: int | None = None,
    checkpoint_key: str = "teacher",
    config: str | Path | None = None,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """Features of one split of a data set, exactly as ``patchdino features`` computes them.

    Args:
        weights: a checkpoint, its run folder, an export, ``"random"`` or ``"pixels"``.
        data: data set folder of any supported kind.
        split: ``"train"``, ``"test"`` or ``"val"``.
        pool: ``"cls"``, ``"mean"`` (mean patch token) or ``"both"`` (concatenated).
        image_size: side of the images (default: the weights' ``views.global_size``).
        device: where the network runs.
        batch_size: images per forward pass.
        num_workers: data loader workers.
        max_images: encode a seeded random subset of this many images.
        checkpoint_key: ``"teacher"`` or ``"student"``.
        config: YAML config: the architecture of ``"random"`` weights.
        progress: show a progress bar.

    Returns:
        ``(N, D)`` float32 features (``(N, 2D)`` for ``"both"``) and ``(N,)`` long labels, on
        the CPU, in data set order. Unreadable image files are left out (and named in the
        log), as by ``patchdino features``.

    Raises:
        InputError: missing or incompatible weights or data, an unknown split or pooling.
    """
    from patchdino.eval.common.pipeline import (
        Extraction,
        feature_model,
        open_split,
        prepare,
        split_features,
    )

    setup = prepare(
        data,
        weights,
        torch.device(device),
        config=config,
        checkpoint_key=checkpoint_key,
        image_size=image_size,
    )
    dataset = open_split(setup, split)
    model = None if setup.backbone is None else feature_model(setup, pool)
    extraction = Extraction(batch_size, num_workers, progress)
    features, labels, _ = split_features(
        setup, dataset, model, extraction, limit=max_images, desc=f"features {split}"
    )
    return features, labels
