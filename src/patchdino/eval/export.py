"""Export one backbone of a pretraining checkpoint as a ``.safetensors`` file.

The export holds only the backbone's tensors (no heads, optimiser or loss state), in float32
by default, and records in its metadata everything needed to rebuild it: the run's config as
JSON, the input channels, the kind of data it was trained on, the checkpoint key and the
training step. :func:`~patchdino.eval.backbone_loading.load_backbone` reads it back.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from patchdino.eval.backbone_loading import EXPORT_FORMAT, BackboneLoadError, read_weights


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
    from safetensors.torch import save_file

    output = Path(output)
    if output.suffix != ".safetensors":
        raise BackboneLoadError(f"export file {output} must end in .safetensors")
    if Path(checkpoint).suffix == ".safetensors":
        raise BackboneLoadError(f"{checkpoint} is already an export; give a checkpoint.pt")
    stored = read_weights(checkpoint, key)
    tensors = {
        name: (t.to(dtype) if t.is_floating_point() else t).contiguous()
        for name, t in stored.tensors.items()
    }
    metadata = {
        "format": EXPORT_FORMAT,
        "config": json.dumps(stored.config.to_dict()),
        "in_chans": str(stored.in_chans),
        "data_kind": stored.config.data.kind,
        "checkpoint_key": key,
        "step": str(stored.step),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(output), metadata=metadata)
    return output
