"""DINOv2's KoLeo term: the Kozachenko-Leonenko entropy estimator on CLS embeddings.

For the ``B`` student CLS tokens of one global view, L2-normalised to ``x_1 .. x_B``, each
point's nearest neighbour (largest cosine similarity, itself excluded) is at distance
``rho_i = ||x_i - x_nn(i)||``, and

    L = -1/B sum_i log(rho_i + eps),   eps = 1e-8,

summed over the global views. Minimising it spreads the embeddings over the sphere. As in
DINOv2 it acts on the backbone's CLS tokens (before the head) of each process's own batch
(no cross-process neighbours), and the normalisation and distance use ``eps = 1e-8`` as
there (``F.normalize``, ``PairwiseDistance``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from patchdino.losses.terms.base import LossTerm, TermInputs

EPS = 1e-8
"""Added to norms and distances (DINOv2's value)."""


def koleo(embeddings: Tensor) -> Tensor:
    """KoLeo loss of ``(B, D)`` embeddings (``B >= 2``); a scalar."""
    if embeddings.shape[0] < 2:
        raise ValueError(f"KoLeo needs at least 2 embeddings, got {embeddings.shape[0]}")
    x = F.normalize(embeddings, p=2, dim=-1, eps=EPS)  # (B, D)
    with torch.no_grad():
        similarity = x @ x.T  # (B, B)
        similarity.fill_diagonal_(-2.0)
        nearest = similarity.argmax(dim=1)  # (B,)
    distances = F.pairwise_distance(x, x[nearest], p=2, eps=EPS)  # (B,)
    return -torch.log(distances + EPS).mean()


class KoLeoTerm(LossTerm):
    """KoLeo on the student's CLS tokens, summed over the global views."""

    name = "koleo"

    def forward(self, inputs: TermInputs) -> Tensor:
        """Sum over global views of :func:`koleo` of the student's CLS tokens."""
        views = inputs.student_tokens[: inputs.num_global]
        dtype = torch.promote_types(views[0].dtype, torch.float32)
        return torch.stack([koleo(tokens[:, 0].to(dtype)) for tokens in views]).sum()
