"""What the checkpoint checksum costs: SHA-256 of a checkpoint, and saves and loads with it.

The state is the size of a ViT-S/16 pretraining checkpoint with the DINO head at out_dim
65,536: student and teacher (about 43 M parameters each) and AdamW's two moments of the
student, about 173 M float32 numbers (0.64 GiB). Usage::

    PYTHONPATH=src python benchmarks/checkpoint_cost.py --folder /tmp/ckpt_cost
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from patchdino.checkpoint import file_sha256, load_checkpoint, save_checkpoint


def seconds(run: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None, help="where to write (a temp dir)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(dir=args.folder))
    state = {
        "model": {f"w{i}": torch.randn(1_000_000) for i in range(87)},
        "optimizer": {f"m{i}": torch.randn(1_000_000) for i in range(86)},
    }

    def plain() -> None:
        with (folder / "plain.pt").open("wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())

    def atomic_only() -> None:
        """A new temporary file, fsync, rename over the old one: the save without a checksum
        and without kept copies."""
        fd, name = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(name, folder / "atomic.pt")

    path = folder / "checkpoint.pt"
    steps = iter(range(1_000_000))
    rows = {
        "torch.save + fsync": seconds(plain, args.repeats),
        "atomic rename, no SHA-256, none kept": seconds(atomic_only, args.repeats),
        "save_checkpoint (SHA-256, keep=2)": seconds(
            lambda: save_checkpoint(state, path, step=next(steps), keep=2), args.repeats
        ),
        "SHA-256 of the file": seconds(lambda: file_sha256(path), args.repeats),
        "torch.load": seconds(
            lambda: torch.load(folder / "plain.pt", weights_only=True), args.repeats
        ),
        "load_checkpoint (verified)": seconds(lambda: load_checkpoint(path), args.repeats),
    }
    size = path.stat().st_size
    print(f"{platform.platform()}; {os.cpu_count()} CPUs; torch {torch.__version__}")
    print(f"checkpoint {size / 2**30:.2f} GiB in {folder}; {args.repeats} repeats each")
    for name, times in rows.items():
        print(f"{name:36s} median {statistics.median(times):5.2f} s  min {min(times):5.2f} s")
    for file in folder.iterdir():
        file.unlink()
    folder.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
