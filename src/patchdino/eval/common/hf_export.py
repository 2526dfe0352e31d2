"""Export one backbone as a model folder in the layout of timm and the Hugging Face hub.

The folder holds:

- ``model.safetensors``: the backbone under timm's names, with the same metadata as a
  ``patchdino export`` file (:mod:`patchdino.eval.common.export`), so that patchdino reads
  the folder as it reads that file;
- ``config.json``: ``architecture``, ``num_classes`` (0: the output is the CLS feature),
  ``num_features``, ``global_pool``, ``model_args`` (what rebuilds the architecture) and
  ``pretrained_cfg`` (the input: channels, size, mean and std, interpolation, crop), which
  ``timm.create_model("local-dir:FOLDER", pretrained=True)`` reads, and a ``patchdino``
  entry (data kind, step, checkpoint key, the evaluation transform) that timm ignores;
- ``README.md``: a model card with how to load it, the architecture, the training data,
  the step, the run's configuration and every evaluation result (``*.json``) found in
  the run folder.

``pretrained_cfg`` is chosen so that ``timm.data.create_transform(
**timm.data.resolve_data_config({}, model=model))`` repeats patchdino's evaluation transform
(:mod:`patchdino.eval.common.transform`) as closely as timm's steps allow:

- in-memory data sets (``resize``): the whole image to ``S x S``, bicubic: timm's
  ``crop_mode="squash"`` with ``crop_pct=1``;
- image files (``center_crop``): shorter side to ``round(S * 256 / 224)``, bicubic, central
  ``S x S``: timm's ``crop_mode="center"`` with a ``crop_pct`` whose ``floor(S / crop_pct)``
  is that same side. patchdino first fits the image on its canvas (longer side to the
  canvas, bilinear); timm has no such step, so the inputs agree only for images whose
  longer side is the canvas already.

Even where the steps agree, timm resizes with PIL while patchdino resizes uint8 tensors
with PyTorch (both bicubic with antialiasing): a pixel may differ by one level of 255.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from patchdino.eval.common.backbone_loading import (
    EXPORT_FORMAT,
    MODEL_FOLDER_WEIGHTS,
    BackboneLoadError,
)
from patchdino.eval.common.export import Export, prepare_export, save_export
from patchdino.eval.common.transform import EvalTransform

CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
RESULT_FILE_LIMIT = 20_000
"""Largest evaluation JSON (characters) the model card quotes whole; larger ones are named."""
SKIPPED_JSON = ("checkpoints.json",)
"""JSON files of a run folder that are not evaluation results (the checkpoint manifest)."""


def timm_input_config(transform: EvalTransform) -> dict[str, Any]:
    """The ``pretrained_cfg`` input entries that make timm's transform repeat ``transform``.

    Returns:
        ``input_size`` ``(C, S, S)``, ``interpolation``, ``crop_pct``, ``crop_mode``,
        ``mean`` and ``std`` (tuples, one value per channel).
    """
    size = transform.image_size
    if transform.mode == "resize":
        crop_pct, crop_mode = 1.0, "squash"
    else:
        from patchdino.eval.common.eval_data import CROP_RATIO

        side = round(size / CROP_RATIO)
        # A value just below size / side, so that timm's floor(size / crop_pct) is ``side``
        # (size / side itself may give side - 1 in floating point).
        crop_pct = math.floor(size / side * 1e6) / 1e6
        crop_mode = "center"
        assert math.floor(size / crop_pct) == side
    return {
        "input_size": (transform.channels, size, size),
        "interpolation": "bicubic",
        "crop_pct": crop_pct,
        "crop_mode": crop_mode,
        "mean": transform.mean,
        "std": transform.std,
    }


def hf_config(export: Export) -> dict[str, Any]:
    """``config.json`` of the model folder of ``export`` (see the module docstring)."""
    model_args = {**export.timm_kwargs, "num_classes": 0}
    pretrained_cfg = {
        **timm_input_config(export.transform),
        "num_classes": 0,
        "fixed_input_size": False,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
    }
    return {
        "architecture": export.timm_name,
        "num_classes": 0,
        "num_features": int(export.timm_kwargs["embed_dim"]),
        "global_pool": "token",
        "model_args": model_args,
        "pretrained_cfg": pretrained_cfg,
        "patchdino": {
            "format": EXPORT_FORMAT,
            "data_kind": export.stored.config.data.kind,
            "checkpoint_key": export.key,
            "step": export.stored.step,
            "eval_transform": export.transform.to_dict(),
        },
    }


def run_folder_results(run: Path) -> dict[str, Any]:
    """Evaluation results found in a run folder: each ``*.json`` (but the checkpoint
    manifest) by name, its parsed content, or a short note when it is too large or not JSON."""
    results: dict[str, Any] = {}
    for path in sorted(run.glob("*.json")):
        if path.name in SKIPPED_JSON or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if len(text) > RESULT_FILE_LIMIT:
            results[path.name] = f"({len(text)} characters, not quoted)"
            continue
        try:
            results[path.name] = json.loads(text)
        except json.JSONDecodeError:
            results[path.name] = "(not valid JSON)"
    return results


def model_card(export: Export, config: dict[str, Any], results: dict[str, Any]) -> str:
    """The folder's ``README.md``: what the weights are, how to load them, how they were made.

    Args:
        export: the export laid out by :func:`~patchdino.eval.common.export.prepare_export`.
        config: the folder's ``config.json`` content (:func:`hf_config`).
        results: evaluation results of the run folder (:func:`run_folder_results`).
    """
    stored = export.stored
    train_config = stored.config
    arch = train_config.model.arch
    kwargs = export.timm_kwargs
    cfg = config["pretrained_cfg"]
    lines = [
        "---",
        "library_name: timm",
        "tags:",
        "- image-feature-extraction",
        "- self-supervised",
        "- patchdino",
        "---",
        "",
        f"# {arch}, {export.key} of a patchdino pretraining",
        "",
        "A Vision Transformer backbone pretrained without labels by local-global "
        "self-distillation (DINO with a loss between matched patches of different views), "
        "written by `patchdino export --format hf`. Its output is the CLS feature "
        f"({kwargs['embed_dim']} values); `forward_features` gives every token.",
        "",
        "## Use",
        "",
        "```python",
        "import timm",
        "",
        'model = timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True).eval()',
        "config = timm.data.resolve_data_config({}, model=model)",
        "transform = timm.data.create_transform(**config)",
        "features = model(transform(image).unsqueeze(0))  # (1, D)",
        "```",
        "",
        f"The model takes {cfg['input_size'][0]}-channel images (give PIL images in mode "
        f"`{'L' if cfg['input_size'][0] == 1 else 'RGB'}`). `patchdino features --weights "
        "FOLDER` reads the folder too.",
        "",
        "## Architecture and input",
        "",
        f"- timm model `{export.timm_name}` with {_inline(kwargs)}",
        f"- input: {cfg['input_size'][1]} x {cfg['input_size'][2]}, mean {_numbers(cfg['mean'])},"
        f" std {_numbers(cfg['std'])}, {cfg['interpolation']}, crop mode `{cfg['crop_mode']}`"
        f" (crop_pct {cfg['crop_pct']})",
        f"- patchdino's evaluation transform: `{json.dumps(export.transform.to_dict())}`",
        "",
        "## Training",
        "",
        f"- data: kind `{train_config.data.kind}`, {stored.in_chans} channel(s)",
        f"- step: {stored.step if stored.step >= 0 else 'unknown'}",
        f"- weights: the {export.key} network",
        "",
        "The run's configuration:",
        "",
        "```yaml",
        train_config.to_yaml().rstrip(),
        "```",
        "",
        "## Evaluation",
        "",
    ]
    if results:
        lines.append("Results found in the run folder:")
        for name, record in results.items():
            lines += ["", f"`{name}`:", "", "```json", json.dumps(record, indent=1), "```"]
    else:
        lines.append("No evaluation results were found in the run folder.")
    return "\n".join(lines) + "\n"


def export_hf(
    checkpoint: str | Path,
    folder: str | Path,
    key: str = "teacher",
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write the ``key`` backbone of ``checkpoint`` as a model folder (see the module docstring).

    Args:
        checkpoint: a ``checkpoint.pt`` written by ``patchdino pretrain`` or its run folder;
            the folder it is in is searched for evaluation results.
        folder: the model folder; created if missing. Files of the same names are replaced.
        key: ``"teacher"`` or ``"student"``.
        dtype: floating dtype of the stored tensors.

    Returns:
        ``folder``.

    Raises:
        BackboneLoadError: the checkpoint cannot be read, is already an export, or
            ``folder`` is a file.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise BackboneLoadError(f"model folder {folder} is a file; give a folder")
    export = prepare_export(checkpoint, key, dtype)
    config = hf_config(export)
    path = export.stored.path
    results = {} if path is None else run_folder_results(path.parent)
    folder.mkdir(parents=True, exist_ok=True)
    save_export(export, folder / MODEL_FOLDER_WEIGHTS)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (folder / CARD_FILE).write_text(model_card(export, config, results))
    return folder


def _inline(values: dict[str, Any]) -> str:
    return ", ".join(f"`{k}={v}`" for k, v in values.items())


def _numbers(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"
