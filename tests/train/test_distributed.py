"""Distributed pretraining: torchrun launches, DDP gradients, rank-0-only output, resume.

Multi-process runs use gloo on the CPU: ``python -m torch.distributed.run`` for the command
line, ``torch.multiprocessing.spawn`` for the gradient-equivalence check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor
from train_fixtures import THREAD_ENV, TINY, steps, tiny_config, write_idx_folder

from patchdino.checkpoint import load_checkpoint
from patchdino.config import Config
from patchdino.data.batch import MultiCropBatch
from patchdino.data.geometry import ViewGeometry
from patchdino.data.loader import batch_indices, resume_position
from patchdino.errors import InputError
from patchdino.train import distributed
from patchdino.train.build import build_augmentation, build_loss, build_model
from patchdino.train.metrics import read_metrics
from patchdino.train.step import PretrainStep
from patchdino.train.trainer import Trainer, has_unused_parameters, step_seed

PER_RANK = 3
"""Samples per rank in the gradient-equivalence check (the single process gets twice this)."""

TEACHER_TEMP = 0.04

EQUIVALENCE_CONFIGS = {
    "shared head": ["model.drop_path=0.0"],
    "separate head": ["model.drop_path=0.0", "model.patch_head=separate", "loss.centre=shared"],
}
"""The shared head (position centre) and a separate patch head (its own centre)."""

UNUSED_HEAD = ["model.drop_path=0.0", "model.patch_head=separate", "loss.terms.patch.weight=0"]
"""A separate patch head that the loss never uses: DDP must search for unused parameters."""


# ------------------------------------------------------------------------------ seeds


def test_step_seeds_differ_across_ranks_steps_and_micro_steps() -> None:
    seeds = {
        step_seed(0, step, micro, rank)
        for rank in range(8)
        for step in range(500)
        for micro in range(4)
    }
    assert len(seeds) == 8 * 500 * 4
    assert step_seed(1, 0, 0, 0) != step_seed(0, 0, 0, 0)


# ------------------------------------------------------------------------ data position


def _consumed(num_samples: int, global_batch: int, micro_steps: int) -> list[set[int]]:
    """Per epoch, the permutation positions consumed by ``micro_steps`` global batches."""
    per_epoch = num_samples // global_batch
    epochs: list[set[int]] = []
    for micro in range(micro_steps):
        epoch, offset = divmod(micro, per_epoch)
        while len(epochs) <= epoch:
            epochs.append(set())
        epochs[epoch].update(range(offset * global_batch, (offset + 1) * global_batch))
    return epochs


@pytest.mark.parametrize(
    ("num_samples", "saved_batch", "new_batch", "saved_micro"),
    [
        (32, 8, 4, 2),  # 2 ranks x 4 -> 1 rank x 4, mid-epoch
        (32, 4, 8, 3),  # 1 -> 2 ranks, an odd number of small batches: round down
        (36, 8, 4, 9),  # different remainders dropped per epoch: epoch 2, position 8
        (36, 4, 8, 8),  # 1 -> 2 ranks after 32 samples: beyond the last batch of 8
        (36, 8, 12, 400),  # 100 epochs later: still the right epoch
        (50, 6, 10, 17),
    ],
)
def test_resume_position_continues_in_the_same_epoch(
    num_samples: int, saved_batch: int, new_batch: int, saved_micro: int
) -> None:
    seen = _consumed(num_samples, saved_batch, saved_micro)
    epoch = len(seen) - 1 if saved_micro % (num_samples // saved_batch) else len(seen)
    done = seen[epoch] if epoch < len(seen) else set()
    position = resume_position(saved_micro * saved_batch, saved_batch, new_batch, num_samples)
    new_epoch, offset = divmod(position, num_samples // new_batch)
    usable = set(range(num_samples // new_batch * new_batch))
    if not usable - done:  # nothing left of this epoch for the new batch size
        assert (new_epoch, offset) == (epoch + 1, 0)
        return
    assert new_epoch == epoch
    remaining = set(range(offset * new_batch, len(usable)))
    assert usable - done <= remaining  # nothing of the epoch is skipped
    assert len(remaining & done) < new_batch  # at most one batch is seen twice


def test_resume_position_without_resizing_is_the_micro_step() -> None:
    for micro in range(0, 40, 3):
        assert resume_position(micro * 8, 8, 8, 36) == micro
    # the same samples per step: 2 ranks x 4 resumed as 1 rank x 8 sees the same batches
    position = resume_position(5 * 8, 8, 8, 36)
    two_ranks = [batch_indices(36, 4, 0, 1, r, 2)[position - 4] for r in range(2)]
    one_rank = batch_indices(36, 8, 0, 1, 0, 1)[position - 4]
    assert torch.equal(torch.cat(two_ranks), one_rank)


def test_resume_position_rejects_batches_larger_than_the_data() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        resume_position(0, 8, 64, 32)


# ----------------------------------------------------------- torchrun on the command line


def _torchrun(nproc: int, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "patchdino",
        *args,
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return subprocess.run(
        command,
        cwd=cwd,
        env={**env, **THREAD_ENV},
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``torchrun --nproc_per_node=2 -m patchdino pretrain``: (data, run folder).

    3 optimiser steps of 2 ranks x 4 images x 2 accumulated micro-steps (DDP's ``no_sync``),
    2 steps per epoch of the 32 images: the run crosses an epoch boundary.
    """
    root = tmp_path_factory.mktemp("torchrun")
    data = write_idx_folder(root / "data")
    output = root / "run"
    args = ["pretrain", "--data", str(data), "--output", str(output), "--max-steps", "3"]
    options = ["--no-progress", *TINY, "optim.batch_size=4", "optim.accumulation=2"]
    done = _torchrun(2, [*args, *options], root)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("done: 3 steps") == 1  # printed by rank 0 only
    assert "process group: gloo, 2 process(es)" in done.stdout
    return data, output


def test_torchrun_two_processes_write_once(two_rank_run: tuple[Path, Path]) -> None:
    _, output = two_rank_run
    assert steps(output) == [1, 2, 3]
    names = sorted(p.name for p in output.iterdir())
    assert names == [
        "checkpoint.pt",
        "checkpoints.json",
        "config.yaml",
        "config_history.jsonl",
        "loss.png",
        "metrics.jsonl",
        "tensorboard",
    ]
    assert len(list((output / "tensorboard").iterdir())) == 1
    state = load_checkpoint(output / "checkpoint.pt")
    assert (state["step"], state["world_size"], state["samples_seen"]) == (3, 2, 3 * 16)
    # the learning rate follows the global batch of 2 x 4 x 2 (linear warm-up over 3 steps)
    lr = read_metrics(output / "metrics.jsonl")[1]["lr"]
    assert lr == pytest.approx(5e-4 * 16 / 256 / 3)


def test_resume_with_another_world_size(two_rank_run: tuple[Path, Path], tmp_path: Path) -> None:
    data, saved = two_rank_run
    output = tmp_path / "run"
    shutil.copytree(saved, output)
    config = tiny_config(data, "optim.batch_size=4", "run.max_steps=5")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = Trainer(config, output, progress=False).run()
    finally:
        torch.set_num_threads(before)
    assert (result.step, result.stopped_by) == (5, None)
    assert steps(output) == [1, 2, 3, 4, 5]
    state = load_checkpoint(output / "checkpoint.pt")
    assert (state["step"], state["world_size"]) == (5, 1)
    # 6 micro-steps of 2 x 4 images (epoch 1, 16 images in) continue as micro-step 8 + 4 of
    # 1 x 4 images; then 2 steps without accumulation
    assert state["samples_seen"] == (8 + 4 + 2) * 4


# ------------------------------------------------ DDP gradients equal full-batch gradients


def _build(config: Config) -> tuple[PretrainStep, MultiCropBatch]:
    """The step module (same weights everywhere) and the views of the full 2 x PER_RANK batch."""
    torch.manual_seed(config.run.seed)
    step_module = PretrainStep(
        build_model(config, 1), build_loss(config), config.loss.terms.patch.matching, 0.5
    ).train()
    images = torch.randint(
        0,
        256,
        (2 * PER_RANK, 1, 28, 28),
        dtype=torch.uint8,
        generator=torch.Generator().manual_seed(0),
    )
    augment = build_augmentation(config, (0.5,), (0.25,))
    return step_module, augment(images, generator=torch.Generator().manual_seed(1))


def _shard(batch: MultiCropBatch, start: int, end: int) -> MultiCropBatch:
    """Samples ``start .. end`` of every view and of its geometry."""

    def geometry(g: ViewGeometry) -> ViewGeometry:
        return ViewGeometry(g.boxes[start:end], g.flipped[start:end], g.size, g.patch_size)

    return MultiCropBatch(
        [v[start:end] for v in batch.global_views],
        [v[start:end] for v in batch.local_views],
        [geometry(g) for g in batch.global_geometry],
        [geometry(g) for g in batch.local_geometry],
    )


def _step(step_module: PretrainStep, forward: torch.nn.Module, batch: MultiCropBatch) -> Tensor:
    out = forward(batch, step_module.plan(batch), TEACHER_TEMP)
    out.loss.backward()
    return out.loss.detach()


def _result(step_module: PretrainStep, loss: float) -> dict[str, Tensor]:
    """Loss, every student gradient and every centre after one step."""
    result = {"loss": torch.tensor(loss)}
    for name, param in step_module.model.student.named_parameters():
        assert param.grad is not None, f"no gradient for {name}"
        result[f"grad.{name}"] = param.grad.clone()
    for name, buffer in step_module.loss.named_buffers():
        result[f"buffer.{name}"] = buffer.clone()
    return result


def _ddp_worker(rank: int, world: int, folder: str, data: str) -> None:
    """One rank: the DDP gradient checks, then DDP steps with an unused patch head."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world
    )
    cpu = torch.device("cpu")
    shard = (rank * PER_RANK, (rank + 1) * PER_RANK)
    try:
        sent: list[int] = []  # bytes of each Python-level all-reduce of a step: the centre's
        original = dist.all_reduce

        def counting(tensor: Tensor, *args: Any, **kwargs: Any) -> Any:
            sent.append(tensor.numel() * tensor.element_size())
            return original(tensor, *args, **kwargs)

        for name, overrides in EQUIVALENCE_CONFIGS.items():
            step_module, full = _build(tiny_config(Path(data), *overrides))
            forward = distributed.wrap_model(step_module, cpu)
            sent.clear()
            dist.all_reduce = counting  # type: ignore[assignment]
            try:
                loss = _step(step_module, forward, _shard(full, *shard))
            finally:
                dist.all_reduce = original
            mean = distributed.mean_across_ranks({"loss": loss.item()}, cpu)
            if rank == 0:
                result = _result(step_module, mean["loss"])
                result["centre_bytes"] = torch.tensor(sent)
                torch.save(result, Path(folder) / f"{name}.pt")
        # Without find_unused_parameters, DDP fails on the second forward pass here.
        config = tiny_config(Path(data), *UNUSED_HEAD)
        step_module, full = _build(config)
        forward = distributed.wrap_model(step_module, cpu, has_unused_parameters(config))
        for _ in range(3):
            _step(step_module, forward, _shard(full, *shard))
        if rank == 0:
            student = step_module.model.student
            unused = [n for n, p in student.named_parameters() if p.grad is None]
            torch.save(unused, Path(folder) / "unused.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the two-rank spawn: ``<config name>.pt`` results and the ``unused`` run."""
    folder = tmp_path_factory.mktemp("ddp")
    data = write_idx_folder(folder / "data")
    mp.spawn(_ddp_worker, args=(2, str(folder), str(data)), nprocs=2, join=True)
    return folder


@pytest.mark.parametrize("name", list(EQUIVALENCE_CONFIGS))
def test_two_ranks_match_one_process_with_the_whole_batch(ddp_results: Path, name: str) -> None:
    config = tiny_config(ddp_results / "data", *EQUIVALENCE_CONFIGS[name])
    ranks = torch.load(ddp_results / f"{name}.pt")
    step_module, full = _build(config)
    expected = _result(step_module, _step(step_module, step_module, full).item())
    half_module, _ = _build(config)
    half = _result(half_module, _step(half_module, half_module, _shard(full, 0, PER_RANK)).item())

    # The centre sends one (R, d + 1) table per centre: feature sums and counts, d = 16 here.
    rows = [c.num_rows for c in (step_module.loss.centre, step_module.loss.patch_centre) if c]
    bottleneck = config.model.bottleneck_dim
    assert ranks.pop("centre_bytes").tolist() == [sum(rows) * (bottleneck + 1) * 4]
    assert ranks.keys() == expected.keys()
    grads = [k for k in expected if k.startswith("grad.")]
    assert any("last_layer" in k for k in grads) and any("backbone" in k for k in grads)
    for key, value in expected.items():
        scale = float(value.abs().max()) or 1.0
        torch.testing.assert_close(ranks[key], value, rtol=1e-4, atol=1e-5 * scale, msg=key)
    # the check is sensitive: one rank's half batch alone gives other gradients and centres
    for key in ("loss", *[k for k in expected if k.startswith("buffer.")]):
        assert not torch.allclose(half[key], expected[key], rtol=1e-3, atol=1e-6), key
    differ = [k for k in grads if not torch.allclose(half[k], expected[k], rtol=1e-2, atol=1e-6)]
    assert len(differ) > len(grads) // 2
    assert all(k in differ for k in grads if "last_layer" in k)  # reduced by DDP's hooks too


def test_unused_patch_head_trains_under_ddp(ddp_results: Path) -> None:
    config = tiny_config(ddp_results / "data", *UNUSED_HEAD)
    assert has_unused_parameters(config)
    assert not has_unused_parameters(tiny_config(ddp_results / "data"))
    unused = torch.load(ddp_results / "unused.pt")
    assert unused and all(name.startswith("patch_head.") for name in unused)


# ------------------------------------------------------------------------------ devices


def test_device_names_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert distributed.resolve_device("cpu", 3) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert distributed.resolve_device("auto").type == expected
    for name in ("gpu", "cuda:x", "cuda:"):
        with pytest.raises(InputError, match="must be auto, cpu, cuda or cuda:N"):
            distributed.resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(InputError, match=f"device {name}: no CUDA device is available"):
            distributed.resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(InputError, match="this machine has 2 CUDA device"):
        distributed.resolve_device("cuda:2")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_each_local_rank_needs_a_gpu_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    count = torch.cuda.device_count()
    assert distributed.resolve_device("cuda", count - 1) == torch.device("cuda", count - 1)
    with pytest.raises(ValueError, match="has no GPU"):
        distributed.resolve_device("cuda", count)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="every process of this node on one GPU"):
        distributed.resolve_device("cuda:0", 1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_one_rank_torchrun_on_cuda_initialises_nccl(tmp_path: Path) -> None:
    """``torchrun --nproc_per_node=1`` on the GPU: NCCL process group, two steps, one writer."""
    data = write_idx_folder(tmp_path / "data")
    output = tmp_path / "run"
    args = ["pretrain", "--data", str(data), "--output", str(output), "--max-steps", "2"]
    done = _torchrun(1, [*args, "--no-progress", *TINY, "run.device=cuda"], tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("done: 2 steps") == 1
    assert "process group: nccl, 1 process(es)" in done.stdout
    assert steps(output) == [1, 2]
