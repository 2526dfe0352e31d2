"""Frozen-feature extraction for the k-NN and linear-probe evaluations.

:func:`extract_features` runs a model over a data loader without gradients (bf16 autocast on
CUDA) and returns CPU features and labels; under ``torch.distributed`` it gathers every rank's
share. :func:`token_features` pools a ViT's output tokens into one vector per image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from patchdino.eval.common.options import POOLS
from patchdino.precision import autocast_for


def token_features(tokens: Tensor, pool: str = "cls", num_prefix_tokens: int = 1) -> Tensor:
    """Pool a ViT's output tokens into one feature vector per image.

    Args:
        tokens: ``(B, P + N, D)`` tokens: ``P`` prefix tokens (CLS first, then any register
            tokens) followed by ``N`` patch tokens.
        pool: ``"cls"`` for the CLS token ``(B, D)``; ``"mean"`` for the mean of the patch
            tokens ``(B, D)``; ``"both"`` for the two concatenated, CLS first, ``(B, 2D)``.
        num_prefix_tokens: ``P``, the number of tokens before the first patch token.

    Returns:
        ``(B, D)`` or ``(B, 2D)`` features, same dtype and device as ``tokens``.

    Raises:
        ValueError: on an unknown ``pool``, a tensor that is not 3-D, or no patch tokens when
            they are needed.
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    if tokens.ndim != 3:
        raise ValueError(f"tokens must have shape (B, P + N, D), got {tuple(tokens.shape)}")
    if num_prefix_tokens < 1:
        raise ValueError(f"num_prefix_tokens must be at least 1 (CLS), got {num_prefix_tokens}")
    cls = tokens[:, 0]  # (B, D)
    if pool == "cls":
        return cls
    if tokens.shape[1] <= num_prefix_tokens:
        raise ValueError(
            f"pool={pool!r} needs patch tokens, but tokens has {tokens.shape[1]} tokens and "
            f"{num_prefix_tokens} prefix tokens"
        )
    patch_mean = tokens[:, num_prefix_tokens:].mean(dim=1)  # (B, D)
    if pool == "mean":
        return patch_mean
    return torch.cat([cls, patch_mean], dim=1)  # (B, 2D)


def extract_features(
    model: Callable[[Tensor], Tensor] | nn.Module,
    loader: Iterable[Sequence[Tensor]],
    device: torch.device | str,
    transform: Callable[[Tensor], Tensor] | None = None,
    progress: bool = True,
    desc: str = "features",
) -> tuple[Tensor, Tensor]:
    """Compute one feature vector per image over a whole data loader.

    The model runs under ``torch.inference_mode``, with bf16 autocast on CUDA only. Each batch's
    output is cast to float32 and moved to the CPU as soon as it is computed. An ``nn.Module``
    is put in eval mode for the pass and returned to its previous mode afterwards.

    When ``torch.distributed`` is initialised, every rank's features and labels are gathered
    (uneven shares allowed) and every rank returns all of them, rank 0's first. A
    ``DistributedSampler`` interleaves samples across ranks and may repeat a few to even out
    the shares, so the result is in rank-major order, not data-set order; features and labels
    stay aligned.

    Args:
        model: maps ``(B, C, H, W)`` images to ``(B, D)`` features (see :func:`token_features`
            to pool a ViT's tokens).
        loader: yields tuples or lists whose first item is a ``(B, C, H, W)`` image tensor and
            whose last item is the ``(B,)`` integer labels.
        device: where the model runs.
        transform: applied to each image batch on ``device`` before the model (e.g.
            normalisation).
        progress: show a progress bar (on rank 0 only when distributed).
        desc: progress bar label.

    Returns:
        ``(N, D)`` float32 features and ``(N,)`` long labels, both on the CPU.

    Raises:
        ValueError: if the loader yields no batches, a batch is not a sequence of at least two
            items, or the model output is not a ``(B, D)`` tensor.
    """
    device = torch.device(device)
    distributed = dist.is_available() and dist.is_initialized()
    show = progress and (not distributed or dist.get_rank() == 0)
    was_training = model.training if isinstance(model, nn.Module) else None
    if isinstance(model, nn.Module):
        model.eval()
    features: list[Tensor] = []
    labels: list[Tensor] = []
    try:
        for batch in tqdm(loader, desc=desc, disable=not show):
            images, batch_labels = _split_batch(batch)
            images = images.to(device, non_blocking=True)
            with torch.inference_mode(), autocast_for("auto", device):
                if transform is not None:
                    images = transform(images)
                out = model(images)
            if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != images.shape[0]:
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(
                    f"model must return a ({images.shape[0]}, D) tensor for a batch of "
                    f"{images.shape[0]} images, got {shape}; pool token outputs with "
                    "token_features"
                )
            # Outside inference mode the copies are ordinary tensors, usable with autograd.
            features.append(out.float().cpu())
            labels.append(torch.as_tensor(batch_labels).long().cpu())
    finally:
        if isinstance(model, nn.Module) and was_training:
            model.train()
    if not features:
        raise ValueError("the loader yielded no batches")
    all_features, all_labels = torch.cat(features), torch.cat(labels)
    if all_labels.shape != all_features.shape[:1]:
        raise ValueError(
            f"got {all_labels.shape[0]} labels for {all_features.shape[0]} features; the "
            "last item of each batch must hold one label per image"
        )
    if distributed:
        all_features = all_gather_uneven(all_features, device)
        all_labels = all_gather_uneven(all_labels, device)
    return all_features, all_labels


def _split_batch(batch: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """First item (images) and last item (labels) of a loader batch."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(
            "each batch must be a tuple or list (images, ..., labels) of at least two items, "
            f"got {type(batch).__name__}"
        )
    images = batch[0]
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"batch[0] must be a (B, C, H, W) image tensor, got {shape}")
    return images, batch[-1]


def all_gather_uneven(tensor: Tensor, device: torch.device | str | None = None) -> Tensor:
    """Concatenate every rank's ``tensor`` along dim 0, allowing different lengths per rank.

    Each rank pads its tensor to the longest length, the padded tensors are all-gathered and
    the padding is dropped. Without an initialised process group the input is returned as is.

    Args:
        tensor: ``(n_rank, *S)`` tensor; ``S`` and the dtype must agree across ranks.
        device: where to communicate when the backend is NCCL (a CUDA device); the gloo
            backend communicates on the CPU.

    Returns:
        ``(sum of n_rank, *S)`` tensor on the device of ``tensor``, rank 0's rows first.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    comm_device = torch.device("cpu")
    if "nccl" in str(dist.get_backend()) and device is not None:
        comm_device = torch.device(device)
    local = tensor.to(comm_device)
    world_size = dist.get_world_size()
    size = torch.tensor([local.shape[0]], dtype=torch.long, device=comm_device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    padded = local.new_zeros((max(counts), *local.shape[1:]))
    padded[: local.shape[0]] = local
    gathered = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:n] for g, n in zip(gathered, counts)]).to(tensor.device)
