"""Pretraining end to end: artefacts, exact resume, loss and data variants (CPU; one CUDA run)."""

from __future__ import annotations

import math
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from train_fixtures import (
    cli_args,
    losses,
    run_cli,
    single_thread,
    steps,
    tensorboard_scalars,
    tiny_config,
    uninterrupted_run,
    write_image_folder,
)

import patchdino.train.loggers as loggers_module
import patchdino.train.trainer as trainer_module
from patchdino.checkpoint import load_checkpoint
from patchdino.config import load_config
from patchdino.train.metrics import MetricsWriter, read_metrics
from patchdino.train.trainer import Trainer
from patchdino.viz.curves import plot_loss_curves

METRIC_KEYS = {
    "loss",
    "loss_cls",
    "loss_patch",
    "lr",
    "wd",
    "momentum",
    "teacher_temp",
    "matched_patches",
    "images_per_s",
    "nonfinite_skipped",
    "bad_images",
}


pytestmark = pytest.mark.usefixtures("no_loss_plots")


@pytest.fixture(scope="module")
def uninterrupted(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run folder of an uninterrupted 4-step run."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    return uninterrupted_run(data, out, 4)


def test_two_step_run_writes_every_artefact(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trainer_module, "plot_loss_curves", plot_loss_curves)
    config = tiny_config(data, "run.max_steps=2")
    out = tmp_path / "run"
    with single_thread():
        result = Trainer(config, out, progress=False).run()
    assert (result.step, result.total_steps, result.stopped_by) == (2, 2, None)

    # config.yaml records the kind detected from the folder, not "auto"
    assert config.data.kind == "auto"
    detected = replace(config, data=replace(config.data, kind="fashion_mnist"))
    assert load_config(out / "config.yaml") == detected

    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        assert METRIC_KEYS <= set(record), METRIC_KEYS - set(record)
        for key in METRIC_KEYS:
            assert math.isfinite(record[key]), (key, record[key])
        assert record["loss"] == pytest.approx(record["loss_cls"] + record["loss_patch"])
        assert record["matched_patches"] > 0 and record["images_per_s"] > 0

    scalars = tensorboard_scalars(out, "loss")
    assert [s for s, _ in scalars] == [1, 2]
    assert [v for _, v in scalars] == pytest.approx([r["loss"] for r in records])

    with Image.open(out / "loss.png") as image:
        assert image.format == "PNG" and image.width > 100

    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 2 and state["samples_seen"] == 16
    assert state["config"] == config.to_dict()
    assert {"model", "loss", "optimizer"} <= set(state)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def stop_after(monkeypatch: pytest.MonkeyPatch, stop_step: int, name: str = "SIGUSR1") -> None:
    """Send this process ``name`` right after the metrics of ``stop_step`` are written."""

    class SignallingWriter(MetricsWriter):
        def write(self, record: dict[str, Any]) -> None:
            super().write(record)
            if record["step"] == stop_step:
                os.kill(os.getpid(), getattr(signal, name))

    monkeypatch.setattr(loggers_module, "MetricsWriter", SignallingWriter)


@pytest.mark.parametrize("pipeline", ["serial", "ahead"])
def test_stopped_run_resumes_to_the_uninterrupted_losses(
    data: Path,
    uninterrupted: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    pipeline: str,
) -> None:
    """Also with the inputs made one step ahead: the uninterrupted run made them serially."""
    out = tmp_path / "run"
    args = cli_args(data, out, 4, f"run.pipeline={pipeline}")
    with single_thread():
        with monkeypatch.context() as patch:
            stop_after(patch, 2)
            assert run_cli(args) == 143
        assert "SIGUSR1 received: saved step 2/4" in capsys.readouterr().err
        assert load_checkpoint(out / "checkpoint.pt")["step"] == 2
        assert steps(out) == [1, 2]
        assert run_cli(args) == 0

    assert steps(out) == [1, 2, 3, 4]
    assert losses(out) == losses(uninterrupted)
    assert losses(out, "loss_patch") == losses(uninterrupted, "loss_patch")
    assert [s for s, _ in tensorboard_scalars(out, "loss")] == [1, 2, 3, 4]
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 4


def test_extending_max_steps_continues_on_the_longer_schedule(
    data: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    """Schedules span run.max_steps: steps 3-4 follow the 4-step schedule after a 2-step run."""
    out = tmp_path / "run"
    with single_thread():
        assert run_cli(cli_args(data, out, 2)) == 0
        first = losses(out)
        assert run_cli(cli_args(data, out, 4)) == 0
    assert steps(out) == [1, 2, 3, 4]
    assert losses(out)[:2] == first == losses(uninterrupted)[:2]
    for key in ("lr", "wd", "momentum", "teacher_temp"):
        assert losses(out, key)[2:] == losses(uninterrupted, key)[2:], key
    assert all(math.isfinite(v) for v in losses(out))


@pytest.mark.parametrize(
    "overrides",
    [
        ["loss.terms.patch.weight=0"],
        ["loss.terms.patch.matching=nearest", "loss.terms.patch.match_threshold=0.75"],
        ["loss.local_local=true"],
        ["optim.accumulation=2", "optim.batch_size=4"],
        ["model.patch_head=separate", "loss.centre=shared"],
        ["loss.centring=sinkhorn", "model.patch_head=separate"],
        ["loss.terms.masked.weight=1", "loss.terms.koleo.weight=0.1", "loss.terms.patch.weight=0"],
        ["loss.terms.masked.weight=1", "loss.terms.masked.probability=1"],
        ["model.registers=4", "loss.terms.masked.weight=1", "loss.terms.patch.matching=nearest"],
    ],
    ids=[
        "no-patch-loss",
        "nearest",
        "local-local",
        "accumulation",
        "separate-head",
        "sinkhorn",
        "masked-koleo",
        "masked-and-matched",
        "registers",
    ],
)
def test_loss_variants_train(data: Path, tmp_path: Path, overrides: list[str]) -> None:
    out = tmp_path / "run"
    config = tiny_config(data, "run.max_steps=2", *overrides)
    with single_thread():
        Trainer(config, out, progress=False).run()
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["samples_seen"] == 16  # 8 images per optimiser step in every variant
    if not config.loss.patch_loss:
        assert all(r["loss_patch"] == 0 for r in records)
    else:
        assert all(r["loss_patch"] > 0 and r["matched_patches"] > 0 for r in records)
    if config.loss.terms.masked.weight > 0:
        assert all(r["loss_masked"] > 0 for r in records)
        assert "student.backbone.mask_token" in state["model"]
    if config.loss.terms.koleo.weight > 0:
        assert all(math.isfinite(r["loss_koleo"]) for r in records)
    if config.model.registers:
        assert state["model"]["student.backbone.model.reg_token"].shape[1] == 4
    if config.loss.centring == "sinkhorn":  # the EMA centres are not used
        assert all(float(c.abs().sum()) == 0 for c in state["loss"].values())


def test_a_register_backbone_trains_three_steps_and_resumes_exactly(
    data: Path, tmp_path: Path
) -> None:
    """4 register tokens: the matched-patch loss trains, and a run stopped after step 2
    resumes to the uninterrupted run's step 3."""
    overrides = ("model.registers=4", "model.drop_path=0.0")
    whole, split = tmp_path / "whole", tmp_path / "split"
    with single_thread():
        Trainer(tiny_config(data, "run.max_steps=3", *overrides), whole, progress=False).run()
        config = tiny_config(data, "run.max_steps=3", *overrides)
        Trainer(config, split, progress=False).run(until=2)
        Trainer(config, split, progress=False).run()
    records = read_metrics(whole / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(r["loss_patch"] > 0 and r["matched_patches"] > 0 for r in records)
    resumed = read_metrics(split / "metrics.jsonl")
    assert [r["loss"] for r in resumed] == [r["loss"] for r in records]
    state = load_checkpoint(whole / "checkpoint.pt")["model"]
    assert state["teacher.backbone.model.reg_token"].shape == (1, 4, 32)


def test_masked_run_resumes_to_the_uninterrupted_losses(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Masks come from the step's generator: a resumed run draws the same masks again."""
    terms = ("loss.terms.masked.weight=1", "loss.centring=sinkhorn", "loss.terms.koleo.weight=0.1")
    whole = uninterrupted_run(data, tmp_path / "whole", 4, *terms)
    out = tmp_path / "run"
    args = cli_args(data, out, 4, *terms)
    with single_thread():
        with monkeypatch.context() as patch:
            stop_after(patch, 2)
            assert run_cli(args) == 143
        assert run_cli(args) == 0
    assert steps(out) == [1, 2, 3, 4]
    for key in ("loss", "loss_masked", "loss_koleo", "loss_patch"):
        assert losses(out, key) == losses(whole, key), key


def test_image_folder_of_files_trains_without_workers(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "images", per_class=6)
    out = tmp_path / "run"
    config = tiny_config(folder, "run.max_steps=2", "data.canvas=24", "data.num_workers=0")
    with single_thread():
        result = Trainer(config, out, progress=False).run()
    assert result.step == 2
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["bad_images"] == 0 for r in records)
    assert load_checkpoint(out / "checkpoint.pt")["data_kind"] == "imagefolder"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_run_in_bf16_resumes_close_to_the_uninterrupted_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the GPU (bf16 autocast, CUDA generators, GPU views and matching) a run stopped and
    resumed repeats the uninterrupted losses up to the GPU's non-deterministic reductions."""
    cuda = ("run.device=cuda", "run.precision=auto")
    whole = uninterrupted_run(data, tmp_path / "whole", 4, *cuda)
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        stop_after(patch, 2)
        assert run_cli(cli_args(data, out, 4, *cuda)) == 143
    assert run_cli(cli_args(data, out, 4, *cuda)) == 0
    assert steps(out) == [1, 2, 3, 4]
    assert all(math.isfinite(v) and v > 0 for v in losses(whole))
    assert losses(out, "loss_patch")[0] > 0  # the patch loss ran on matched GPU pairs
    for got, expected in zip(losses(out), losses(whole)):
        assert got == pytest.approx(expected, rel=1e-3)
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 4 and state["config"]["run"]["device"] == "cuda"


def test_a_rerun_says_where_it_resumes_and_what_changed_and_keeps_a_history(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    out = tmp_path / "run"
    with single_thread():
        assert run_cli(cli_args(data, out, 2)) == 0
        assert "resuming" not in capsys.readouterr().err  # a fresh start says nothing
        assert run_cli(cli_args(data, out, 3, "optim.lr=0.001")) == 0
    err = capsys.readouterr().err.splitlines()
    assert f"resuming from step 2 of 3 ({out / 'checkpoint.pt'})" in err
    assert (
        "warning: settings changed since step 2: optim.lr 0.0005 -> 0.001, run.max_steps 2 -> 3"
        in err
    )
    history = [json.loads(line) for line in (out / "config_history.jsonl").read_text().splitlines()]
    assert [h["started_at_step"] for h in history] == [0, 2]
    assert history[0]["changed"] == {}
    assert history[1]["changed"]["optim.lr"] == {"was": 0.0005, "now": 0.001}
    assert history[1]["config"]["optim"]["lr"] == 0.001


def test_init_weights_start_a_new_run_from_a_backbone_and_are_ignored_on_resume(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    with single_thread():
        assert run_cli(cli_args(data, first, 2)) == 0
        source = load_checkpoint(first / "checkpoint.pt")["model"]
        capsys.readouterr()
        tiny_steps = ["optim.lr=1e-12", "optim.min_lr=0"]
        args = cli_args(data, second, 1, "--init-weights", str(first), *tiny_steps)
        assert run_cli(args) == 0
        assert f"starting from the backbone of {first / 'checkpoint.pt'}" in capsys.readouterr().err
        trained = load_checkpoint(second / "checkpoint.pt")
        assert trained["step"] == 1  # a new run: its own step count
        differ = 0  # tensors where the source's teacher and student differ
        for name, value in trained["model"].items():  # a 1e-12 step: still the source's
            if name.startswith(("student.backbone.", "teacher.backbone.")):
                own = name.split(".", 1)[1].replace("backbone.", "", 1)
                want = source[f"teacher.backbone.{own}"]  # its teacher, not its student
                assert torch.allclose(value, want, atol=1e-6), name
                differ += not torch.allclose(want, source[f"student.backbone.{own}"], atol=1e-6)
        assert differ > 0
        assert run_cli(cli_args(data, second, 2, "--init-weights", str(first))) == 0
    assert "ignored: the run resumes instead" in capsys.readouterr().err


def test_init_weights_of_another_architecture_are_refused_in_one_line(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = tmp_path / "first"
    with single_thread():
        assert run_cli(cli_args(data, first, 1)) == 0
        capsys.readouterr()
        args = cli_args(data, tmp_path / "other", 1, "--init-weights", str(first))
        assert run_cli([*args, "model.arch=vit_nano"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.arch=vit_nano contradicts --init-weights" in err
    assert "whose arch is vit_pico" in err
