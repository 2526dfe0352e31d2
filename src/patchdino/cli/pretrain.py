"""``patchdino pretrain``: local-global self-distillation pretraining."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from patchdino.cli.errors import UsageError

if TYPE_CHECKING:
    from patchdino.eval.common.stored_weights import StoredWeights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from patchdino.config import Config, packaged_config_names

    parser.add_argument(
        "--config",
        type=Path,
        help="YAML file overriding the defaults, or a packaged config by name: "
        f"{', '.join(packaged_config_names())}",
    )
    parser.add_argument("--data", help="data set folder (sets data.path)")
    parser.add_argument(
        "--output",
        type=Path,
        required=True,
        help="run folder; an existing checkpoint there is resumed",
    )
    defaults = Config()

    def field(key: str, value: object) -> str:
        return f"{key}; default: the config's, else {value}"

    parser.add_argument(
        "--max-steps",
        type=int,
        help=field("total optimiser steps (run.max_steps)", "optim.epochs epochs"),
    )
    parser.add_argument("--epochs", type=int, help=field("optim.epochs", defaults.optim.epochs))
    parser.add_argument(
        "--save-every", type=int, help=field("run.save_every", defaults.run.save_every)
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help=field("images per process (optim.batch_size)", defaults.optim.batch_size),
    )
    parser.add_argument(
        "--device", help=field("auto, cpu, cuda or cuda:N (run.device)", defaults.run.device)
    )
    parser.add_argument(
        "--init-weights",
        metavar="WEIGHTS",
        help="start a new run from these backbone weights (continued pretraining, e.g. on a "
        "new domain): a checkpoint.pt or its run folder (its teacher), a .safetensors export, "
        "timm:NAME, timm:NAME@FILE (DINO's or DINOv2's released files), a timm model folder "
        "or DINO's training checkpoint (then its teacher's head too). The architecture "
        "(model.arch, patch_size, registers) comes from the weights. Unlike resuming, the "
        "optimiser, centre, step and schedules start anew. When --output already holds a "
        "checkpoint, that run resumes and this is ignored",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="any config field, e.g. optim.lr=1e-3 loss.terms.patch.matching=nearest; anywhere "
        "among the options, applied after them in order",
    )


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """Command-line flags as ``key=value`` overrides, applied before the free overrides."""
    flags = {
        "data.path": args.data,
        "run.max_steps": args.max_steps,
        "optim.epochs": args.epochs,
        "run.save_every": args.save_every,
        "optim.batch_size": args.batch_size,
        "run.device": args.device,
    }
    fixed = [f"{key}={value}" for key, value in flags.items() if value is not None]
    if args.data is not None:
        # A JSON string is a valid YAML scalar: quotes, colons or '#' in the path stay text.
        fixed[0] = f"data.path={json.dumps(str(args.data))}"
    return [*fixed, *args.overrides]


ARCHITECTURE_KEYS = ("arch", "patch_size", "registers")
"""The ``model`` fields ``--init-weights`` takes from the weights."""


def architecture_overrides(stored: StoredWeights, overrides: Sequence[str]) -> list[str]:
    """``model.*`` overrides that give a run the architecture of ``stored``
    (:data:`ARCHITECTURE_KEYS`) and its input channels (``data.channels``, unless the command
    line sets them), to apply before the command line's own.

    Raises:
        UsageError: an override of the command line names another architecture than the
            weights hold.
    """
    given = {o.partition("=")[0].strip(): o.partition("=")[2].strip() for o in overrides}
    theirs = stored.config.model
    adopted = []
    for key in ARCHITECTURE_KEYS:
        value = getattr(theirs, key)
        mine = given.get(f"model.{key}")
        # registers null: the arch's own count, which the tensors' fit then checks
        if mine is not None and mine != str(value) and not (key == "registers" and value is None):
            raise UsageError(
                f"model.{key}={mine} contradicts --init-weights {stored.name}, whose {key} is "
                f"{value}; leave model.{key} out"
            )
        adopted.append(f"model.{key}={'null' if value is None else value}")
    if "data.channels" not in given:  # grey images to an RGB network and back, as evaluation
        adopted.append(f"data.channels={stored.in_chans}")
    return adopted


def run(args: argparse.Namespace) -> int:
    from patchdino.cli.outputs import check_output_folder
    from patchdino.config import ConfigError, load_config
    from patchdino.data.datasets import BadImageError
    from patchdino.losses import kernel
    from patchdino.models import backbone
    from patchdino.train.signals import stop_exit_code
    from patchdino.train.trainer import InitialWeights, Trainer, TrainingError

    check_output_folder(args.output)
    checks = [backbone.config_problems, kernel.config_problems]
    flags, overrides = overrides_from_args(args), list(args.overrides)
    init = None
    if args.init_weights is not None:
        from patchdino.eval.common.backbone_loading import read_weights

        stored = read_weights(args.init_weights)
        adopted = architecture_overrides(stored, overrides)
        flags = flags[: len(flags) - len(overrides)] + adopted + overrides
        init = InitialWeights(
            stored.tensors, stored.name, stored.in_chans, stored.sha256, stored.heads
        )
    try:
        config = load_config(args.config, flags, checks=checks)
    except ConfigError as err:
        if init is None:
            raise
        keys = ", ".join(f"model.{key}" for key in ARCHITECTURE_KEYS)
        note = f"({keys} come from --init-weights {init.source})"
        raise ConfigError([*err.problems, note]) from err
    trainer = Trainer(
        config,
        args.output,
        progress=not args.no_progress,
        notes=lambda line: print(line, file=sys.stderr),
        init=init,
    )
    from patchdino.train.distributed import shutdown

    if trainer.ctx.is_main and trainer.ctx.backend is not None:
        print(f"process group: {trainer.ctx.backend}, {trainer.ctx.world_size} process(es)")

    try:
        result = trainer.run()
    except TrainingError as err:
        print(f"patchdino pretrain: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if trainer.ctx.is_main:
            print(
                f"patchdino pretrain: interrupted at once, the current step not saved; "
                f"{trainer.checkpoint_note()}; rerun the same command to resume",
                file=sys.stderr,
            )
        return 130
    except BadImageError as err:  # the data loader raises it in the main process too
        raise UsageError(str(err)) from err
    finally:
        shutdown()
    if trainer.ctx.is_main:
        if result.stopped_by:
            print(
                f"{result.stopped_by} received: saved step {result.step}/{result.total_steps} "
                f"to {result.checkpoint}; rerun the same command to resume from step "
                f"{result.step}",
                file=sys.stderr,
            )
        else:
            print(f"done: {result.step} steps; run folder {args.output}")
    return 0 if not result.stopped_by else stop_exit_code(result.stopped_by)
