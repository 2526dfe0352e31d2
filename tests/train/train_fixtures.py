"""Tiny data sets and configurations shared by the pretraining tests.

Every run here is CPU-sized: a 2-block, 32-wide ViT on 16 px global and 8 px local views of
28 px images, eight images per step.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import patchdino.train.trainer as trainer_module
from patchdino.cli.main import main
from patchdino.config import Config, load_config
from patchdino.train.metrics import read_metrics

TINY = [
    "model.arch=vit_pico",
    "model.patch_size=4",
    "model.drop_path=0.1",
    "model.out_dim=64",
    "model.patch_out_dim=64",
    "model.hidden_dim=32",
    "model.bottleneck_dim=16",
    "views.global_size=16",
    "views.local_size=8",
    "views.num_local=2",
    "optim.batch_size=8",
    "data.num_workers=0",
    "run.device=cpu",
]
"""Overrides of the tiny configuration used by every pretraining test."""

THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""Subprocesses run single-threaded, like the in-process runs (see :func:`single_thread`)."""


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(">u1").tobytes()


def write_idx_folder(root: Path, num_train: int = 32, seed: int = 0) -> Path:
    """A Fashion-MNIST-like folder of raw IDX files: ``num_train`` random 28 x 28 images."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", num_train), ("t10k", 8)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        (root / f"{prefix}-images-idx3-ubyte").write_bytes(_idx_bytes(images))
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_bytes(labels))
    return root


def image_bytes(seed: int, size: tuple[int, int] = (20, 24), fmt: str = "PNG") -> bytes:
    """An encoded random RGB image of ``size`` (width, height)."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def write_image_folder(root: Path, per_class: int = 8, classes: Sequence[str] = ("a", "b")) -> Path:
    """An ImageFolder of small random PNGs, ``per_class`` in each class sub-folder."""
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / f"img{i:02d}.png").write_bytes(image_bytes(100 * c + i))
    return root


def tiny_config(data: Path, *overrides: str) -> Config:
    """The tiny configuration on the data set folder ``data``."""
    return load_config(None, [*TINY, f"data.path={data}", *overrides])


def cli_args(data: Path, output: Path, max_steps: int, *overrides: str) -> list[str]:
    """``patchdino pretrain`` arguments of a tiny run."""
    return [
        "pretrain",
        "--data",
        str(data),
        "--output",
        str(output),
        "--max-steps",
        str(max_steps),
        "--no-progress",
        *TINY,
        *overrides,
    ]


def run_cli(args: Sequence[str]) -> int:
    """``patchdino`` in this process; returns the exit code."""
    return main(list(args))


def start_cli(args: Sequence[str], cwd: Path, new_session: bool = False) -> subprocess.Popen[str]:
    """``python -m patchdino`` in a subprocess with stderr captured (with ``new_session``, as
    the leader of a process group of its own)."""
    env = {**os.environ, **THREAD_ENV, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "patchdino", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )


def losses(run: Path, key: str = "loss") -> list[Any]:
    """``key`` of every metrics record of the run folder, in file order."""
    return [r[key] for r in read_metrics(run / "metrics.jsonl")]


def steps(run: Path) -> list[int]:
    """The ``step`` of every metrics record of the run folder, in file order."""
    return [int(r["step"]) for r in read_metrics(run / "metrics.jsonl")]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread (as the subprocesses do), so results match bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def skip_loss_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace the loss-curve figure (most of a tiny run's time) by an empty file."""

    def touch(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
        Path(path).touch()
        return Path(path)

    monkeypatch.setattr(trainer_module, "plot_loss_curves", touch)


def tensorboard_scalars(run: Path, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of the TensorBoard scalar ``tag`` of a run folder, as TensorBoard shows."""
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def uninterrupted_run(data: Path, out: Path, max_steps: int, *extra: str) -> Path:
    """Run folder of a tiny single-threaded run of ``max_steps`` steps without figures."""
    with single_thread(), pytest.MonkeyPatch.context() as patch:
        skip_loss_plots(patch)
        assert run_cli(cli_args(data, out, max_steps, *extra)) == 0
    return out


def logged_lines(run: Path) -> int:
    """Lines of the run folder's metrics file so far (0 before it exists)."""
    try:
        return (run / "metrics.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for_steps(
    process: subprocess.Popen[str], run: Path, count: int, checkpoint: bool = True
) -> None:
    """Wait until the subprocess has logged ``count`` steps (and saved a checkpoint)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the run ended (code {process.returncode}) before it could be stopped")
        if logged_lines(run) >= count and (run / "checkpoint.pt").exists() >= checkpoint:
            return
        time.sleep(0.01)
    process.kill()
    pytest.fail(f"no {count} steps within the time limit")
