"""Bytes all-reduced per DDP training step besides the gradients: the EMA centre's update.

Two gloo processes run one training step (forward, backward, centre update) with the paper's
head (out_dim 65,536, hidden 2,048, bottleneck 256) and views (2 x 224 + 8 x 96 px, patch 16:
1 + 196 centre rows in the per-position mode) on the tiny ``vit_pico`` backbone: the
backbone's width does not change what the centre sends. Every Python-level
``torch.distributed.all_reduce`` of the step is counted (the centre's); DDP's gradient buckets
(its C++ reducer) are counted by a communication hook, for scale. Usage::

    PYTHONPATH=src python benchmarks/centre_traffic.py --output runs/centre_traffic.json

Run it on another version of the package (``PYTHONPATH=OTHER/src``) to compare.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

PAPER_HEAD = [
    "model.arch=vit_pico",
    "model.patch_size=16",
    "model.out_dim=65536",
    "model.patch_out_dim=65536",
    "model.hidden_dim=2048",
    "model.bottleneck_dim=256",
    "model.drop_path=0",
    "views.global_size=224",
    "views.local_size=96",
    "views.num_local=8",
    "optim.batch_size=2",
    "run.device=cpu",
]
"""The paper's head and views on a tiny backbone, 2 images per process."""
CASES = {
    "position": ["loss.centre=position"],
    "shared": ["loss.centre=shared"],
    "separate_head": ["loss.centre=position", "model.patch_head=separate"],
}


def _worker(rank: int, world: int, folder: str, cases: list[str]) -> None:
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    from patchdino.config import load_config
    from patchdino.train import distributed
    from patchdino.train.build import build_augmentation, build_step
    from patchdino.train.step import forward_backward

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world
    )
    counted = {"centre": 0, "calls": 0, "gradients": 0}
    in_hook = [False]
    original = dist.all_reduce

    def all_reduce(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not in_hook[0]:
            counted["centre"] += tensor.numel() * tensor.element_size()
            counted["calls"] += 1
        return original(tensor, *args, **kwargs)

    def hook(state: Any, bucket: Any) -> Any:
        buffer = bucket.buffer()
        counted["gradients"] += buffer.numel() * buffer.element_size()
        in_hook[0] = True
        try:
            return default_hooks.allreduce_hook(None, bucket)  # type: ignore[arg-type]
        finally:
            in_hook[0] = False

    # DDP checks the hook's annotations as objects; this module's are strings (PEP 563).
    hook.__annotations__ = {"bucket": dist.GradBucket, "return": torch.futures.Future[torch.Tensor]}
    results = {}
    try:
        for name in cases:
            config = load_config(None, [*PAPER_HEAD, *CASES[name]])
            step = build_step(config, 3)
            forward = distributed.wrap_model(step, torch.device("cpu"))
            forward.register_comm_hook(None, hook)  # type: ignore[operator]
            generator = torch.Generator().manual_seed(rank)
            images = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8, generator=generator)
            augment = build_augmentation(config, (0.5,) * 3, (0.25,) * 3)
            batch = augment(images, generator=generator)
            plan = step.plan(batch, generator)
            counted.update(centre=0, calls=0, gradients=0)
            dist.all_reduce = all_reduce
            try:
                forward_backward(forward, batch, plan, 0.04, "fp32")
            finally:
                dist.all_reduce = original
            loss: Any = step.loss
            rows = [c.num_rows for c in (loss.centre, loss.patch_centre) if c is not None]
            results[name] = {**counted, "centre_rows": rows}
    finally:
        dist.destroy_process_group()
    if rank == 0:
        (Path(folder) / "result.json").write_text(json.dumps(results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="JSON file of the counts")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--label", default="", help="what version of patchdino this measures")
    args = parser.parse_args(argv)
    import patchdino
    from patchdino.bench.runner import machine_info

    cases = [c for c in args.cases.split(",") if c]
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(_worker, args=(2, folder, cases), nprocs=2, join=True)
        results = json.loads((Path(folder) / "result.json").read_text())
    record = {
        "label": args.label,
        "package": str(Path(patchdino.__file__).parent),
        "machine": machine_info(torch.device("cpu")),
        "command": shlex.join(["python", *sys.argv]),
        "overrides": PAPER_HEAD,
        "cases": {name: {"overrides": CASES[name], **results[name]} for name in cases},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1) + "\n")
    for name, row in record["cases"].items():
        print(
            f"{name}: centre {row['centre'] / 1e6:.3f} MB in {row['calls']} all-reduce(s), "
            f"gradients {row['gradients'] / 1e6:.1f} MB, centre rows {row['centre_rows']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
