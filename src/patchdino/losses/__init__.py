"""The training loss: loss terms (one per file in ``terms/``), their pair plans and centring."""

from patchdino.losses.centre import CENTRE_MODES, CENTRE_TOKENS, Centre
from patchdino.losses.cross_entropy import soft_cross_entropy
from patchdino.losses.heads import HeadPair, ProjectionHead
from patchdino.losses.local_global import LocalGlobalLoss, LocalGlobalOutput
from patchdino.losses.masks import BlockMasking
from patchdino.losses.pairs import CLS_WEIGHTINGS, PairPlan, ViewPair, plan_pairs, view_pairs
from patchdino.losses.sinkhorn import SinkhornCentring, sinkhorn_log_offsets
from patchdino.losses.terms import TERMS, LossTerm, TermInputs

__all__ = [
    "CENTRE_MODES",
    "CENTRE_TOKENS",
    "CLS_WEIGHTINGS",
    "TERMS",
    "BlockMasking",
    "Centre",
    "HeadPair",
    "LocalGlobalLoss",
    "LocalGlobalOutput",
    "LossTerm",
    "PairPlan",
    "ProjectionHead",
    "SinkhornCentring",
    "TermInputs",
    "ViewPair",
    "plan_pairs",
    "sinkhorn_log_offsets",
    "soft_cross_entropy",
    "view_pairs",
]
