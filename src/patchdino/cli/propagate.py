"""``patchdino propagate``: video object segmentation by label propagation on DAVIS-2017 data.

Reads a DAVIS-2017 folder (``JPEGImages/480p/<seq>/``, ``Annotations/480p/<seq>/``,
``ImageSets/2017/val.txt``), propagates each sequence's first-frame annotation with the frozen
backbone's patch features (DINO's protocol), writes the predicted masks as DAVIS palette PNGs
under ``OUTPUT/<seq>/`` and J, F and J&F means per sequence and overall to
``OUTPUT/results.json``.

With ``--make-videos DIR`` it instead writes the Moving Fashion-MNIST sequences
(:mod:`patchdino.eval.video.moving_fashion`) to ``DIR`` in that layout, ready for ``--data DIR``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from patchdino.cli.common_options import (
    add_batch_arguments,
    add_data_argument,
    add_image_size_argument,
    add_network_arguments,
    add_output_argument,
    resolve_device,
)
from patchdino.cli.errors import UsageError
from patchdino.cli.outputs import check_output_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_argument(parser, "DAVIS-2017 folder", required=False, path=True)
    add_network_arguments(parser, pixels=False, required=False)
    add_output_argument(parser, "folder of the masks and results.json", required=False)
    parser.add_argument("--sequences", nargs="+", metavar="NAME", help="only these sequences")
    parser.add_argument("--split", default="val", help="sequence list ImageSets/2017/SPLIT.txt")
    parser.add_argument("--resolution", default="480p", help="sub-folder of the frames")
    parser.add_argument(
        "--n-last-frames", type=int, default=7, help="previous frames used as context"
    )
    parser.add_argument("--topk", type=int, default=5, help="context patches per target patch")
    parser.add_argument(
        "--size-mask-neighborhood",
        type=int,
        default=12,
        help="radius in patches of the window of context patches (0: whole frame)",
    )
    parser.add_argument("--temperature", type=float, default=0.7, help="affinity temperature")
    add_image_size_argument(
        parser,
        "short side of the model input in pixels (default: the frames' own, e.g. 480 "
        "for 480p DAVIS); sides are rounded to multiples of the patch size",
    )
    add_batch_arguments(parser, 8, "frames encoded at once", workers=False)
    videos = parser.add_argument_group("Moving Fashion-MNIST sequences")
    videos.add_argument(
        "--make-videos",
        type=Path,
        metavar="DIR",
        help="write the Moving Fashion-MNIST sequences to DIR (DAVIS layout) and stop",
    )
    videos.add_argument(
        "--fashion-mnist",
        type=Path,
        metavar="DIR",
        help="folder of the Fashion-MNIST IDX files (default: the system data set folder)",
    )
    videos.add_argument("--num-videos", type=int, default=30, help="number of sequences")
    videos.add_argument("--num-frames", type=int, default=20, help="frames per sequence")
    videos.add_argument("--seed", type=int, default=0, help="seed of the sequences")


def make_videos(args: argparse.Namespace) -> int:
    from patchdino.eval.video.moving_fashion import (
        VideoSettings,
        fashion_test_images,
        write_moving_fashion,
    )

    check_output_folder(args.make_videos, "--make-videos")
    try:
        settings = VideoSettings(
            num_videos=args.num_videos, num_frames=args.num_frames, seed=args.seed
        )
        images = fashion_test_images(args.fashion_mnist)
    except ValueError as err:
        raise UsageError(str(err).strip().splitlines()[0]) from err
    started = time.perf_counter()
    names = write_moving_fashion(images, args.make_videos, settings)
    seconds = time.perf_counter() - started
    print(f"{len(names)} sequences of {settings.num_frames} frames in {args.make_videos} "
          f"({seconds:.1f} s)")  # fmt: skip
    return 0


def _check_options(args: argparse.Namespace) -> None:
    missing = [f"--{name}" for name in ("data", "weights", "output") if not getattr(args, name)]
    if missing:
        raise UsageError(f"{', '.join(missing)} required (or --make-videos DIR)")
    for name in ("topk", "batch_size", "image_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.n_last_frames < 0:
        raise UsageError(f"--n-last-frames must be >= 0, got {args.n_last_frames}")
    if not args.temperature > 0:
        raise UsageError(f"--temperature must be > 0, got {args.temperature}")


def format_table(record: dict[str, object]) -> str:
    """Plain-text table of J, F and J&F means (percent) per sequence and overall."""
    sequences = record["sequences"]
    overall = record["overall"]
    assert isinstance(sequences, dict) and isinstance(overall, dict)

    def cell(value: object) -> str:
        return f"{value:>6.1f}" if isinstance(value, float) else f"{'-':>6}"

    width = max([len("overall"), *(len(name) for name in sequences)])
    lines = [f"{'sequence':<{width}}  {'J&F':>6}  {'J':>6}  {'F':>6}"]
    for name, row in sequences.items():
        lines.append(
            f"{name:<{width}}  {cell(row['JF_mean'])}  {cell(row['J_mean'])}  {cell(row['F_mean'])}"
        )
    lines.append(
        f"{'overall':<{width}}  {cell(overall['JF_mean'])}  {cell(overall['J_mean'])}  "
        f"{cell(overall['F_mean'])}"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.make_videos is not None:
        return make_videos(args)
    _check_options(args)

    from patchdino.cli.common_options import usage_errors
    from patchdino.eval.common.pipeline import load_network
    from patchdino.eval.video.davis import find_sequences
    from patchdino.eval.video.propagation import PropagationSettings
    from patchdino.eval.video.video_segmentation import results_record, segment_sequence

    check_output_folder(args.output)
    device = resolve_device(args.device)
    sequences = find_sequences(
        args.data, args.sequences, split=args.split, resolution=args.resolution
    )
    with usage_errors():
        network = load_network(
            args.weights, device, "imagefolder", args.config, args.checkpoint_key
        )
    backbone, channels, mean, std = network.backbone, network.channels, network.mean, network.std
    settings = PropagationSettings(
        n_last_frames=args.n_last_frames,
        topk=args.topk,
        neighbourhood=args.size_mask_neighborhood,
        temperature=args.temperature,
    )

    started = time.perf_counter()
    output: Path = args.output
    results = [
        segment_sequence(
            backbone,
            sequence,
            patch=backbone.patch_size,
            channels=channels,
            mean=mean,
            std=std,
            settings=settings,
            short_side=args.image_size,
            device=device,
            output=output / sequence.name,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
        for sequence in sequences
    ]
    record = results_record(results)
    record["settings"] = {
        "weights": str(args.weights),
        "checkpoint_key": args.checkpoint_key,
        "data": str(args.data),
        "split": args.split,
        "n_last_frames": settings.n_last_frames,
        "topk": settings.topk,
        "size_mask_neighborhood": settings.neighbourhood,
        "temperature": settings.temperature,
        "image_size": args.image_size,
        "patch_size": backbone.patch_size,
        "normalisation": {"mean": list(mean), "std": list(std)},
        "device": str(device),
    }
    record["seconds"] = round(time.perf_counter() - started, 3)
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    print(format_table(record))
    overall = record["overall"]
    assert isinstance(overall, dict)
    jf = overall["JF_mean"]
    if jf is None or (isinstance(jf, float) and math.isnan(jf)):
        print("note: no frame had ground truth to score")
    print(f"results: {output / 'results.json'}")
    return 0
