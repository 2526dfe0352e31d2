"""``patchdino bench``: training-step throughput (model-only, input pipeline, end to end)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from patchdino.cli.common_options import add_device_argument
from patchdino.cli.errors import UsageError

DEFAULT_MODES = "cls,patch,reference,pipeline,end2end"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_device_argument(parser)
    parser.add_argument("--arch", help="backbone (model.arch; default vit_small_patch16_224)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step")
    parser.add_argument("--global-size", type=int, help="views.global_size (default 224)")
    parser.add_argument("--local-size", type=int, help="views.local_size (default 96)")
    parser.add_argument("--num-local", type=int, help="views.num_local (default 8)")
    parser.add_argument("--patch-size", type=int, help="model.patch_size (default 16)")
    parser.add_argument("--out-dim", type=int, help="model.out_dim (default 65536)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbones")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "fp32", "bf16"),
        help="auto: bf16 autocast on CUDA, fp32 on CPU",
    )
    parser.add_argument(
        "--modes",
        default=DEFAULT_MODES,
        help=f"comma-separated rows among {DEFAULT_MODES}",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="extra model-step row with its own overrides, e.g. "
        "pairs16:loss.terms.patch.pairs_per_view=16 (repeatable)",
    )
    parser.add_argument("--canvas", type=int, default=320, help="side of the source images")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--seed", type=int, default=0, help="run.seed")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="any config field for every row, e.g. model.patch_head=separate; anywhere "
        "among the options",
    )


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """Command-line flags as ``key=value`` overrides, before the free overrides."""
    flags = {
        "model.arch": args.arch,
        "optim.batch_size": args.batch_size,
        "views.global_size": args.global_size,
        "views.local_size": args.local_size,
        "views.num_local": args.num_local,
        "model.patch_size": args.patch_size,
        "model.out_dim": args.out_dim,
        "run.precision": args.precision,
        "run.compile": "true" if args.compile else None,
        "run.seed": args.seed,
        "run.device": args.device,
    }
    fixed = [f"{key}={value}" for key, value in flags.items() if value is not None]
    return [*fixed, *args.overrides]


def run(args: argparse.Namespace) -> int:
    import torch

    from patchdino.bench import BenchSettings, format_report, make_cases, run_bench, write_json
    from patchdino.bench.cases import parse_modes, parse_variant
    from patchdino.train.distributed import resolve_device

    if args.threads < 0:
        raise UsageError(f"--threads must be >= 0, got {args.threads}")
    modes = parse_modes(args.modes)
    variants = [parse_variant(v) for v in args.variant]
    device = resolve_device(args.device)
    settings = BenchSettings(device, steps=args.steps, warmup=args.warmup, canvas=args.canvas)
    cases = make_cases(modes, overrides_from_args(args), variants)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    arguments = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    try:
        result = run_bench(
            cases,
            settings,
            log=lambda line: print(line, file=sys.stderr, flush=True),
            extra_settings={"arguments": arguments},
        )
    finally:
        torch.set_num_threads(threads)
    print(format_report(result))
    if args.json is not None:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0
