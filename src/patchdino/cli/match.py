"""``patchdino match``: sample the views of one image and show their matched patches.

The image is decoded as the training data sets decode image files (16-bit images included).
Images whose views would mislead are warned about: an aspect ratio far outside the views'
ratios (most views then fall back to the same central crop) and an image so small that the
global views enlarge it many times.

``matches.json`` holds each view's ``name``, ``size``, ``box`` ``[top, left, height, width]``
in source-image pixels (the region resized into the view) and ``flipped`` (mirrored left to
right after resizing), and for each global view ``a`` and other view ``b`` the matched
``patches`` as ``[patch of a, patch of b]``, numbered row-major.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from patchdino.cli.errors import UsageError
from patchdino.cli.outputs import check_output_folder

if TYPE_CHECKING:
    from torch import Tensor

    from patchdino.data.multicrop import MultiCropSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="an image file (used at its own size)")
    parser.add_argument(
        "--output",
        "--out",
        dest="output",
        type=Path,
        required=True,
        help="output folder (views/*.png, matches.json with each view's box as [top, left, "
        "height, width] in image pixels, matches.png); --out is the same",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the view sampling (same seed, same views)"
    )
    parser.add_argument(
        "--mode", default="grid", metavar="grid|nearest", help="grid (the paper's) or nearest"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="nearest mode: largest centre distance, in coarser-patch units",
    )
    parser.add_argument("--patch-size", type=int, default=16, help="side of a patch in view pixels")
    parser.add_argument(
        "--global-size", type=int, default=224, help="side of the two global views in pixels"
    )
    parser.add_argument(
        "--local-size", type=int, default=96, help="side of the local views in pixels"
    )
    parser.add_argument("--locals", type=int, default=8, help="number of local views")
    parser.add_argument(
        "--geometry-only",
        action="store_true",
        help="crop, resize and flip only (no photometric changes)",
    )


GRAYSCALE_MODES = ("1", "L", "LA", "I", "F")
"""PIL modes read as one channel (16-bit ``I;16*`` modes too); the others are read as RGB."""
MAX_UPSAMPLING = 4.0
"""Warn when even a view of the whole image is enlarged more than this many times."""


def read_image(path: Path) -> Tensor:
    """The image at ``path`` as ``(C, H, W)`` uint8, decoded as the training data sets do.

    Grayscale (8- and 16-bit) images give one channel, the others three; 16-bit images are
    mapped to 8 bits as in training (:func:`patchdino.data.datasets.canvas.decode_image`).

    Raises:
        UsageError: a missing path, a folder, or a file that is not a readable image.
    """
    from PIL import Image

    from patchdino.data.datasets import BadImageError
    from patchdino.data.datasets.canvas import DECODE_ERRORS, decode_image

    if path.is_dir():
        raise UsageError(f"image {path} is a folder; give one image file")
    if not path.exists():
        raise UsageError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            mode = image.mode
    except DECODE_ERRORS as err:  # UnidentifiedImageError is an OSError
        raise UsageError(f"cannot read image {path}: {err}") from err
    channels = 1 if mode in GRAYSCALE_MODES or mode.startswith("I;16") else 3
    try:
        return decode_image(path, channels, canvas=None)
    except BadImageError as err:
        raise UsageError(str(err)) from err


def image_warnings(height: int, width: int, spec: MultiCropSpec) -> list[str]:
    """Why the views of a ``height x width`` image would mislead, as one-line warnings.

    Two cases: an aspect ratio so far outside ``spec.ratio`` that no global view fits (each
    then falls back to the same central crop), and an image so small that even a global view
    of all of it is upsampled more than :data:`MAX_UPSAMPLING` times.
    """
    warnings = []
    aspect = max(height, width) / min(height, width)
    limit = max(spec.ratio[1], 1 / spec.ratio[0]) / spec.global_scale[0]
    if aspect > limit:
        shape = "wider than tall" if width > height else "taller than wide"
        warnings.append(
            f"the {width} x {height} image is {aspect:.1f} times {shape}: views with aspect "
            f"ratios in [{spec.ratio[0]:.2f}, {spec.ratio[1]:.2f}] rarely fit in it, and those "
            "that do not all fall back to the same central crop; crop the image closer to square"
        )
    factor = spec.global_size / (height * width) ** 0.5
    if factor > MAX_UPSAMPLING:
        warnings.append(
            f"the {width} x {height} image is small for {spec.global_size} px global views: "
            f"they enlarge it at least {factor:.0f} times and show blurred pixels; give a "
            "larger image or a smaller --global-size"
        )
    return warnings


def _spec_error(err: ValueError) -> UsageError:
    """A view-settings error worded with the command's options."""
    text = str(err)
    for name in ("global_size", "local_size", "patch_size"):
        text = text.replace(name, "--" + name.replace("_", "-"))
    return UsageError(text)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from patchdino.data.multicrop import MultiCropSpec
    from patchdino.matching import MATCH_MODES
    from patchdino.matching.views import match_views
    from patchdino.viz.matches import ViewPicture, plot_matches

    check_output_folder(args.output, "--output")
    if args.mode not in MATCH_MODES:
        raise UsageError(f"unknown mode '{args.mode}' (choose from {', '.join(MATCH_MODES)})")
    try:
        spec = MultiCropSpec(
            global_size=args.global_size,
            local_size=args.local_size,
            num_local=args.locals,
            patch_size=args.patch_size,
            photometric=not args.geometry_only,
        )
    except ValueError as err:
        raise _spec_error(err) from err
    if args.threshold <= 0:
        raise UsageError(f"--threshold must be > 0, got {args.threshold}")
    image = read_image(args.image)  # (C, H, W) uint8
    for warning in image_warnings(int(image.shape[1]), int(image.shape[2]), spec):
        print(f"patchdino match: warning: {warning}", file=sys.stderr)
    matched = match_views(image, spec, args.mode, args.threshold, args.seed)
    names, geometry, pairs = matched.names, matched.geometry, matched.pairs
    pixels = [(v.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for v in matched.views]
    out: Path = args.output
    (out / "views").mkdir(parents=True, exist_ok=True)
    for name, view in zip(names, pixels):
        Image.fromarray(view[:, :, 0] if view.shape[2] == 1 else view).save(
            out / "views" / f"{name}.png"
        )

    record = {
        "image_size": [int(image.shape[1]), int(image.shape[2])],
        "patch_size": args.patch_size,
        "mode": args.mode,
        "views": [
            {
                "name": name,
                "size": g.size,
                "box": [float(x) for x in g.boxes[0].tolist()],
                "flipped": bool(g.flipped[0]),
            }
            for name, g in zip(names, geometry)
        ],
        "pairs": [
            {"a": names[i], "b": names[j], "patches": [list(p) for p in plist]}
            for (i, j), plist in pairs.items()
        ],
    }
    (out / "matches.json").write_text(json.dumps(record, indent=1))
    source = image.permute(1, 2, 0).numpy()  # (H, W, C)
    pictures = [
        ViewPicture(name, view, tuple(g.boxes[0].tolist()), bool(g.flipped[0]), g.patch_size)
        for name, view, g in zip(names, pixels, geometry)
    ]
    figure = plot_matches(
        source,
        pictures,
        pairs,
        out / "matches.png",
        num_global=matched.num_global,
        mode=args.mode,
    )
    total = sum(len(p) for p in pairs.values())
    print(
        f"{len(names)} views, {len(pairs)} view pairs, {total} matched patch pairs "
        f"({args.mode} mode)"
    )
    print(f"views:   {out / 'views'}")
    print(f"matches: {out / 'matches.json'}")
    print(f"figure:  {figure}")
    return 0
