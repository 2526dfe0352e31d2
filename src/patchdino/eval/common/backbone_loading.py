"""Frozen backbones for evaluation: from a pretraining checkpoint, an export, published
weights, or random weights.

Four sources give a :class:`~patchdino.models.Backbone` ready for feature extraction:

- a ``checkpoint.pt`` written by ``patchdino pretrain`` (or its run folder): the architecture
  comes from the checkpoint's own config (or from ``config_path`` when given, in which case
  every tensor must fit it), and the ``teacher.backbone.*`` or ``student.backbone.*`` tensors
  are loaded;
- a ``.safetensors`` file written by :func:`~patchdino.eval.common.export.export_backbone`, whose
  metadata holds the config (current exports name their tensors as timm does, earlier ones
  as :class:`~patchdino.models.Backbone` does; both are read);
- published weights (timm's models, DINO's and DINOv2's files, timm model folders, DINO's
  training checkpoints), read by :mod:`~patchdino.eval.common.published_weights`;
- ``"random"``: the architecture of ``config_path`` (or the defaults) with seeded random
  initial weights, the usual lower reference of self-supervised evaluations.

Checkpoints are read with :func:`~patchdino.checkpoint.load_checkpoint`
(``weights_only=True``), which refuses pickles that would build arbitrary objects. Every
problem raises :class:`BackboneLoadError`, a ``ValueError`` with a one-line message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from patchdino.checkpoint import CHECKPOINT_NAME
from patchdino.config import Config, ConfigError, config_from_dict, load_config
from patchdino.error_text import first_line
from patchdino.eval.common.features import token_features
from patchdino.eval.common.stored_weights import BackboneLoadError, StoredWeights
from patchdino.models.backbone import (
    Backbone,
    create_backbone,
    prefix_count,
    state_dict_misfit,
)

CHECKPOINT_KEYS = ("teacher", "student")
RANDOM_WEIGHTS = "random"
EXPORT_FORMAT = "patchdino-backbone-v2"
"""``format`` entry of the metadata of exported ``.safetensors`` backbones: tensors named as in
timm's ``VisionTransformer``."""
PREFIXED_EXPORT_FORMAT = "patchdino-backbone-v1"
"""Earlier exports, whose tensors are named as in :class:`Backbone` (``model.`` prefix); still
read."""
WEIGHTS_FORMS = (
    "a checkpoint.pt written by 'patchdino pretrain' or its run folder, a .safetensors "
    "export or its model folder, timm:NAME (timm's weights), timm:NAME@FILE (DINO's, DINOv2's "
    "or timm's files), a timm model folder, DINO's training checkpoint, or 'random'"
)
"""Every form of weights patchdino takes, for messages and help texts."""
MODEL_FOLDER_WEIGHTS = "model.safetensors"
"""The export's file name in a model folder (``patchdino export --format hf``), the name timm
and the Hugging Face hub look for first."""


class LoadedBackbone(NamedTuple):
    """A frozen backbone in eval mode with what is needed to feed it.

    Attributes:
        backbone: the network, on the requested device, without gradients.
        config: the configuration the architecture was built from. ``data.kind`` is the kind
            of data the weights were trained on when the source records it, so that
            :func:`patchdino.data.datasets.kinds.normalisation` gives the training statistics.
        in_chans: input channels the backbone expects.
    """

    backbone: Backbone
    config: Config
    in_chans: int


def _random_channels(config: Config) -> int:
    """Input channels of random weights built for ``config``: its ``data.channels``, else
    the native channels of its ``data.kind``, else 3 (image files)."""
    from patchdino.data.datasets import get_kind

    if config.data.channels is not None:
        return int(config.data.channels)
    return 3 if config.data.kind == "auto" else get_kind(config.data.kind).channels


def load_backbone(
    weights: str | Path,
    key: str = "teacher",
    config_path: str | Path | None = None,
    device: torch.device | str = "cpu",
    in_chans: int | None = None,
    seed: int = 0,
) -> LoadedBackbone:
    """Build a backbone and load its weights.

    Args:
        weights: a pretraining checkpoint, a run folder holding ``checkpoint.pt``, an exported
            ``.safetensors`` file (or its model folder), published weights (``timm:NAME``,
            ``timm:NAME@FILE``, a timm model folder, DINO's training checkpoint: see
            :mod:`~patchdino.eval.common.published_weights`), or ``"random"``.
        key: ``"teacher"`` or ``"student"``: which network of a checkpoint to load (exports
            hold one backbone and ignore it).
        config_path: YAML config whose architecture to build. Required in spirit for
            ``"random"`` (the defaults are used without it); with a checkpoint or an export,
            their tensors must fit this architecture.
        device: where the backbone is placed.
        in_chans: input channels of random weights (default: the config's ``data.channels``,
            else the native channels of its ``data.kind``, else 3); the other sources record
            it.
        seed: seed of the random initialisation.

    Returns:
        A :class:`LoadedBackbone` ``(backbone, config, in_chans)``; the backbone is in eval
        mode with ``requires_grad`` off.

    Raises:
        BackboneLoadError: missing file, unknown ``key``, a file that is not a patchdino
            checkpoint or export, a refused or unreadable file, or tensors that do not fit
            the architecture (the first mismatching tensor is named).
        ConfigError: ``config_path`` is invalid.
    """
    _check_key(key)
    given = None if config_path is None else load_config(config_path)
    if str(weights) == RANDOM_WEIGHTS:
        config = given if given is not None else Config()
        channels = _random_channels(config) if in_chans is None else in_chans
        backbone = _build(config, channels, seed)
        return _ready(LoadedBackbone(backbone, config, channels), device)

    stored = read_weights(weights, key)
    saved = stored.config
    config = saved
    source = f"the config stored in {stored.name}"
    if given is not None:  # its architecture, with the data settings the weights were trained on
        config, source = given, f"config {config_path}"
        config.data = saved.data
    backbone = _build(config, stored.in_chans, seed)
    _check_fit(backbone.state_dict(), stored.tensors, stored.name, source, config)
    backbone.load_state_dict(stored.tensors)
    return _ready(LoadedBackbone(backbone, config, stored.in_chans), device)


def read_weights(weights: str | Path, key: str = "teacher") -> StoredWeights:
    """Read the ``key`` backbone of any weights patchdino takes (see :data:`WEIGHTS_FORMS`).

    patchdino's own: a checkpoint (or run folder), an exported backbone (a ``.safetensors``
    file or a model folder holding one as :data:`MODEL_FOLDER_WEIGHTS`). The field's
    (:mod:`~patchdino.eval.common.published_weights`): ``timm:NAME[@FILE]``, a timm / Hugging
    Face model folder, DINO's full training checkpoint.

    Raises:
        BackboneLoadError: see :func:`load_backbone`.
    """
    from patchdino.eval.common import published_weights as published

    _check_key(key)
    if published.is_timm_string(weights):
        return published.read_timm(str(weights), key)
    path = Path(weights)
    if path.is_dir() and (path / CHECKPOINT_NAME).is_file():
        path = path / CHECKPOINT_NAME
    elif (
        path.is_dir()
        and (path / MODEL_FOLDER_WEIGHTS).is_file()
        and _is_export(path / MODEL_FOLDER_WEIGHTS)
    ):
        path = path / MODEL_FOLDER_WEIGHTS
    elif published.is_model_folder(path):
        return published.read_model_folder(path, key)
    if not path.is_file():
        raise BackboneLoadError(f"weights file {path} does not exist; give {WEIGHTS_FORMS}")
    if path.suffix == ".safetensors":
        return _read_export(path)
    return _read_checkpoint(path, key)


def _is_export(path: Path) -> bool:
    """Whether the ``.safetensors`` file ``path`` is a patchdino export (its metadata says)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return True  # unreadable: the export reader names the problem
    return metadata.get("format") in (EXPORT_FORMAT, PREFIXED_EXPORT_FORMAT)


def _check_key(key: str) -> None:
    if key not in CHECKPOINT_KEYS:
        raise BackboneLoadError(
            f"unknown checkpoint key {key!r}: choose {' or '.join(CHECKPOINT_KEYS)}"
        )


def _ready(loaded: LoadedBackbone, device: torch.device | str) -> LoadedBackbone:
    backbone = loaded.backbone.to(device).eval()
    backbone.requires_grad_(False)
    return loaded


def _build(config: Config, in_chans: int, seed: int) -> Backbone:
    """The configured backbone with seeded random weights (global RNG state untouched)."""
    m = config.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return create_backbone(
                m.arch,
                m.patch_size,
                img_size=config.views.global_size,
                in_chans=in_chans,
                registers=m.registers,
            )
        except ValueError as err:
            raise BackboneLoadError(first_line(err)) from err


def _read_checkpoint(path: Path, key: str) -> StoredWeights:
    """Backbone tensors of ``key``, the stored config and the input channels."""
    from patchdino.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint
    from patchdino.eval.common.published_weights import (
        ALLOWED_GLOBALS,
        is_dino_checkpoint,
        read_dino_checkpoint,
    )

    try:
        state = load_checkpoint(path, map_location="cpu", allowed=ALLOWED_GLOBALS)
    except CheckpointError as err:
        raise BackboneLoadError(first_line(err)) from err
    if is_dino_checkpoint(state):
        return read_dino_checkpoint(path, state, key)
    if state.get("format") != CHECKPOINT_FORMAT or not isinstance(state.get("model"), dict):
        raise BackboneLoadError(
            f"{path} is not a patchdino pretraining checkpoint (no format "
            f"'{CHECKPOINT_FORMAT}' entry) nor DINO's; for other weights name their timm "
            f"architecture: timm:NAME@{path}"
        )
    prefix = f"{key}.backbone."
    model: dict[str, Any] = state["model"]
    # The mask token of masked-patch pretraining only ever replaces hidden training patches.
    tensors = {
        k[len(prefix) :]: v
        for k, v in model.items()
        if k.startswith(prefix) and k != f"{prefix}mask_token"
    }
    if not tensors:
        found = sorted({k.split(".")[0] for k in model})
        raise BackboneLoadError(
            f"{path} holds no '{prefix}*' tensors (its networks: {', '.join(found)}); "
            f"choose another checkpoint key"
        )
    config = _stored_config(state.get("config"), path)
    if isinstance(state.get("data_kind"), str):
        config.data.kind = state["data_kind"]
    channels = _channels(state.get("in_chans"), tensors, path)
    step = state.get("step")
    return StoredWeights(path, tensors, config, channels, step if isinstance(step, int) else -1)


def _read_export(path: Path) -> StoredWeights:
    """Tensors, config and input channels of an exported ``.safetensors`` backbone."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise BackboneLoadError(f"cannot read {path}: {first_line(err)}") from err
    export_format = metadata.get("format")
    if export_format not in (EXPORT_FORMAT, PREFIXED_EXPORT_FORMAT) or "config" not in metadata:
        raise BackboneLoadError(
            f"{path} is not a patchdino backbone export (no format '{EXPORT_FORMAT}' in its "
            f"metadata); for other weights name their timm architecture: timm:NAME@{path}"
        )
    try:
        tree = json.loads(metadata["config"])
    except json.JSONDecodeError as err:
        raise BackboneLoadError(f"{path}: the stored config is not valid JSON ({err})") from err
    if export_format == EXPORT_FORMAT:  # timm names: back to the Backbone's
        tensors = {f"model.{name}": tensor for name, tensor in tensors.items()}
    config = _stored_config(tree, path)
    if metadata.get("data_kind"):
        config.data.kind = metadata["data_kind"]
    channels = _channels(metadata.get("in_chans"), tensors, path)
    step = metadata.get("step", "-1")
    return StoredWeights(path, tensors, config, channels, int(step) if step.isdigit() else -1)


def _stored_config(tree: Any, path: Path) -> Config:
    if not isinstance(tree, Mapping):
        raise BackboneLoadError(f"{path} holds no config mapping; it was not written by patchdino")
    try:
        return config_from_dict(tree)
    except ConfigError as err:
        raise BackboneLoadError(
            f"{path} holds an invalid config: {'; '.join(err.problems)}"
        ) from err


def _channels(value: Any, tensors: Mapping[str, Tensor], path: Path) -> int:
    """Recorded input channels, or those of the patch embedding's weight."""
    if value is not None:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise BackboneLoadError(f"{path}: in_chans {value!r} is not an integer") from None
    weight = tensors.get("model.patch_embed.proj.weight")
    if weight is None or weight.ndim != 4:
        raise BackboneLoadError(f"{path} records no input channels and has no patch embedding")
    return int(weight.shape[1])


def _check_fit(
    expected: Mapping[str, Tensor],
    tensors: Mapping[str, Tensor],
    name: str,
    source: str,
    config: Config,
) -> None:
    """Raise naming the first tensor of the architecture that ``tensors`` does not fit."""
    misfit = state_dict_misfit(expected, tensors)
    if misfit is not None:
        m = config.model
        arch = f"{m.arch}, patch {m.patch_size}, {config.views.global_size} px"
        raise BackboneLoadError(
            f"{name} does not fit the architecture of {source} ({arch}): {misfit}"
        )


class PooledBackbone(nn.Module):
    """A backbone followed by token pooling: images to one feature vector each.

    Args:
        backbone: returns ``(B, P + N, D)`` tokens (CLS, registers, patches; ``P`` from
            :func:`~patchdino.models.backbone.prefix_count`).
        pool: ``"cls"``, ``"mean"`` (patch tokens) or ``"both"`` (see
            :func:`~patchdino.eval.common.features.token_features`).
    """

    def __init__(self, backbone: nn.Module, pool: str = "cls") -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = pool

    def forward(self, images: Tensor) -> Tensor:
        """``(B, C, H, W)`` images to ``(B, D)`` features (``(B, 2D)`` for ``"both"``)."""
        return token_features(self.backbone(images), self.pool, prefix_count(self.backbone))
