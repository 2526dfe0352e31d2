"""AdamW with DINO's parameter groups, gradient clipping and last-layer freezing."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from patchdino.config.optim import AdamWUpdate
from patchdino.train.schedules import ScheduleValues


def parameter_groups(model: nn.Module) -> list[dict[str, object]]:
    """Two AdamW groups: decayed weights and undecayed biases / norm parameters.

    A parameter is excluded from weight decay when it is one-dimensional (biases, norm scales
    and shifts, layer-scale) or is a position embedding / class token, as in DINO.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name or "cls_token" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "apply_weight_decay": True},
        {"params": no_decay, "apply_weight_decay": False, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, update: AdamWUpdate = "foreach") -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters; lr and wd are set per step.

    Args:
        model: its trainable parameters are optimised, in :func:`parameter_groups`.
        update: ``foreach``, the multi-tensor update (the same arithmetic as the
            per-parameter loop, in a few calls instead of about ten per parameter tensor),
            or ``fused``, PyTorch's fused kernel (``optim.adamw``).
    """
    fused = update == "fused"
    return torch.optim.AdamW(
        parameter_groups(model),
        lr=0.0,
        weight_decay=0.0,
        foreach=None if fused else True,
        fused=fused or None,
    )


def apply_schedule(optimizer: torch.optim.Optimizer, values: ScheduleValues) -> None:
    """Write the step's learning rate and weight decay into every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = values.lr
        group["weight_decay"] = values.weight_decay if group.get("apply_weight_decay") else 0.0


def clip_gradients(parameters: Iterable[nn.Parameter], max_norm: float) -> float:
    """Clip the gradient of each parameter tensor to ``max_norm`` separately (DINO's rule).

    Returns:
        The global gradient norm before clipping (for logging). ``max_norm <= 0`` only measures.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    norms = torch.stack(torch._foreach_norm(grads))  # (P,)
    total = torch.linalg.vector_norm(norms).item()
    if max_norm > 0:
        scales = torch.clamp(max_norm / (norms + 1e-6), max=1.0)  # (P,)
        torch._foreach_mul_(grads, list(scales.unbind()))
    return float(total)


def cancel_last_layer_gradients(head_last_layers: Iterable[nn.Module]) -> None:
    """Drop gradients of the heads' last layers (frozen during the first epoch)."""
    for layer in head_last_layers:
        for param in layer.parameters():
            param.grad = None
