"""What ``patchdino segment`` offers on the command line, importable without torch
(:mod:`patchdino.eval.common.options` says why)."""

from __future__ import annotations

SEGMENTATION_EVAL_MODES = ("slide", "resize")
"""How a segmentation probe sees images larger than its input: sliding windows or a resize."""
