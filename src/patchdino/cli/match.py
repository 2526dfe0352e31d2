"""``patchdino match``: sample the views of one image and show their matched patches."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from patchdino.cli.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="an image file (used at its own size)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", default="grid", help="grid (the paper's) or nearest")
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="nearest mode: largest centre distance, in coarser-patch units",
    )
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--global-size", type=int, default=224)
    parser.add_argument("--local-size", type=int, default=96)
    parser.add_argument("--locals", type=int, default=8, help="number of local views")
    parser.add_argument(
        "--geometry-only",
        action="store_true",
        help="crop, resize and flip only (no photometric changes)",
    )


def _read_image(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UsageError(f"image {path} does not exist")
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("L" if image.mode in ("1", "L", "I;16", "I") else "RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UsageError(f"cannot read image {path}: {err}") from err


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from patchdino.data.multicrop import MultiCropAugmentation, MultiCropSpec, images_to_batch
    from patchdino.matching import MATCH_MODES, match_patches
    from patchdino.viz.matches import ViewPicture, plot_matches

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
        raise UsageError(str(err)) from err
    if args.threshold <= 0:
        raise UsageError(f"--threshold must be > 0, got {args.threshold}")
    image = _read_image(args.image)
    images, sizes = images_to_batch([image])
    generator = torch.Generator().manual_seed(args.seed)
    batch = MultiCropAugmentation(spec)(images, sizes, generator=generator, normalize=False)

    names = [f"global{i + 1}" for i in range(len(batch.global_views))]
    names += [f"local{i + 1}" for i in range(len(batch.local_views))]
    geometry = batch.geometry
    pixels = [(v[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for v in batch.views]
    out: Path = args.out
    (out / "views").mkdir(parents=True, exist_ok=True)
    for name, view in zip(names, pixels):
        Image.fromarray(view[:, :, 0] if view.shape[2] == 1 else view).save(
            out / "views" / f"{name}.png"
        )

    pairs: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i in range(len(batch.global_views)):
        for j in range(len(names)):
            if j != i:
                found = match_patches(geometry[i], geometry[j], args.mode, args.threshold)
                pairs[(i, j)] = found.pairs(0)
    record = {
        "image_size": [int(sizes[0, 0]), int(sizes[0, 1])],
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
    source = np.asarray(image)
    pictures = [
        ViewPicture(name, view, tuple(g.boxes[0].tolist()), bool(g.flipped[0]), g.patch_size)
        for name, view, g in zip(names, pixels, geometry)
    ]
    figure = plot_matches(
        source if source.ndim == 3 else source[:, :, None],
        pictures,
        pairs,
        out / "matches.png",
        num_global=len(batch.global_views),
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
