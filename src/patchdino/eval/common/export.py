"""Export one backbone of a pretraining checkpoint as a ``.safetensors`` file timm can load.

The export holds only the backbone's tensors (no heads, optimiser or loss state), in float32
by default, named exactly as in timm's ``VisionTransformer``. Its metadata records what is
needed to use it without patchdino:

- ``timm_model`` and ``timm_kwargs`` (JSON): the timm model name and the arguments that
  rebuild the architecture (``img_size``, ``patch_size``, ``embed_dim``, ``depth``,
  ``num_heads``, ``in_chans``, ``dynamic_img_size``, and ``reg_tokens`` with
  ``no_embed_class`` for register tokens). The custom small sizes
  (:data:`~patchdino.models.backbone.CUSTOM_ARCHS`) are a standard timm name with their sizes
  as arguments. So either of::

      timm.create_model(name, pretrained=True, num_classes=0,
                        pretrained_cfg_overlay=dict(file=path), **kwargs)
      timm.create_model(name, num_classes=0, **kwargs).load_state_dict(load_file(path))

  gives the network, whose output is the CLS feature of ``patchdino features``;
- ``mean`` and ``std`` (JSON): the normalisation the weights were trained with;
- ``eval_transform`` (JSON): the evaluation transform
  (:class:`~patchdino.eval.common.transform.EvalTransform`);
- the run's config as JSON, the input channels, the kind of data it was trained on, the
  checkpoint key and the training step, which
  :func:`~patchdino.eval.common.backbone_loading.load_backbone` reads back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from patchdino.eval.common.backbone_loading import (
    EXPORT_FORMAT,
    BackboneLoadError,
    StoredWeights,
    read_weights,
)
from patchdino.eval.common.transform import EvalTransform

TIMM_PREFIX = "model."
"""Prefix of the timm model's tensors in :class:`~patchdino.models.Backbone` state dicts."""
CUSTOM_TIMM_NAME = "vit_tiny_patch16_224"
"""Standard timm name the custom sizes are exported as (with their sizes as arguments)."""


def timm_architecture(stored: StoredWeights) -> tuple[str, dict[str, Any]]:
    """The timm model name and keyword arguments that rebuild the stored backbone.

    Returns:
        ``(name, kwargs)`` such that ``timm.create_model(name, num_classes=0, **kwargs)`` has
        exactly the stored tensors (without their ``model.`` prefix).
    """
    from patchdino.models.backbone import CUSTOM_ARCHS, register_kwargs

    config = stored.config
    arch = config.model.arch
    embed = stored.tensors[f"{TIMM_PREFIX}cls_token"].shape[-1]
    proj = stored.tensors[f"{TIMM_PREFIX}patch_embed.proj.weight"]  # (D, C, p, p)
    depth = len({k.split(".")[2] for k in stored.tensors if k.startswith(f"{TIMM_PREFIX}blocks.")})
    if arch in CUSTOM_ARCHS:
        name, heads = CUSTOM_TIMM_NAME, CUSTOM_ARCHS[arch]["num_heads"]
    else:
        import timm

        name = arch
        with torch.device("meta"):  # the layout only, without allocating weights
            model: Any = timm.create_model(arch, pretrained=False)
        heads = int(model.blocks[0].attn.num_heads)
    kwargs = {
        "img_size": config.views.global_size,
        "patch_size": int(proj.shape[-1]),
        "in_chans": int(proj.shape[1]),
        "embed_dim": int(embed),
        "depth": depth,
        "num_heads": heads,
        "dynamic_img_size": True,
        **register_kwargs(config.model.registers),
    }
    return name, kwargs


@dataclass(frozen=True)
class Export:
    """What an export holds, before it is written.

    Attributes:
        tensors: the backbone's tensors under timm's names, in the export's dtype.
        stored: the weights as read from the checkpoint.
        key: the network exported, ``"teacher"`` or ``"student"``.
        timm_name: the timm model name that rebuilds the architecture.
        timm_kwargs: its keyword arguments (with ``num_classes=0``, the network's output is
            the CLS feature).
        transform: the evaluation transform of the weights (its mean and std are the
            training normalisation).
    """

    tensors: dict[str, torch.Tensor]
    stored: StoredWeights
    key: str
    timm_name: str
    timm_kwargs: dict[str, Any]
    transform: EvalTransform

    @property
    def metadata(self) -> dict[str, str]:
        """The ``.safetensors`` metadata (strings), as the module docstring lists."""
        config = self.stored.config
        return {
            "format": EXPORT_FORMAT,
            "timm_model": self.timm_name,
            "timm_kwargs": json.dumps(self.timm_kwargs),
            "mean": json.dumps(list(self.transform.mean)),
            "std": json.dumps(list(self.transform.std)),
            "eval_transform": json.dumps(self.transform.to_dict()),
            "config": json.dumps(config.to_dict()),
            "in_chans": str(self.stored.in_chans),
            "data_kind": config.data.kind,
            "checkpoint_key": self.key,
            "step": str(self.stored.step),
        }


def prepare_export(
    checkpoint: str | Path, key: str = "teacher", dtype: torch.dtype = torch.float32
) -> Export:
    """Read the ``key`` backbone of ``checkpoint`` and lay it out as an export.

    Raises:
        BackboneLoadError: the checkpoint cannot be read or is already an export.
    """
    from patchdino.data.datasets import normalisation
    from patchdino.eval.common.eval_data import eval_mode

    if Path(checkpoint).suffix == ".safetensors":
        raise BackboneLoadError(f"{checkpoint} is already an export; give a checkpoint.pt")
    stored = read_weights(checkpoint, key)
    config = stored.config
    tensors = {
        name[len(TIMM_PREFIX) :]: (t.to(dtype) if t.is_floating_point() else t).contiguous()
        for name, t in stored.tensors.items()
    }
    name, kwargs = timm_architecture(stored)
    mean, std = normalisation(config, config.data.kind, stored.in_chans)
    transform = EvalTransform(
        config.views.global_size, mean, std, eval_mode(config.data.kind), config.data.canvas
    )
    return Export(tensors, stored, key, name, kwargs, transform)


def save_export(export: Export, output: str | Path) -> Path:
    """Write ``export`` as one ``.safetensors`` file (its folder is created)."""
    from safetensors.torch import save_file

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_file(export.tensors, str(output), metadata=export.metadata)
    return output


def export_backbone(
    checkpoint: str | Path,
    output: str | Path,
    key: str = "teacher",
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write the ``key`` backbone of ``checkpoint`` to ``output`` (a ``.safetensors`` file).

    Args:
        checkpoint: a ``checkpoint.pt`` written by ``patchdino pretrain`` or its run folder.
        output: destination file; must end in ``.safetensors``. Its folder is created.
        key: ``"teacher"`` (the usual choice for evaluation) or ``"student"``.
        dtype: floating dtype of the stored tensors.

    Returns:
        The path written.

    Raises:
        BackboneLoadError: the checkpoint cannot be read, is already an export, or
            ``output`` has another suffix.
    """
    if Path(output).suffix != ".safetensors":
        raise BackboneLoadError(f"export file {output} must end in .safetensors")
    return save_export(prepare_export(checkpoint, key, dtype), output)
