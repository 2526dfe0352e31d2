"""patchdino: local-global self-distillation for Vision Transformers.

DINO extended with a patch-level loss between corresponding patches of different augmented
views, found by geometric patch matching (arXiv 2310.18651).
"""

__version__ = "0.1.0"
