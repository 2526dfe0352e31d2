"""What ``patchdino knn`` offers on the command line, importable without torch
(:mod:`patchdino.eval.common.options` says why)."""

from __future__ import annotations

TOP5_CONVENTIONS = ("voted", "dino")
"""How k-NN top-5 accuracy counts a hit. ``voted`` (the default): the true class is among
the five classes with the most votes *and received a vote*, so a class no neighbour voted
for is never a hit and ties among unvoted classes cannot matter. ``dino``: DINO's
``knn_classifier``, which sorts all class scores and counts the true class among the first
``min(5, k)`` even with no vote (ties broken here by the lower class index). The two differ
when fewer than five classes get votes, i.e. at small ``k``."""
