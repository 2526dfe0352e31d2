"""Time the batched patch matchers on a multi-crop batch.

Each global view is matched against every other view (global-global once), i.e. for 2 globals
and 8 locals 9 + 8 = 17 matcher calls per batch. "Stacked" does the same work in fewer calls:
one per global-global pair plus one per global against all locals concatenated along the batch
axis (3 calls for 2 globals).

Example:
    python benchmarks/bench_matching.py --batch 256 --device cpu
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from patchdino.data.geometry import ViewGeometry
from patchdino.matching import MATCH_MODES, match_patches


def sample_views(
    batch: int, size: int, patch: int, scale: tuple[float, float], generator: torch.Generator
) -> ViewGeometry:
    """RandomResizedCrop-like integer boxes in 500 x 375 px images, flips with p = 0.5."""
    image_h, image_w = 375.0, 500.0
    area = image_h * image_w * torch.empty(batch).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(batch).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)
    w = torch.sqrt(area * log_ratio.exp()).round().clamp(1, image_w)
    h = torch.sqrt(area / log_ratio.exp()).round().clamp(1, image_h)
    top = (torch.rand(batch, generator=generator) * (image_h - h + 1)).floor()
    left = (torch.rand(batch, generator=generator) * (image_w - w + 1)).floor()
    flipped = torch.rand(batch, generator=generator) < 0.5
    return ViewGeometry(torch.stack([top, left, h, w], dim=1), flipped, size, patch)


def concat(views: list[ViewGeometry]) -> ViewGeometry:
    """Views of the same kind concatenated along the batch axis."""
    boxes = torch.cat([v.boxes for v in views])
    flipped = torch.cat([v.flipped for v in views])
    return ViewGeometry(boxes, flipped, views[0].size, views[0].patch_size)


def timings(run: Callable[[], object], repeats: int, device: torch.device) -> list[float]:
    """Wall times of ``repeats`` timed calls of ``run``, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="samples per batch")
    parser.add_argument("--globals", type=int, default=2, help="global views per sample")
    parser.add_argument("--locals", type=int, default=8, help="local views per sample")
    parser.add_argument("--global-size", type=int, default=224)
    parser.add_argument("--local-size", type=int, default=96)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(args.seed)
    globals_ = [
        sample_views(args.batch, args.global_size, args.patch_size, (0.4, 1.0), generator)
        for _ in range(args.globals)
    ]
    locals_ = [
        sample_views(args.batch, args.local_size, args.patch_size, (0.05, 0.4), generator)
        for _ in range(args.locals)
    ]
    views = [v.to(device) for v in globals_ + locals_]
    pairs = [(g, v) for g in range(args.globals) for v in range(g + 1, len(views))]
    stacked_locals = concat(views[args.globals :]) if args.locals else None
    stacked = [(views[g], views[v]) for g, v in pairs if v < args.globals]
    if stacked_locals is not None:
        stacked += [(concat([views[g]] * args.locals), stacked_locals) for g in range(args.globals)]

    print(f"platform: {platform.platform()}; processor: {platform.processor() or 'unknown'}")
    print(f"cpu count: {os.cpu_count()}; torch threads: {torch.get_num_threads()}")
    print(f"torch {torch.__version__}; device: {device}", end="")
    print(f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    print(
        f"batch {args.batch}, {args.globals} x {args.global_size}/{args.patch_size} + "
        f"{args.locals} x {args.local_size}/{args.patch_size} views, "
        f"{len(pairs)} view pairs, median of {args.repeats}"
    )
    for mode in MATCH_MODES:

        def per_pair_run(mode: str = mode) -> None:
            for g, v in pairs:
                match_patches(views[g], views[v], mode)

        def stacked_run(mode: str = mode) -> None:
            for a, b in stacked:
                match_patches(a, b, mode)

        for name, run, calls in (
            ("per pair", per_pair_run, len(pairs)),
            ("stacked", stacked_run, len(stacked)),
        ):
            times = timings(run, args.repeats, device)
            median = statistics.median(times)
            print(
                f"{mode:8s} {name:8s} {calls:3d} calls: median {median * 1e3:8.2f} ms/batch "
                f"({median / calls * 1e3:6.2f} ms/call), min {min(times) * 1e3:8.2f} ms/batch"
            )


if __name__ == "__main__":
    main()
