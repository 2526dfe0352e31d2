"""Geometric patch matching between augmented views."""

from patchdino.matching.grid import match_grid
from patchdino.matching.match import MATCH_MODES, match_patches
from patchdino.matching.nearest import match_nearest
from patchdino.matching.types import PatchMatches

__all__ = ["MATCH_MODES", "PatchMatches", "match_grid", "match_nearest", "match_patches"]
