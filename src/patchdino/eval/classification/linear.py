"""Linear probe on frozen features, following DINO's linear-evaluation recipe.

Features (Caron et al. 2021, arXiv 2104.14294, section 4.1 and appendix): the CLS tokens of
the last ``n`` blocks, each after the backbone's final norm, concatenated, optionally followed
by the average of the last block's patch tokens (DINO: ``n = 4`` without pooled patch tokens
for ViT-S, ``n = 1`` with them for ViT-B).

Classifier: one ``nn.Linear`` (weights normal with std 0.01, zero bias, no BatchNorm) trained
with cross-entropy by SGD (momentum 0.9, weight decay 0), learning rate ``lr * batch_size /
256`` decayed by a cosine schedule stepped once per epoch, for ``epochs`` epochs. Accuracy is
that of the final epoch.

Two departures, both optional. Features are standardised per dimension with train-set
statistics by default (``normalize="none"`` is DINO's exact recipe); this makes one learning
rate suit features of any scale. And the probe trains on precomputed features, without DINO's
random-resized-crop augmentation, which is much faster but not strictly comparable.

Choosing the learning rate: with ``lrs``, each candidate is trained on 90% of the train set and
scored on the held-out 10%; the best one is retrained on the whole train set and only then
evaluated on the test set. Picking the rate (or the epoch) by test accuracy, as is often done,
overstates the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from patchdino.models.backbone import prefix_count

NORMALIZATIONS = ("standardize", "none")


def multiblock_features(
    block_tokens: Sequence[Tensor],
    n_last_blocks: int = 4,
    avgpool_patch_tokens: bool = False,
    num_prefix_tokens: int = 1,
) -> Tensor:
    """Concatenate the CLS tokens of the last blocks (and optionally the mean patch token).

    Args:
        block_tokens: per-block outputs in depth order, each ``(B, P + N, D)`` with ``P``
            prefix tokens (CLS first) and ``N`` patch tokens, already passed through the
            backbone's final norm.
        n_last_blocks: how many of the last blocks contribute their CLS token.
        avgpool_patch_tokens: append the mean of the last block's patch tokens.
        num_prefix_tokens: ``P``.

    Returns:
        ``(B, n_last_blocks * D)`` features, or ``(B, (n_last_blocks + 1) * D)`` with
        ``avgpool_patch_tokens``: CLS of the earliest of the last blocks first.

    Raises:
        ValueError: if fewer than ``n_last_blocks`` outputs are given or their shapes differ.
    """
    if n_last_blocks < 1 or len(block_tokens) < n_last_blocks:
        raise ValueError(
            f"need at least n_last_blocks={n_last_blocks} >= 1 block outputs, "
            f"got {len(block_tokens)}"
        )
    last = list(block_tokens[-n_last_blocks:])
    shapes = {tuple(t.shape) for t in last}
    if len(shapes) != 1 or last[0].ndim != 3:
        raise ValueError(f"block outputs must share one (B, P + N, D) shape, got {shapes}")
    parts = [t[:, 0] for t in last]  # n x (B, D)
    if avgpool_patch_tokens:
        if last[-1].shape[1] <= num_prefix_tokens:
            raise ValueError("avgpool_patch_tokens needs patch tokens after the prefix tokens")
        parts.append(last[-1][:, num_prefix_tokens:].mean(dim=1))  # (B, D)
    return torch.cat(parts, dim=1)


class MultiBlockFeatures(nn.Module):
    """Linear-probe features of a timm Vision Transformer, for :func:`extract_features`.

    Args:
        backbone: a timm ``VisionTransformer`` (anything with timm's ``forward_intermediates``
            and ``num_prefix_tokens``).
        n_last_blocks: how many of the last blocks contribute their CLS token.
        avgpool_patch_tokens: append the mean of the last block's patch tokens.
    """

    def __init__(
        self, backbone: nn.Module, n_last_blocks: int = 4, avgpool_patch_tokens: bool = False
    ) -> None:
        super().__init__()
        if not hasattr(backbone, "forward_intermediates"):
            raise ValueError("backbone must provide timm's forward_intermediates")
        self.backbone = backbone
        self.n_last_blocks = n_last_blocks
        self.avgpool_patch_tokens = avgpool_patch_tokens

    def forward(self, images: Tensor) -> Tensor:
        """``(B, C, H, W)`` images to ``(B, n_last_blocks * D)`` features (``+ D`` if pooled)."""
        forward_intermediates = self.backbone.forward_intermediates
        assert callable(forward_intermediates)
        outputs = forward_intermediates(
            images,
            indices=self.n_last_blocks,
            return_prefix_tokens=True,
            norm=True,
            output_fmt="NLC",
            intermediates_only=True,
        )
        # Each output is (patch tokens (B, N, D), prefix tokens (B, P, D)).
        tokens = [torch.cat([prefix, patches], dim=1) for patches, prefix in outputs]
        return multiblock_features(
            tokens,
            self.n_last_blocks,
            self.avgpool_patch_tokens,
            num_prefix_tokens=prefix_count(self.backbone),
        )


class LinearProbe(nn.Module):
    """A linear classifier applied to per-dimension standardised features.

    Args:
        dim: feature dimension ``D``.
        num_classes: number of classes ``C``.
        mean: ``(D,)`` feature mean subtracted first (zeros when None).
        std: ``(D,)`` feature scale divided by next (ones when None).
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self, dim: int, num_classes: int, mean: Tensor | None = None, std: Tensor | None = None
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim) if mean is None else mean.float().clone())
        self.register_buffer("std", torch.ones(dim) if std is None else std.float().clone())
        self.linear = nn.Linear(dim, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        """``(B, D)`` features to ``(B, C)`` logits."""
        return self.linear((features - self.mean) / self.std)


@dataclass(frozen=True)
class LinearResult:
    """Outcome of :func:`train_linear_probe`.

    Attributes:
        top1: test top-1 accuracy in percent, after the last epoch.
        top5: test top-5 accuracy in percent (top-C when there are fewer than 5 classes).
        lr: base learning rate of the reported model (before scaling by ``batch_size / 256``).
        history: one dict per epoch of the reported model: ``epoch`` (1-based), ``lr``
            (scaled rate used in that epoch), ``loss`` and ``train_top1`` (running means over
            the epoch's batches).
        sweep: held-out top-1 in percent for each candidate base rate; empty without ``lrs``.
        probe: the trained classifier, on the CPU, taking raw (unstandardised) features.
    """

    top1: float
    top5: float
    lr: float
    history: list[dict[str, float]]
    sweep: dict[float, float] = field(default_factory=dict)
    probe: LinearProbe | None = None


def train_linear_probe(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float = 0.001,
    batch_size: int = 1024,
    weight_decay: float = 0.0,
    normalize: str = "standardize",
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    lrs: Sequence[float] | None = None,
    val_fraction: float = 0.1,
) -> LinearResult:
    """Train a linear classifier on frozen features and report its test accuracy.

    The whole train set is moved to ``device`` once (about 8 GB for ImageNet-1k with
    ViT-S/16 4-block features); pass a CPU device when it does not fit. Results are
    deterministic for a given ``seed`` on the CPU (CUDA kernels may add rounding noise).

    Args:
        train_feats: ``(N, D)`` float features.
        train_labels: ``(N,)`` integer labels in ``[0, num_classes)``.
        test_feats: ``(M, D)`` float features.
        test_labels: ``(M,)`` integer labels.
        num_classes: number of classes ``C``.
        epochs: training epochs.
        lr: base learning rate, scaled by ``batch_size / 256``; ignored when ``lrs`` is given.
        batch_size: SGD batch size.
        weight_decay: SGD weight decay (0 in DINO).
        normalize: ``"standardize"`` (subtract the train mean, divide by the train standard
            deviation, per dimension) or ``"none"``.
        seed: seeds the weight initialisation, the shuffling and the held-out split.
        device: where to train; defaults to the device of ``train_feats``.
        progress: show a progress bar over epochs.
        lrs: candidate base learning rates; the best on a held-out ``val_fraction`` of the
            train set is retrained on the whole train set and reported.
        val_fraction: share of the train set held out when sweeping ``lrs``.

    Returns:
        A :class:`LinearResult`.

    Raises:
        ValueError: on mismatched shapes, labels out of range, or bad hyper-parameters.
    """
    _check_probe_inputs(train_feats, train_labels, test_feats, test_labels, num_classes)
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs}, {batch_size}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be non-negative, got {weight_decay}")
    device = torch.device(device) if device is not None else train_feats.device
    config = _FitConfig(
        num_classes, epochs, batch_size, weight_decay, normalize, seed, device, progress
    )

    sweep: dict[float, float] = {}
    if lrs is not None:
        candidates = [float(x) for x in lrs]
        if not candidates or any(x <= 0 for x in candidates):
            raise ValueError(f"lrs must be a non-empty list of positive rates, got {lrs}")
        fit_idx, val_idx = _holdout_split(train_feats.shape[0], val_fraction, seed)
        for candidate in candidates:
            probe, _ = _fit(train_feats[fit_idx], train_labels[fit_idx], candidate, config)
            sweep[candidate] = _accuracy(probe, train_feats[val_idx], train_labels[val_idx])[0]
        lr = max(candidates, key=lambda x: sweep[x])  # first of the best on ties
    elif lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")

    probe, history = _fit(train_feats, train_labels, lr, config)
    top1, top5 = _accuracy(probe, test_feats, test_labels)
    return LinearResult(
        top1=top1, top5=top5, lr=lr, history=history, sweep=sweep, probe=probe.cpu()
    )


@dataclass(frozen=True)
class _FitConfig:
    num_classes: int
    epochs: int
    batch_size: int
    weight_decay: float
    normalize: str
    seed: int
    device: torch.device
    progress: bool


def _fit(
    feats: Tensor, labels: Tensor, base_lr: float, cfg: _FitConfig
) -> tuple[LinearProbe, list[dict[str, float]]]:
    """Train one probe on ``(n, D)`` features and ``(n,)`` labels; return it and its history."""
    generator = torch.Generator().manual_seed(cfg.seed)
    feats = feats.to(cfg.device)
    labels = labels.to(cfg.device, torch.long)
    mean, std = _standardization(feats) if cfg.normalize == "standardize" else (None, None)
    probe = LinearProbe(feats.shape[1], cfg.num_classes, mean, std)
    with torch.no_grad():
        probe.linear.weight.copy_(
            torch.randn(probe.linear.weight.shape, generator=generator) * 0.01
        )
        probe.linear.bias.zero_()
    probe.to(cfg.device).train()

    peak_lr = base_lr * cfg.batch_size / 256
    optimizer = torch.optim.SGD(
        probe.parameters(), lr=peak_lr, momentum=0.9, weight_decay=cfg.weight_decay
    )
    num = feats.shape[0]
    history: list[dict[str, float]] = []
    bar = tqdm(range(cfg.epochs), desc=f"linear probe lr={base_lr:g}", disable=not cfg.progress)
    for epoch in bar:
        epoch_lr = peak_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr
        order = torch.randperm(num, generator=generator).to(cfg.device)
        loss_sum = torch.zeros((), device=cfg.device)
        correct = torch.zeros((), device=cfg.device, dtype=torch.long)
        for start in range(0, num, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            logits = probe(feats[idx].float())  # (b, C)
            loss = F.cross_entropy(logits, labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * idx.numel()
            correct += (logits.detach().argmax(dim=1) == labels[idx]).sum()
        record = {
            "epoch": float(epoch + 1),
            "lr": epoch_lr,
            "loss": float(loss_sum) / num,
            "train_top1": 100.0 * int(correct) / num,
        }
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}")
    return probe.eval(), history


def _standardization(feats: Tensor, chunk_size: int = 65536) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and standard deviation of ``(n, D)`` features, in float64 sums.

    Dimensions that are (nearly) constant get a standard deviation of 1, so that they are
    centred but not blown up.
    """
    total = torch.zeros(feats.shape[1], dtype=torch.float64, device=feats.device)
    total_sq = torch.zeros_like(total)
    for start in range(0, feats.shape[0], chunk_size):
        chunk = feats[start : start + chunk_size].double()
        total += chunk.sum(dim=0)
        total_sq += chunk.square().sum(dim=0)
    mean = total / feats.shape[0]
    std = (total_sq / feats.shape[0] - mean.square()).clamp_min(0.0).sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean.float(), std.float()


@torch.no_grad()
def _accuracy(
    probe: LinearProbe, feats: Tensor, labels: Tensor, chunk_size: int = 8192
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy in percent of ``probe`` on ``(n, D)`` features."""
    device = probe.linear.weight.device
    num_classes = probe.linear.out_features
    hits1 = hits5 = 0
    for start in range(0, feats.shape[0], chunk_size):
        logits = probe(feats[start : start + chunk_size].to(device).float())  # (b, C)
        target = labels[start : start + chunk_size].to(device, torch.long)
        top = logits.topk(min(5, num_classes), dim=1).indices  # (b, 5)
        hits1 += int((top[:, 0] == target).sum())
        hits5 += int((top == target[:, None]).any(dim=1).sum())
    return 100.0 * hits1 / feats.shape[0], 100.0 * hits5 / feats.shape[0]


def _holdout_split(num: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded random split of ``range(num)`` into fit and held-out index tensors."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    num_val = round(num * val_fraction)
    if num_val < 1 or num_val >= num:
        raise ValueError(
            f"cannot hold out {val_fraction:.0%} of {num} train samples and keep both parts "
            "non-empty"
        )
    order = torch.randperm(num, generator=torch.Generator().manual_seed(seed))
    return order[num_val:], order[:num_val]


def _check_probe_inputs(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    num_classes: int,
) -> None:
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    for name, feats, labels in (
        ("train", train_feats, train_labels),
        ("test", test_feats, test_labels),
    ):
        if feats.ndim != 2 or feats.shape[0] == 0 or not feats.is_floating_point():
            raise ValueError(
                f"{name} features must be a non-empty float (n, D) tensor, got "
                f"{feats.dtype} {tuple(feats.shape)}"
            )
        if labels.shape != feats.shape[:1]:
            raise ValueError(
                f"{name} labels must have shape ({feats.shape[0]},), got {tuple(labels.shape)}"
            )
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"{name} labels must be integers, got {labels.dtype}")
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ValueError(
                f"{name} labels must be in [0, {num_classes}), found "
                f"[{int(labels.min())}, {int(labels.max())}]"
            )
    if train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(
            f"train and test feature dims differ: {train_feats.shape[1]} vs {test_feats.shape[1]}"
        )
