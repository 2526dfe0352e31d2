"""Vision Transformer backbones built with timm, returning every output token.

Any timm ViT name with a CLS token works (``vit_tiny_patch16_224``, ``vit_small_patch16_224``,
``vit_small_patch14_dinov2``, ``vit_small_patch14_reg4_dinov2``, ...), with or without register
tokens (Darcet et al. 2024): the output keeps timm's order, CLS first, then the ``R``
registers, then the patch tokens (:attr:`Backbone.num_prefix_tokens` is ``1 + R``). For small
images and fast tests there are custom sizes (:data:`CUSTOM_ARCHS`) and ``"vit_custom"``, whose
``embed_dim``, ``depth`` and ``num_heads`` are given as keyword arguments; ``registers`` adds
register tokens to any of them. All models are built without pretrained weights, without a
classifier, and with ``dynamic_img_size=True`` so that global and local views of different
sizes go through the same network.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from patchdino.config import Config
from patchdino.config.checks import registers_problem

CUSTOM_ARCHS: dict[str, dict[str, int]] = {
    "vit_pico": {"embed_dim": 32, "depth": 2, "num_heads": 2},
    "vit_nano": {"embed_dim": 64, "depth": 4, "num_heads": 4},
    "vit_micro": {"embed_dim": 128, "depth": 6, "num_heads": 4},
}
"""Small ViTs for 28-32 px images and tests; ``patch_size`` defaults to 4 for these."""

_CUSTOM_KEYS = ("embed_dim", "depth", "num_heads")


class Backbone(nn.Module):
    """A timm Vision Transformer that returns all tokens after the final norm, CLS first.

    Args:
        model: a timm ``VisionTransformer`` with a CLS token and any number ``R`` of register
            tokens (``reg_tokens``).
        mask_token: add a learnt ``(D,)`` mask token (zeros at start, as in DINOv2) that
            replaces the embeddings of masked patches (:meth:`forward` with ``mask``).

    Attributes:
        mask_token: ``(1, 1, D)`` parameter, or None.
        num_prefix_tokens: ``P = 1 + R``, the tokens before the first patch token.
        num_registers: ``R``.

    Raises:
        ValueError: if the model has no CLS token.
    """

    def __init__(self, model: VisionTransformer, mask_token: bool = False) -> None:
        super().__init__()
        if getattr(model, "cls_token", None) is None:
            raise ValueError("the backbone needs a CLS token (class_token=True)")
        self.model = model
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        self.num_registers = self.num_prefix_tokens - 1
        self.embed_dim = int(model.embed_dim)
        self.mask_token: nn.Parameter | None = (
            nn.Parameter(torch.zeros(1, 1, self.embed_dim)) if mask_token else None
        )
        patch = model.patch_embed.patch_size
        self.patch_size = int(patch[0]) if isinstance(patch, tuple) else int(patch)

    @property
    def num_heads(self) -> int:
        """Attention heads of the last block."""
        last: Any = self.model.blocks[-1]
        return int(last.attn.num_heads)

    def patch_tokens(self, tokens: Tensor) -> Tensor:
        """``(B, P + N, D)`` output tokens to the ``(B, N, D)`` patch tokens (a view)."""
        return tokens[:, self.num_prefix_tokens :]

    def without_registers(self, tokens: Tensor) -> Tensor:
        """``(B, P + N, D)`` output tokens to ``(B, 1 + N, D)``: CLS, then the patch tokens.

        What the heads, the loss and patch matching see: registers are never matched nor
        distilled. Without registers ``tokens`` itself is returned (no copy).
        """
        if self.num_registers == 0:
            return tokens
        return torch.cat([tokens[:, :1], self.patch_tokens(tokens)], dim=1)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward to save memory."""
        self.model.set_grad_checkpointing(enable)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """All output tokens.

        Args:
            x: ``(B, C, H, W)`` images; ``H`` and ``W`` multiples of the patch size.
            mask: ``(B, N)`` bool, True for patches whose embedding the mask token replaces
                (before the position embedding, as in iBOT); None masks nothing.

        Returns:
            ``(B, P + N, D)`` tokens after the final norm in timm's order: CLS, the ``R``
            register tokens, then the ``N = (H / p) * (W / p)`` patch tokens in row-major
            order (``P = 1 + R``).
        """
        self._check_input(x)
        if mask is None:
            return self.model.forward_features(x)  # (B, P + N, D)
        if self.mask_token is None:
            raise ValueError("this backbone has no mask token: create it with mask_token=True")
        token = self.mask_token

        def fill(module: nn.Module, inputs: Any, embedded: Tensor) -> Tensor:
            # (B, h, w, D) with dynamic image sizes, else (B, N, D)
            hidden = mask.reshape(embedded.shape[:-1])[..., None]
            return torch.where(hidden, token.to(embedded.dtype).squeeze(0), embedded)

        handle = self.model.patch_embed.register_forward_hook(fill)
        try:
            return self.model.forward_features(x)  # (B, P + N, D)
        finally:
            handle.remove()

    def get_last_selfattention(self, x: Tensor) -> Tensor:
        """Attention weights of the last block, for attention-map figures.

        Args:
            x: ``(B, C, H, W)`` images.

        Returns:
            ``(B, heads, P + N, P + N)`` softmax attention of the last block, tokens in the
            order of :meth:`forward`; row 0 is the CLS query, columns ``P:`` the patches.
        """
        tokens = self._embed(x)
        for block in self.model.blocks[:-1]:
            tokens = block(tokens)
        last: Any = self.model.blocks[-1]
        attn: Any = last.attn
        if not hasattr(attn, "qkv") or not hasattr(attn, "head_dim"):
            raise ValueError("get_last_selfattention needs a timm Attention block with a qkv layer")
        b, n, _ = tokens.shape
        qkv = attn.qkv(last.norm1(tokens))  # (B, P + N, 3 * heads * hd)
        qkv = qkv.reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])  # (B, heads, P + N, hd)
        scores = (q * attn.scale) @ k.transpose(-2, -1)  # (B, heads, P + N, P + N)
        return scores.softmax(dim=-1)

    def get_intermediate_layers(self, x: Tensor, n: int = 1) -> list[Tensor]:
        """Outputs of the last ``n`` blocks, each passed through the final norm.

        Args:
            x: ``(B, C, H, W)`` images.
            n: number of last blocks.

        Returns:
            ``n`` tensors ``(B, P + N, D)`` (order of :meth:`forward`), earliest block first.
        """
        depth = len(self.model.blocks)
        if not 1 <= n <= depth:
            raise ValueError(f"n must be between 1 and the depth {depth}, got {n}")
        tokens = self._embed(x)
        outputs = []
        for index, block in enumerate(self.model.blocks):  # (B, P + N, D) each
            tokens = block(tokens)
            if index >= depth - n:
                outputs.append(self.model.norm(tokens))
        return outputs

    def get_intermediate_cls(self, x: Tensor, n: int = 1) -> list[Tensor]:
        """CLS tokens of the last ``n`` blocks (after the final norm), for linear probes.

        Returns:
            ``n`` tensors ``(B, D)``, earliest block first.
        """
        return [tokens[:, 0] for tokens in self.get_intermediate_layers(x, n)]

    def _embed(self, x: Tensor) -> Tensor:
        """Patch embedding, prefix tokens and position embedding: ``(B, P + N, D)``."""
        self._check_input(x)
        m = self.model
        return m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}"
            )


def prefix_count(backbone: nn.Module) -> int:
    """Tokens before the first patch token in ``backbone``'s output: a :class:`Backbone`'s
    (or timm model's) ``num_prefix_tokens``, CLS plus registers; 1 for a module that does not
    say (CLS only)."""
    return int(getattr(backbone, "num_prefix_tokens", 1))


def arch_problem(arch: str) -> str | None:
    """Why ``arch`` names no backbone this module can build, or None when it does."""
    if arch in CUSTOM_ARCHS or arch == "vit_custom" or arch in timm.list_models("vit_*"):
        return None
    known = ", ".join([*CUSTOM_ARCHS, "vit_custom"])
    return (
        f"unknown backbone {arch!r}: use a timm ViT name such as 'vit_small_patch16_224' "
        f"or one of {known}"
    )


def config_problems(config: Config) -> list[str]:
    """Problems of ``model.arch`` for :func:`~patchdino.config.load_config`'s ``checks``."""
    problem = arch_problem(config.model.arch)
    if problem is None:
        return []
    names = [*CUSTOM_ARCHS, *timm.list_models("vit_*")]
    close = difflib.get_close_matches(config.model.arch, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return [f"model.arch: {problem}{hint}"]


def state_dict_misfit(expected: Mapping[str, Tensor], tensors: Mapping[str, Tensor]) -> str | None:
    """Why ``tensors`` do not fit a module whose state dict is ``expected``: the first tensor
    missing, of another shape, or in excess; None when they fit."""
    for name, want in expected.items():
        have = tensors.get(name)
        if have is None:
            return f"it has no tensor {name}"
        if tuple(have.shape) != tuple(want.shape):
            return (
                f"tensor {name} is {tuple(have.shape)} in the weights but {tuple(want.shape)} "
                "in the model"
            )
    extra = [name for name in tensors if name not in expected]
    if extra:
        return f"tensor {extra[0]} is not part of it ({len(extra)} extra tensors)"
    return None


def register_kwargs(registers: int | None) -> dict[str, Any]:
    """timm ``VisionTransformer`` arguments for ``registers`` register tokens: ``reg_tokens``
    and, as in DINOv2's register models, no position embedding for the prefix tokens
    (``no_embed_class``); none for None (the arch's own)."""
    problem = registers_problem("registers", registers)
    if problem is not None:
        raise ValueError(problem)
    if registers is None:
        return {}
    return {"reg_tokens": registers, **({"no_embed_class": True} if registers else {})}


def fit_to_backbone(backbone: Backbone, tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``tensors`` (names of ``Backbone.state_dict()``) with the timm model's ones passed
    through timm's ``checkpoint_filter_fn`` for ``backbone``: a position embedding (or patch
    embedding) of another grid is resampled to the backbone's; anything else is unchanged."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    prefix = "model."
    inner = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    fitted = checkpoint_filter_fn(inner, backbone.model) if inner else {}
    rest = {k: v for k, v in tensors.items() if not k.startswith(prefix)}
    return {**rest, **{f"{prefix}{k}": v for k, v in fitted.items()}}


def create_backbone(
    arch: str,
    patch_size: int | None = None,
    img_size: int = 224,
    in_chans: int = 3,
    drop_path: float = 0.0,
    mask_token: bool = False,
    registers: int | None = None,
    **custom: Any,
) -> Backbone:
    """Build a randomly initialised ViT backbone.

    Args:
        arch: a timm ViT name, a name in :data:`CUSTOM_ARCHS`, or ``"vit_custom"``.
        patch_size: patch side in pixels; None keeps the timm default (4 for custom sizes).
        img_size: image side the position embedding is made for; other sizes are interpolated.
        in_chans: input channels (1 for grayscale).
        drop_path: stochastic depth rate.
        mask_token: give the backbone a learnt mask token (masked-patch pretraining).
        registers: register tokens ``R`` (timm's ``reg_tokens``); None keeps the arch's own
            (4 for ``*_reg4_*`` names, else 0). As in DINOv2's register models, registers get
            no position embedding (timm's ``no_embed_class``).
        **custom: for ``"vit_custom"``, ``embed_dim``, ``depth`` and ``num_heads`` (required)
            and any other ``VisionTransformer`` argument (e.g. ``mlp_ratio``); for the other
            names, extra arguments passed to the timm constructor.

    Returns:
        The :class:`Backbone`.

    Raises:
        ValueError: for an unknown name, missing custom sizes, or a model without a CLS token.
    """
    common: dict[str, Any] = {
        "img_size": img_size,
        "in_chans": in_chans,
        "num_classes": 0,
        "global_pool": "token",
        "dynamic_img_size": True,
        "drop_path_rate": drop_path,
    }
    common.update(register_kwargs(registers))
    if arch in CUSTOM_ARCHS or arch == "vit_custom":
        sizes: dict[str, Any] = dict(CUSTOM_ARCHS.get(arch, {}))
        sizes.update({k: custom.pop(k) for k in _CUSTOM_KEYS if k in custom})
        missing = [k for k in _CUSTOM_KEYS if k not in sizes]
        if missing:
            raise ValueError(f"arch 'vit_custom' needs {', '.join(missing)} as keyword arguments")
        model = VisionTransformer(
            patch_size=4 if patch_size is None else patch_size, **sizes, **common, **custom
        )
        return Backbone(model, mask_token)
    problem = arch_problem(arch)
    if problem is not None:
        raise ValueError(problem)
    if patch_size is not None:
        common["patch_size"] = patch_size
    created = timm.create_model(arch, pretrained=False, **common, **custom)
    if not isinstance(created, VisionTransformer):
        raise ValueError(f"{arch!r} is not a plain timm VisionTransformer")
    return Backbone(created, mask_token)
