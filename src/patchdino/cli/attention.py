"""``patchdino attention``: per-head CLS attention maps of the last block for your own images.

Each image is decoded as in training, its shorter side resized to ``--image-size`` and cropped
at the bottom and right to multiples of the patch size (as DINO's visualisation does); the
figure ``<stem>_attention.png`` shows the image and each head's map over it. With
``--threshold T`` a second figure ``<stem>_mass<T>.png`` shows, per head, the fewest patches
that hold a share ``T`` of the attention (DINO's thresholded maps).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from patchdino.cli.common_options import (
    add_image_size_argument,
    add_network_arguments,
    add_output_argument,
    check_positive,
    resolve_device,
    usage_errors,
)
from patchdino.cli.errors import UsageError
from patchdino.cli.outputs import check_output_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    add_network_arguments(parser, pixels=False)
    add_output_argument(parser, "folder of the figures")
    add_image_size_argument(
        parser, "shorter side of the network input (default: views.global_size)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        help="also draw the patches holding this share of each head's attention (e.g. 0.6)",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from patchdino.data.datasets import BadImageError
    from patchdino.data.datasets.canvas import decode_image
    from patchdino.eval.common.eval_data import Normalise, resize_images, resize_shorter_side
    from patchdino.eval.common.pipeline import load_network
    from patchdino.viz.attention import attention_maps, mass_masks, plot_attention

    check_positive(image_size=args.image_size)
    if args.threshold is not None and not 0 < args.threshold <= 1:
        raise UsageError(f"--threshold must be in (0, 1], got {args.threshold}")
    for image in args.images:
        if not image.is_file():
            what = "is a folder" if image.is_dir() else "does not exist"
            raise UsageError(f"image {image} {what}")
    check_output_folder(args.output)
    device = resolve_device(args.device)
    with usage_errors():
        network = load_network(
            args.weights, device, "imagefolder", args.config, args.checkpoint_key
        )
    backbone = network.backbone.eval()
    patch = backbone.patch_size
    side = args.image_size or network.config.views.global_size
    if side < patch:
        raise UsageError(f"--image-size {side} is smaller than the patch size {patch}")
    normalise = Normalise(network.mean, network.std).to(device)
    args.output.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        try:
            image = decode_image(path, network.channels, None)  # (C, H, W) uint8
        except BadImageError as err:
            raise UsageError(str(err)) from err
        h, w = resize_shorter_side(int(image.shape[-2]), int(image.shape[-1]), side)
        resized = resize_images(image[None], h, w)[:, :, : h - h % patch, : w - w % patch]
        with torch.inference_mode():
            maps = attention_maps(backbone, normalise(resized.to(device))).cpu()
        figure = plot_attention(
            resized, maps, args.output / f"{path.stem}_attention.png", overlay=True
        )
        print(f"{path} -> {figure}")
        if args.threshold is not None:
            masks = mass_masks(maps, args.threshold)
            figure = plot_attention(
                resized,
                masks,
                args.output / f"{path.stem}_mass{args.threshold:g}.png",
                show_mean=False,
                overlay=True,
                cmap="viridis",
                bar_label=f"patches holding {args.threshold:g} of the attention",
                bar_ends=("out", "in"),
            )
            print(f"{path} -> {figure}")
    return 0
