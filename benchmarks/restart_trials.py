"""Kill one rank of a run under ``torchrun --max-restarts``; does it recover?

Each trial starts ``torchrun --nnodes 1 --nproc_per_node 2 --max-restarts 1`` (gloo on the
CPU; ``--device cuda --nproc N``: NCCL, one GPU per process) with the c10d
rendezvous on a free local port, a tiny ViT on generated Fashion-MNIST-like IDX files, and
``--save-every 5``; at a kill point it sends SIGKILL to the last local rank's worker. Kill
points:

- ``step:N``: once the run has logged step ``N`` (before the first checkpoint for ``N < 5``);
- ``save``: while a checkpoint is being written (its temporary file exists).

A trial *recovers* when torchrun exits 0 and every step 1..total is logged once; it recovers
*exactly* when, moreover, the logged
losses of every step equal those of an uninterrupted two-process run, and the final
checkpoint's teacher weights equal the uninterrupted run's bit for bit. Afterwards no process
of the trial may be left alive.

Usage (CPU; about a minute per trial on two cores)::

    PYTHONPATH=src python benchmarks/restart_trials.py --trials 20 --json trials.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.arch=vit_pico",
    "model.patch_size=4",
    "model.out_dim=64",
    "model.patch_out_dim=64",
    "model.hidden_dim=32",
    "model.bottleneck_dim=16",
    "views.global_size=16",
    "views.local_size=8",
    "views.num_local=2",
    "optim.batch_size=4",
    "data.num_workers=0",
]
"""The tiny configuration of every trial (``run.device`` is added)."""


def write_idx(root: Path, num_train: int = 64) -> Path:
    """Fashion-MNIST-like raw IDX files of random 28 x 28 images."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", num_train), ("t10k", 8)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        header = np.array([2051, n, 28, 28], dtype=">i4").tobytes()
        (root / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        header = np.array([2049, n], dtype=">i4").tobytes()
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(header + labels.tobytes())
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def logged(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def local_rank(pid: int) -> int | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return None
    for entry in environ:
        if entry.startswith(b"LOCAL_RANK="):
            return int(entry.split(b"=", 1)[1])
    return None


def torchrun(data: Path, run: Path, total: int, device: str = "cpu", nproc: int = 2) -> list[str]:
    """The trial's command: ``nproc`` processes on ``device`` (gloo on the CPU, NCCL on CUDA:
    one GPU per process)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        str(nproc),
        "--max-restarts",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{free_port()}",
        "-m",
        "patchdino",
        "pretrain",
        "--data",
        str(data),
        "--output",
        str(run),
        "--max-steps",
        str(total),
        "--save-every",
        "5",
        "--no-progress",
        *TINY,
        f"run.device={device}",
    ]


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    paths = [str(ROOT / "src"), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(paths))
    return env


def teacher(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    return {k: v for k, v in state["model"].items() if k.startswith("teacher")}


def trial(
    data: Path,
    run: Path,
    total: int,
    kill: str,
    log: Path,
    limit: float = 240.0,
    device: str = "cpu",
    nproc: int = 2,
) -> dict[str, Any]:
    """One run, killed at ``kill`` (``step:N``, ``save`` or ``none``); a run still going
    after ``limit`` seconds (a hung restart) is killed and reported as ``timeout``. The
    process of the last local rank is the one killed."""
    started = time.time()
    with log.open("w") as out:
        process = subprocess.Popen(
            torchrun(data, run, total, device, nproc),
            cwd=run.parent,
            env=environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        killed = False
        if kill != "none":
            wanted = int(kill.split(":")[1]) if kill.startswith("step:") else None
            while process.poll() is None and time.time() - started < limit:
                records = logged(run)
                if wanted is not None and records and records[-1]["step"] >= wanted:
                    break
                if wanted is None and any(run.glob(".checkpoint.pt.*.tmp")):
                    break
                time.sleep(0.005)
            victims = [c for c in children(process.pid) if local_rank(c) == nproc - 1]
            if victims:
                os.kill(victims[0], signal.SIGKILL)
                killed = True
        try:
            code: int | str = process.wait(timeout=max(1.0, limit - (time.time() - started)))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = "timeout"
    time.sleep(1.0)
    left = subprocess.run(["pgrep", "-s", str(process.pid)], capture_output=True, text=True)
    return {
        "kill": kill,
        "killed": killed,
        "returncode": code,
        "seconds": round(time.time() - started, 1),
        "orphans": left.stdout.split(),
        "steps": [r["step"] for r in logged(run)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps per run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    parser.add_argument("--limit", type=float, default=240.0, help="seconds per trial")
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL)")
    parser.add_argument("--nproc", type=int, default=2, help="processes (GPUs with cuda)")
    parser.add_argument("--work", type=Path, default=Path("runs/restart_trials"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work.resolve()
    data = write_idx(work / "data")
    reference_run = work / "uninterrupted" / "run"
    reference_run.parent.mkdir(parents=True, exist_ok=True)
    options = {"device": args.device, "nproc": args.nproc}
    log = reference_run.parent / "log.txt"
    reference = trial(data, reference_run, args.steps, "none", log, args.limit, **options)
    if reference["returncode"] != 0:
        print(f"the uninterrupted run failed: {reference}", file=sys.stderr)
        return 1
    want_losses = [r["loss"] for r in logged(reference_run)]
    want_teacher = teacher(reference_run)
    rng = random.Random(args.seed)
    kills = ["step:2", "save"] + [f"step:{rng.randint(1, args.steps - 2)}" for _ in range(18)]
    results = []
    for number in range(args.trials):
        kill = kills[number % len(kills)]
        run = work / f"trial_{number:02d}" / "run"
        run.parent.mkdir(parents=True, exist_ok=True)
        result = trial(data, run, args.steps, kill, run.parent / "log.txt", args.limit, **options)
        recovered = result["returncode"] == 0 and result["steps"] == list(range(1, args.steps + 1))
        exact = (
            recovered
            and [r["loss"] for r in logged(run)] == want_losses
            and all(torch.equal(v, want_teacher[k]) for k, v in teacher(run).items())
        )
        result.update(recovered=recovered, exact=exact, log=str(run.parent / "log.txt"))
        results.append(result)
        print(json.dumps(result), flush=True)
    summary = {
        "trials": len(results),
        "recovered": sum(r["recovered"] for r in results),
        "exact": sum(r["exact"] for r in results),
        "device": args.device,
        "nproc": args.nproc,
        "killed": sum(r["killed"] for r in results),
        "orphans": sum(bool(r["orphans"]) for r in results),
        "torch": torch.__version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "results": results,
    }
    print(f"{summary['exact']} of {summary['trials']} trials recovered exactly")
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0 if summary["exact"] == summary["trials"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
