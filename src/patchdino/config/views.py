"""The ``views`` section: multi-crop views (docs/method.md section 1)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from patchdino.config.checks import interval_problem
from patchdino.config.section import Section

Geometry = Literal["per_sample", "per_batch"]
"""Crop boxes and flips drawn per sample, or once per view for the whole batch."""

PROBABILITIES = {"flip_p": 1, "color_jitter_p": 1, "grayscale_p": 1, "blur_p": 3, "solarize_p": 3}
"""Probability fields of the views and how many values each holds."""


@dataclass
class ViewsConfig(Section):
    """Multi-crop views (docs/method.md section 1).

    :class:`patchdino.data.multicrop.MultiCropSpec` extends these fields with what the
    sampler needs besides; both check them here (:meth:`problems`, :meth:`patch_problems`).
    """

    global_size: int = 224
    """Side of the global views in pixels (a multiple of model.patch_size)."""
    local_size: int = 96
    """Side of the local views in pixels (a multiple of model.patch_size)."""
    num_local: int = 8
    """Local views per image (besides the 2 global views)."""
    global_scale: tuple[float, float] = (0.4, 1.0)
    """Range of the share of the image area a global view covers."""
    local_scale: tuple[float, float] = (0.05, 0.4)
    """Range of the share of the image area a local view covers."""
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    """Range of the aspect ratio (width / height) of the crop boxes."""
    flip_p: float = 0.5
    """Probability of a horizontal flip of each view."""
    photometric: bool = True
    """Apply the photometric changes (colour jitter, grey, blur, solarisation)."""
    color_jitter_p: float = 0.8
    """Probability of colour jitter of each view."""
    grayscale_p: float = 0.2
    """Probability of turning each view grey."""
    blur_p: tuple[float, float, float] = (1.0, 0.1, 0.5)
    """Gaussian blur probability for global-1, global-2 and the local views."""
    solarize_p: tuple[float, float, float] = (0.0, 0.2, 0.0)
    """Solarisation probability for global-1, global-2 and the local views."""
    geometry: Geometry = "per_sample"
    """per_sample: every image draws its own crop boxes and flips | per_batch: one draw per
    view shared by the whole batch (reference)."""

    def rules(self, prefix: str) -> list[str]:
        problems: list[str] = []
        if self.local_size > self.global_size:
            problems.append(
                f"{prefix}local_size {self.local_size} is larger than {prefix}global_size "
                f"{self.global_size}; local views are the small crops, global views the large "
                "ones"
            )
        for name, upper in (("global_scale", 1.0), ("local_scale", 1.0), ("ratio", math.inf)):
            problem = interval_problem(prefix + name, getattr(self, name), upper)
            if problem is not None:
                problems.append(problem)
        if self.num_local < 0:
            problems.append(f"{prefix}num_local must be >= 0, got {self.num_local}")
        for name, count in PROBABILITIES.items():
            value = getattr(self, name)
            values = value if isinstance(value, tuple) else (value,)
            if len(values) != count:
                problems.append(f"{prefix}{name} needs {count} probabilities, got {value}")
            elif not all(0.0 <= v <= 1.0 for v in values):
                problems.append(f"{prefix}{name} must lie in [0, 1], got {value}")
        return problems

    def patch_problems(self, patch_size: int, prefix: str, patch_key: str) -> list[str]:
        """Problems of the view sizes with ViT patches of side ``patch_size``.

        Args:
            patch_size: ViT patch side, which must divide both view sizes.
            prefix: put before each field name in the messages.
            patch_key: name of the patch size in the messages.
        """
        if patch_size < 1:
            return [f"{patch_key} must be positive, got {patch_size}"]
        return [
            f"{prefix}{name} {getattr(self, name)} is not divisible by {patch_key} {patch_size}"
            for name in ("global_size", "local_size")
            if getattr(self, name) < 1 or getattr(self, name) % patch_size
        ]
