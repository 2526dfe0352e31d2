"""Video object segmentation of DAVIS-layout sequences with a frozen ViT and label propagation.

For each sequence: every frame is resized (aspect kept) so that its short side is about
``short_side`` pixels and both sides are multiples of the patch size, normalised, and encoded
by the backbone; the last layer's patch tokens, L2-normalised, are the features. The first
frame's annotation is propagated through the sequence (:mod:`patchdino.eval.video.propagation`),
each predicted mask is written as a DAVIS palette PNG at the frame's own size, and the frames
with ground truth are scored with J and F (:mod:`patchdino.eval.video.video_metrics`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from patchdino.eval.video.davis import DavisSequence, read_frame, read_mask, write_mask
from patchdino.eval.video.propagation import (
    PropagationSettings,
    labels_to_mask,
    one_hot_labels,
    propagate_sequence,
    sample_mask,
)
from patchdino.eval.video.video_metrics import (
    BOUNDARY_TOLERANCE,
    SequenceScores,
    frame_scores,
    scored_frames,
    summarise,
)
from patchdino.models.backbone import prefix_count


def model_size(height: int, width: int, short_side: int | None, patch: int) -> tuple[int, int]:
    """Input size of a ``height x width`` frame: short side near ``short_side``, aspect kept.

    Each side is rounded to the nearest multiple of ``patch`` (at least one patch).
    ``short_side`` None keeps the frame's own scale.
    """
    scale = 1.0 if short_side is None else short_side / min(height, width)
    return (
        max(patch, round(height * scale / patch) * patch),
        max(patch, round(width * scale / patch) * patch),
    )


def prepare_frame(
    frame: Tensor, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> Tensor:
    """``(C, H, W)`` uint8 frame to the ``(C, h, w)`` float model input (bilinear, normalised)."""
    x = frame.float()[None] / 255
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return ((x - m) / s)[0]


@torch.no_grad()
def patch_features(backbone: nn.Module, images: Tensor) -> Tensor:
    """L2-normalised last-layer patch tokens.

    Args:
        backbone: returns ``(B, P + N, D)`` tokens: CLS, any registers, then patches.
        images: ``(B, C, H, W)`` model inputs.

    Returns:
        ``(B, N, D)`` float32 features.
    """
    tokens = backbone(images)[:, prefix_count(backbone) :].float()  # (B, N, D)
    return F.normalize(tokens, dim=-1)


def sequence_features(
    backbone: nn.Module,
    frames: Sequence[Path],
    channels: int,
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    batch_size: int = 8,
) -> Iterator[Tensor]:
    """Features of each frame, computed ``batch_size`` frames at a time.

    Yields:
        ``(N, D)`` features on ``device``, in frame order.
    """
    for start in range(0, len(frames), batch_size):
        batch = [
            prepare_frame(read_frame(path, channels), size, mean, std)
            for path in frames[start : start + batch_size]
        ]
        yield from patch_features(backbone, torch.stack(batch).to(device))


@dataclass(frozen=True)
class SequenceResult:
    """Outcome of one sequence.

    Attributes:
        name: sequence name.
        scores: per-object J and F (NaN when no frame has ground truth to score).
        num_frames: frames in the sequence.
        input_size: ``(h, w)`` model input size of its frames.
        seconds: wall time.
    """

    name: str
    scores: SequenceScores
    num_frames: int
    input_size: tuple[int, int]
    seconds: float


def segment_sequence(
    backbone: nn.Module,
    sequence: DavisSequence,
    *,
    patch: int,
    channels: int,
    mean: Sequence[float],
    std: Sequence[float],
    settings: PropagationSettings,
    short_side: int | None = None,
    device: torch.device | str = "cpu",
    output: Path | None = None,
    batch_size: int = 8,
    progress: bool = False,
    tolerance: float = BOUNDARY_TOLERANCE,
) -> SequenceResult:
    """Propagate the first annotation of ``sequence``, write the masks, score the frames.

    Args:
        backbone: frozen ViT returning ``(B, 1 + N, D)`` tokens.
        sequence: frames and annotations.
        patch: the backbone's patch size.
        channels: input channels of the backbone (frames are converted to them).
        mean: per-channel normalisation mean.
        std: per-channel normalisation standard deviation.
        settings: propagation hyper-parameters.
        short_side: short side of the model input; None keeps the frames' size.
        device: where features and propagation are computed.
        output: when given, masks are written to ``output/<frame stem>.png`` (the first frame
            gets its annotation).
        batch_size: frames encoded at once.
        progress: show a progress bar.
        tolerance: boundary tolerance of F.

    Returns:
        :class:`SequenceResult`.
    """
    started = time.perf_counter()
    device = torch.device(device)
    annotation = sequence.annotations[0]
    if annotation is None:
        raise ValueError(f"sequence {sequence.name!r} has no annotation of its first frame")
    first = read_mask(annotation).long()  # (H, W)
    height, width = first.shape
    size = model_size(height, width, short_side, patch)
    grid = (size[0] // patch, size[1] // patch)
    objects = [int(i) for i in first.unique().tolist() if i != 0]
    num_labels = int(first.max()) + 1
    first_labels = one_hot_labels(sample_mask(first, grid), num_labels).to(device)
    if output is not None:
        write_mask(output / f"{sequence.frames[0].stem}.png", first)
    features = sequence_features(
        backbone, sequence.frames, channels, size, mean, std, device, batch_size
    )
    scored = set(scored_frames(len(sequence.frames)))
    j_rows: list[Tensor] = []
    f_rows: list[Tensor] = []
    soft_labels = propagate_sequence(features, first_labels, grid, settings)
    bar = tqdm(
        soft_labels, total=len(sequence.frames) - 1, desc=sequence.name, disable=not progress
    )
    for index, labels in enumerate(bar, start=1):
        mask = labels_to_mask(labels, (height, width)).cpu()  # (H, W)
        if output is not None:
            write_mask(output / f"{sequence.frames[index].stem}.png", mask)
        truth_path = sequence.annotations[index]
        if index in scored and truth_path is not None and objects:
            j, f = frame_scores(mask, read_mask(truth_path).long(), objects, tolerance)
            j_rows.append(j)
            f_rows.append(f)
    scores = summarise(objects, j_rows, f_rows)
    seconds = time.perf_counter() - started
    return SequenceResult(sequence.name, scores, len(sequence.frames), size, seconds)


def _percent(value: float) -> float | None:
    """A score in ``[0, 1]`` as a JSON-safe percentage (NaN becomes None, i.e. null)."""
    return None if math.isnan(value) else round(100 * value, 6)


def results_record(results: Sequence[SequenceResult]) -> dict[str, object]:
    """Per-sequence and overall scores, as written to ``results.json``, in percent (as every
    result file of the command line reports its scores; the scores themselves are fractions).

    Overall means are over all objects of all scored sequences (the DAVIS convention);
    ``sequence_mean`` averages the sequences' own means instead.
    """
    sequences: dict[str, object] = {}
    j_all: list[float] = []
    f_all: list[float] = []
    per_sequence: list[float] = []
    for result in results:
        s = result.scores
        sequences[result.name] = {
            "J_mean": _percent(s.j_mean),
            "F_mean": _percent(s.f_mean),
            "JF_mean": _percent(s.jf_mean),
            "objects": {
                str(obj): {"J": _percent(j), "F": _percent(f)}
                for obj, j, f in zip(s.objects, s.j, s.f, strict=True)
            },
            "num_frames": result.num_frames,
            "scored_frames": s.frames,
            "input_size": list(result.input_size),
            "seconds": round(result.seconds, 3),
        }
        if s.frames:
            j_all += list(s.j)
            f_all += list(s.f)
            per_sequence.append(s.jf_mean)
    j_mean = sum(j_all) / len(j_all) if j_all else float("nan")
    f_mean = sum(f_all) / len(f_all) if f_all else float("nan")
    overall = {
        "J_mean": _percent(j_mean),
        "F_mean": _percent(f_mean),
        "JF_mean": _percent((j_mean + f_mean) / 2),
        "sequence_mean_JF": _percent(
            sum(per_sequence) / len(per_sequence) if per_sequence else float("nan")
        ),
        "num_objects": len(j_all),
        "num_sequences": len(per_sequence),
    }
    return {"overall": overall, "sequences": sequences}
