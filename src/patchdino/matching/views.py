"""Views of one image and their matched patches: what ``patchdino match`` shows, as data."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from patchdino.data.geometry import ViewGeometry
from patchdino.data.multicrop import MultiCropAugmentation, MultiCropSpec, images_to_batch
from patchdino.matching.match import match_patches


@dataclass(frozen=True)
class ViewMatches:
    """Views sampled from one image and the patches they share.

    Attributes:
        names: ``global1, global2, local1, ...``, one per view.
        views: the views, ``(C, S, S)`` float32 in ``[0, 1]`` each (``S`` the global or local
            size), not normalised.
        geometry: for each view its box in the image ``[top, left, height, width]``, flip and
            patch size (each a batch of one).
        pairs: for every global view ``i`` and every other view ``j``, the list of matched
            patch pairs ``(patch in i, patch in j)``, patches numbered row-major.
    """

    names: list[str]
    views: list[Tensor]
    geometry: list[ViewGeometry]
    pairs: dict[tuple[int, int], list[tuple[int, int]]]

    @property
    def num_global(self) -> int:
        """Number of global views (they come first)."""
        return sum(name.startswith("global") for name in self.names)


def match_views(
    image: Tensor,
    spec: MultiCropSpec | None = None,
    mode: str = "grid",
    threshold: float = 0.5,
    seed: int = 0,
) -> ViewMatches:
    """Sample the training views of one image and match the patches of every view pair.

    Args:
        image: ``(C, H, W)`` uint8 (or float in ``[0, 1]``) image, ``C`` = 1 or 3; see
            :func:`patchdino.data.datasets.canvas.decode_image` to read a file as in training.
        spec: the views (sizes, scales, counts, patch size, photometric changes); the training
            defaults when None.
        mode: ``"grid"`` (the paper's matching) or ``"nearest"``.
        threshold: nearest mode: largest centre distance, in coarser-patch units.
        seed: seed of the view sampling.

    Returns:
        The views, their geometry and, for each global view against each other view, the
        matched patch pairs.

    Raises:
        ValueError: an unknown mode or a non-positive threshold.
    """
    from patchdino.matching import MATCH_MODES

    if mode not in MATCH_MODES:
        raise ValueError(f"unknown mode '{mode}' (choose from {', '.join(MATCH_MODES)})")
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    spec = MultiCropSpec() if spec is None else spec
    images, sizes = images_to_batch([image])
    generator = torch.Generator().manual_seed(seed)
    batch = MultiCropAugmentation(spec)(images, sizes, generator=generator, normalize=False)
    names = [f"global{i + 1}" for i in range(len(batch.global_views))]
    names += [f"local{i + 1}" for i in range(len(batch.local_views))]
    geometry = list(batch.geometry)
    pairs: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i in range(len(batch.global_views)):
        for j in range(len(names)):
            if j != i:
                found = match_patches(geometry[i], geometry[j], mode, threshold)
                pairs[(i, j)] = found.pairs(0)
    return ViewMatches(names, [v[0] for v in batch.views], geometry, pairs)
