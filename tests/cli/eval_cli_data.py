"""Tiny data sets and one tiny pretraining run shared by the evaluation command tests.

The run is made once per test session (cached by folder) by running ``patchdino pretrain``
for one step in this process, on a Fashion-MNIST-like IDX folder of 16 x 16 images whose
brightness depends on the class.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import patchdino.train.trainer as trainer_module
from patchdino.cli.main import main

TINY_YAML = """\
model: {arch: vit_pico, patch_size: 4, out_dim: 64, patch_out_dim: 64, hidden_dim: 32,
        bottleneck_dim: 16}
views: {global_size: 16, local_size: 8, num_local: 2}
optim: {batch_size: 8}
data: {num_workers: 0}
run: {device: cpu}
"""
NUM_TRAIN, NUM_TEST, SIDE, NUM_CLASSES = 24, 12, 16, 3


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(">u1").tobytes()


def class_images(labels: np.ndarray, side: int, seed: int, channels: int = 0) -> np.ndarray:
    """Noisy uint8 images whose mean brightness grows with the label.

    Returns:
        ``(N, side, side)`` (``channels`` 0) or ``(N, side, side, channels)`` array.
    """
    rng = np.random.default_rng(seed)
    shape = (len(labels), side, side) + ((channels,) if channels else ())
    noise = rng.integers(0, 70, shape)
    offset = labels.reshape((-1,) + (1,) * (len(shape) - 1)) * 80
    return (noise + offset).astype(np.uint8)


def idx_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images, labels), "test": ...}``: ``(N, 16, 16)`` uint8, ``(N,)`` int64."""
    data = {}
    for split, n, seed in (("train", NUM_TRAIN, 0), ("test", NUM_TEST, 1)):
        labels = np.arange(n) % NUM_CLASSES
        data[split] = (class_images(labels, SIDE, seed), labels)
    return data


def write_idx_folder(root: Path) -> Path:
    """IDX train and t10k files holding :func:`idx_arrays`."""
    root.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in idx_arrays().items():
        prefix = "train" if split == "train" else "t10k"
        (root / f"{prefix}-images-idx3-ubyte").write_bytes(_idx_bytes(images))
        (root / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_bytes(labels.astype(np.uint8)))
    return root


def write_image_folder(root: Path, splits: dict[str, Sequence[str]], per_class: int = 3) -> Path:
    """PNG class folders of RGB images of varied sizes, e.g. ``{"train": ["a", "b"]}``."""
    sizes = [(20, 28), (30, 18), (24, 24)]
    for s, (split, classes) in enumerate(splits.items()):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                h, w = sizes[i % len(sizes)]
                labels = np.array([c])
                array = class_images(labels, max(h, w), 10 * s + i, channels=3)[0][:h, :w]
                Image.fromarray(array).save(folder / f"img{i}.png")
    return root


def write_config(path: Path, extra: str = "") -> Path:
    path.write_text(TINY_YAML + extra)
    return path


_RUNS: dict[Path, Path] = {}


def tiny_run(base: Path) -> Path:
    """Run folder of a one-step tiny pretraining on the IDX folder ``base / "fashion"``.

    Made once per ``base`` (pass ``tmp_path_factory.getbasetemp()`` to share it across test
    modules).
    """
    if base not in _RUNS:
        data = base / "eval-fashion"
        write_idx_folder(data)
        config = write_config(base / "eval-tiny.yaml")
        run = base / "eval-run"
        with pytest.MonkeyPatch.context() as patch:
            # The loss-curve figure is most of a one-step run's time.
            patch.setattr(trainer_module, "plot_loss_curves", _touch)
            code = main(
                ["pretrain", "--config", str(config), "--data", str(data), "--output", str(run),
                 "--max-steps", "1", "--no-progress"]
            )  # fmt: skip
        assert code == 0 and (run / "checkpoint.pt").is_file()
        _RUNS[base] = run
    return _RUNS[base]


def _touch(records: Any, path: str | Path) -> Path:
    Path(path).touch()
    return Path(path)


def run_cli(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``patchdino ARGS`` in this process: exit code, stdout and stderr."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


class _Payload:
    """Unpickling this object would create ``marker`` (it is never allowed to run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def write_unsafe_pickle(path: Path, marker: Path) -> Path:
    """A file that runs code when unpickled without restrictions."""
    with open(path, "wb") as handle:
        pickle.dump({"format": "patchdino-pretrain-v1", "x": _Payload(marker)}, handle, protocol=2)
    return path
