"""The field's weights: timm models, DINO's and DINOv2's released files, timm model folders.

Accepted wherever patchdino takes weights, beside its own checkpoints and exports:

- ``timm:NAME``: a timm ViT with its pretrained weights as timm resolves them (its cache or the
  Hugging Face hub), e.g. ``timm:vit_small_patch14_reg4_dinov2.lvd142m``;
- ``timm:NAME@FILE``: the timm architecture ``NAME`` with the weights of ``FILE``, a
  ``.pth``/``.pt``/``.bin`` or ``.safetensors`` file (or a folder holding one) in any layout
  timm's ``checkpoint_filter_fn`` converts: DINO's backbone files
  (``timm:vit_small_patch16_224.dino@dino_deitsmall16_pretrain.pth``), DINOv2's
  (``timm:vit_small_patch14_reg4_dinov2@dinov2_vits14_reg4_pretrain.pth``: its
  ``register_tokens``, ``mask_token`` and CLS slot of the position embedding become timm's),
  timm's own, or DINO's full training checkpoints;
- a timm or Hugging Face model folder not written by patchdino (``config.json`` naming the
  ``architecture`` + ``model.safetensors``);
- DINO's full training checkpoint (``checkpoint.pth``, ``*_full_checkpoint.pth``: ``student``
  and ``teacher``, each a ``backbone`` and a ``head``, with or without DDP's ``module.``): the
  architecture comes from its ``args`` (``arch``, ``patch_size``); the chosen network's head
  comes along for ``--init-weights``.

Files are read by :func:`~patchdino.checkpoint.load_checkpoint` (``weights_only=True``,
:data:`ALLOWED_GLOBALS` the only class it may build) or safetensors; timm's
``checkpoint_filter_fn`` converts the layout and resamples the position embedding when the
model is built for another image size. Every problem is a one-line
:class:`~patchdino.eval.common.stored_weights.BackboneLoadError`.
"""

from __future__ import annotations

import argparse
import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from patchdino.checkpoint import file_sha256
from patchdino.config import Config
from patchdino.error_text import first_line
from patchdino.eval.common.stored_weights import BackboneLoadError, StoredWeights
from patchdino.models.backbone import state_dict_misfit

TIMM_SCHEME = "timm:"
"""Prefix of the weights strings that name a timm model."""
ALLOWED_GLOBALS: tuple[type, ...] = (argparse.Namespace,)
"""Classes a published ``.pth`` may hold besides tensors and containers (DINO's ``args``)."""
FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.pth")
"""Weights files looked for in a model folder, in this order (timm's and the hub's names)."""
FOLDER_CONFIG = "config.json"
MODEL_PREFIX = "model."
"""Prefix of the timm model's tensors in ``Backbone.state_dict()``."""
_FOLDER_ARGS = {"img_size", "in_chans", "num_classes", "global_pool", "dynamic_img_size"}
"""``model_args`` of a model folder that patchdino's build sets itself."""


def is_timm_string(weights: str | Path) -> bool:
    """Whether ``weights`` is a ``timm:NAME[@FILE]`` string."""
    return isinstance(weights, str) and weights.startswith(TIMM_SCHEME)


def is_model_folder(path: Path) -> bool:
    """Whether ``path`` is a timm / Hugging Face model folder (``config.json`` naming an
    ``architecture``, and a weights file)."""
    config = path / FOLDER_CONFIG
    if not (path.is_dir() and config.is_file()):
        return False
    try:
        tree = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(tree, dict) and isinstance(tree.get("architecture"), str)


def read_timm(weights: str, key: str = "teacher") -> StoredWeights:
    """Read ``timm:NAME`` or ``timm:NAME@FILE``, at the weights' native image size.

    Args:
        weights: the string.
        key: ``"teacher"`` or ``"student"``: the network of a DINO full checkpoint.

    Raises:
        BackboneLoadError: an unknown or non-ViT name (close names suggested), weights that
            timm cannot fetch (offline and not cached), an unreadable file or one that does not
            fit the architecture.
    """
    spec = weights[len(TIMM_SCHEME) :]
    name, sep, file = spec.partition("@")
    if not name or (sep and not file):
        raise BackboneLoadError(
            f"weights {weights!r}: write timm:NAME or timm:NAME@FILE, e.g. "
            "timm:vit_small_patch16_224.dino@dino_deitsmall16_pretrain.pth"
        )
    arch = _checked_name(name)
    if not sep:
        return _fetched(weights, name, arch)
    path = Path(file)
    state, sha, heads = _read_state(weights_file(path, weights), key)
    return _converted(weights, path, sha, name, arch, {}, state, heads)


def read_model_folder(folder: Path, key: str = "teacher") -> StoredWeights:
    """Read a timm / Hugging Face model folder (``config.json`` + weights) not written by
    patchdino; its ``architecture``, ``model_args`` and ``pretrained_cfg`` say what it is.

    Raises:
        BackboneLoadError: see :func:`read_timm`; model arguments patchdino's build cannot
            repeat.
    """
    tree = json.loads((folder / FOLDER_CONFIG).read_text())
    name = str(tree["architecture"])
    arch = _checked_name(name)
    model_args = dict(tree.get("model_args") or {})
    registers = model_args.pop("reg_tokens", None)
    model_args.pop("no_embed_class", None)
    foreign = sorted(set(model_args) - _FOLDER_ARGS - {"patch_size"})
    if foreign:
        raise BackboneLoadError(
            f"{folder / FOLDER_CONFIG}: model_args {', '.join(foreign)} change the architecture "
            f"of {name} in ways patchdino cannot rebuild; export the model without them"
        )
    overrides: dict[str, Any] = {}
    if "patch_size" in model_args:
        overrides["patch_size"] = int(model_args["patch_size"])
    if registers is not None:
        overrides["registers"] = int(registers)
    if "img_size" in model_args:
        size = model_args["img_size"]
        overrides["img_size"] = int(size[0] if isinstance(size, list | tuple) else size)
    state, sha, heads = _read_state(weights_file(folder, str(folder)), key)
    cfg = tree.get("pretrained_cfg")
    return _converted(
        str(folder), folder, sha, name, arch, overrides, state, heads, cfg if cfg else None
    )


def read_dino_checkpoint(path: Path, state: Mapping[str, Any], key: str) -> StoredWeights:
    """A DINO full training checkpoint read by :func:`read_state_file`, as the timm ViT its
    ``args`` name (``vit_small`` with ``patch_size`` 16 is ``vit_small_patch16_224``).

    Raises:
        BackboneLoadError: its ``args`` name no timm ViT (then ``timm:NAME@FILE`` names it).
    """
    import timm

    args = state.get("args")
    arch = getattr(args, "arch", None)
    patch = getattr(args, "patch_size", None)
    name = f"{arch}_patch{patch}_224"
    if not isinstance(arch, str) or not isinstance(patch, int) or not timm.is_model(name):
        raise BackboneLoadError(
            f"{path} is a DINO training checkpoint of arch {arch!r}, patch {patch!r}, which "
            "names no timm ViT; name its architecture: timm:NAME@FILE"
        )
    backbone, heads = dino_network(state, key, path)
    return _converted(str(path), path, file_sha256(path), name, name, {}, backbone, heads)


def is_dino_checkpoint(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` is DINO's full training checkpoint (``student`` and ``teacher``, each
    with ``backbone.`` tensors, DDP's ``module.`` prefix or not)."""
    networks = [state.get(k) for k in ("student", "teacher")]
    return all(
        isinstance(n, Mapping) and any(_unwrapped(k).startswith("backbone.") for k in n)
        for n in networks
    )


def dino_network(
    state: Mapping[str, Any], key: str, path: Path
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The ``key`` network of a DINO full checkpoint: backbone tensors (timm's names) and
    head tensors (names of :class:`~patchdino.models.head.DINOHead`)."""
    network = {_unwrapped(k): v for k, v in state[key].items()}
    backbone = {k[len("backbone.") :]: v for k, v in network.items() if k.startswith("backbone.")}
    head = {  # DINO's weight norm keeps g as (K, 1), patchdino's head as (K,)
        k[len("head.") :]: v.flatten() if k.endswith("weight_g") else v
        for k, v in network.items()
        if k.startswith("head.")
    }
    if not backbone:
        raise BackboneLoadError(f"{path}: its {key} holds no backbone.* tensors")
    return backbone, head


def weights_file(path: Path, weights: str) -> Path:
    """The weights file of ``path``: itself, or the first of :data:`FOLDER_WEIGHTS` in it."""
    if path.is_dir():
        for name in FOLDER_WEIGHTS:
            if (path / name).is_file():
                return path / name
        raise BackboneLoadError(
            f"weights {weights}: folder {path} holds none of {', '.join(FOLDER_WEIGHTS)}"
        )
    if not path.is_file():
        raise BackboneLoadError(f"weights {weights}: file {path} does not exist")
    if path.stat().st_size == 0:
        raise BackboneLoadError(f"weights {weights}: file {path} is empty")
    return path


def read_state_file(path: Path) -> dict[str, Any]:
    """The top-level mapping of a ``.safetensors`` or PyTorch file, read without building
    any object outside :data:`ALLOWED_GLOBALS`.

    Raises:
        BackboneLoadError: a truncated or unreadable file, a pickle with other objects.
    """
    from patchdino.checkpoint import CheckpointError, load_checkpoint

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise BackboneLoadError(f"cannot read {path}: {first_line(err)}") from err
    try:
        return load_checkpoint(path, allowed=ALLOWED_GLOBALS)
    except CheckpointError as err:
        raise BackboneLoadError(first_line(err)) from err


# ------------------------------------------------------------------------------ internals


def _unwrapped(name: str) -> str:
    return name[len("module.") :] if name.startswith("module.") else name


def _read_state(path: Path, key: str) -> tuple[dict[str, Any], str, dict[str, Tensor]]:
    """Tensors of ``path`` for timm's filter, its SHA-256, and for a DINO full checkpoint its
    ``key`` network's head (else nothing)."""
    state = read_state_file(path)
    sha = file_sha256(path)
    if is_dino_checkpoint(state):
        backbone, heads = dino_network(state, key, path)
        return backbone, sha, heads
    return state, sha, {}


def _checked_name(name: str) -> str:
    """The architecture of a timm name (its tag dropped), or a one-line error with close
    names when timm has no such ViT."""
    import timm

    arch = name.split(".", 1)[0]
    if name.startswith(("hf-hub:", "local-dir:")):
        raise BackboneLoadError(
            f"timm:{name}: give the folder itself as the weights (a model folder with "
            "config.json), or timm:NAME@FILE"
        )
    if timm.is_model(name) and arch.startswith("vit_"):
        return arch
    names = [*timm.list_models("vit_*", pretrained=True), *timm.list_models("vit_*")]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise BackboneLoadError(f"timm has no ViT named {name!r}{hint}")


def _build_kwargs(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """timm arguments of the model: patchdino's (no classifier, any image size) and a model
    folder's ``img_size``, ``patch_size`` and registers."""
    from patchdino.models.backbone import register_kwargs

    kwargs: dict[str, Any] = {"num_classes": 0, "global_pool": "token", "dynamic_img_size": True}
    kwargs.update({k: overrides[k] for k in ("img_size", "patch_size") if k in overrides})
    kwargs.update(register_kwargs(overrides.get("registers")))
    return kwargs


def _fetched(weights: str, name: str, arch: str) -> StoredWeights:
    """``timm:NAME``: the weights timm resolves itself."""
    import timm

    try:
        model = timm.create_model(name, pretrained=True, **_build_kwargs({}))
    except (OSError, RuntimeError, ValueError) as err:  # the hub's, urllib's and timm's
        raise BackboneLoadError(
            f"timm cannot get the weights of {name} ({first_line(err)}); offline, give the "
            f"file: timm:{name}@FILE"
        ) from err
    tensors = {f"{MODEL_PREFIX}{k}": v for k, v in model.state_dict().items()}
    return StoredWeights(
        None, tensors, _config_of(model, arch, {}), _in_chans(model), -1, weights, None
    )


def _converted(
    weights: str,
    path: Path,
    sha: str,
    name: str,
    arch: str,
    overrides: dict[str, Any],
    state: dict[str, Any],
    heads: dict[str, Tensor],
    pretrained_cfg: Mapping[str, Any] | None = None,
) -> StoredWeights:
    """``state`` converted by timm's filter for the architecture ``name``, checked to fit."""
    import timm
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    with torch.device("meta"):  # the layout only; the filter reads its shapes
        model = timm.create_model(name, pretrained=False, **_build_kwargs(overrides))
    if not isinstance(model, VisionTransformer):
        raise BackboneLoadError(f"{name} is not a plain timm VisionTransformer")
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise BackboneLoadError(f"{path} holds no tensors at its top level")
    try:
        converted = checkpoint_filter_fn(tensors, model)
    except (RuntimeError, ValueError, KeyError, IndexError) as err:
        raise BackboneLoadError(
            f"{path} cannot be converted for {name}: {first_line(err)}"
        ) from err
    converted = {k: v for k, v in converted.items() if not k.startswith("head.")}
    misfit = state_dict_misfit(model.state_dict(), converted)
    if misfit is not None:
        raise BackboneLoadError(f"{path} does not fit timm's {name}: {misfit}")
    tensors = {f"{MODEL_PREFIX}{k}": v.float() for k, v in converted.items()}
    config = _config_of(model, arch, overrides, pretrained_cfg)
    return StoredWeights(path, tensors, config, _in_chans(model), -1, weights, sha, heads)


def _in_chans(model: Any) -> int:
    return int(model.patch_embed.proj.weight.shape[1])


def _config_of(
    model: Any,
    arch: str,
    overrides: Mapping[str, Any],
    pretrained_cfg: Mapping[str, Any] | None = None,
) -> Config:
    """The patchdino config of a timm ViT: its arch, patch size, registers, native image side
    and normalisation, on image files."""
    cfg: Mapping[str, Any] = pretrained_cfg or getattr(model, "pretrained_cfg", None) or {}
    config = Config()
    config.model.arch = arch
    config.model.patch_size = int(model.patch_embed.patch_size[0])
    registers = overrides.get("registers")
    config.model.registers = None if registers is None else int(registers)
    config.views.global_size = int(model.patch_embed.img_size[0])
    config.data.kind = "imagefolder"
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean is not None and std is not None:
        config.data.mean = tuple(float(v) for v in mean)
        config.data.std = tuple(float(v) for v in std)
    return config
