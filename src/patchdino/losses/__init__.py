"""Centre, chunked soft cross-entropy, pair plans and the local-global distillation loss."""

from patchdino.losses.centre import CENTRE_MODES, CENTRE_TOKENS, Centre
from patchdino.losses.cross_entropy import soft_cross_entropy
from patchdino.losses.local_global import (
    HeadPair,
    LocalGlobalLoss,
    LocalGlobalOutput,
    ProjectionHead,
)
from patchdino.losses.pairs import CLS_WEIGHTINGS, PairPlan, ViewPair, plan_pairs, view_pairs

__all__ = [
    "CENTRE_MODES",
    "CENTRE_TOKENS",
    "CLS_WEIGHTINGS",
    "Centre",
    "HeadPair",
    "LocalGlobalLoss",
    "LocalGlobalOutput",
    "PairPlan",
    "ProjectionHead",
    "ViewPair",
    "plan_pairs",
    "soft_cross_entropy",
    "view_pairs",
]
