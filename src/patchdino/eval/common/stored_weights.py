"""What reading weights gives, whatever wrote them: one backbone's tensors and their record.

Every reader of weights (:mod:`~patchdino.eval.common.backbone_loading` for patchdino's own
checkpoints and exports, :mod:`~patchdino.eval.common.published_weights` for timm's and the
field's files) returns a :class:`StoredWeights` or raises a :class:`BackboneLoadError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from patchdino.config import Config
from patchdino.errors import InputError


class BackboneLoadError(InputError):
    """The weights cannot be loaded; the one-line message says why and what to do."""


@dataclass(frozen=True)
class StoredWeights:
    """One backbone's tensors as read from a checkpoint, an export or published weights.

    Attributes:
        path: the file read; None for weights that timm fetched itself (``timm:NAME``).
        tensors: backbone state dict (names as in ``Backbone.state_dict()``: timm's names
            under ``model.``).
        config: the configuration of the architecture (for published weights: ``model.arch``,
            ``patch_size`` and ``registers`` of the timm model, ``views.global_size`` its
            native image size, ``data.mean``/``std`` its normalisation); ``data.kind`` is the
            kind of data they were trained on when recorded.
        in_chans: input channels.
        step: training step of the weights, -1 when unknown.
        source: the weights as the user named them (a path or ``timm:NAME[@FILE]``).
        sha256: SHA-256 of the file read, None when no file was read.
        heads: the projection head of the same network, named as in
            :class:`~patchdino.models.head.DINOHead`, when the file holds one that patchdino's
            head can take (DINO's full checkpoints); empty otherwise.
    """

    path: Path | None
    tensors: dict[str, Tensor]
    config: Config
    in_chans: int
    step: int
    source: str = ""
    sha256: str | None = None
    heads: dict[str, Tensor] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """How messages name the weights: the source as given, else the file."""
        return self.source or str(self.path)
