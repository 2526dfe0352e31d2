"""The pretraining loop: data, views, matching, loss, optimisation, logging, checkpoints.

Run folder (written by the main process only):

- ``config.yaml``: the resolved configuration;
- ``metrics.jsonl``: one JSON object per optimiser step (``step`` is 1-based);
- ``tensorboard/``: the same scalars as TensorBoard events;
- with ``run.loggers`` naming wandb or mlflow: ``trackers.json`` (their run ids), ``wandb/``
  and, without ``MLFLOW_TRACKING_URI``, ``mlruns/`` (:mod:`patchdino.train.loggers`);
- ``loss.png``: loss and learning-rate curves;
- ``checkpoint.pt``: everything needed to continue, written atomically every
  ``run.save_every`` steps, at the end, and on SIGTERM / SIGUSR1 / a first Ctrl-C.

Rerunning with the same output folder resumes from ``checkpoint.pt``. Randomness is a pure
function of ``(seed, step, rank)`` and the data order of ``(seed, epoch)``, so a resumed run
repeats the uninterrupted run's steps exactly.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from patchdino.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from patchdino.config import Config, flatten_tree
from patchdino.data.batch import MultiCropBatch
from patchdino.data.datasets import normalisation
from patchdino.data.loader import BatchStream, CanvasBatch, resume_position
from patchdino.data.workers import worker_failure
from patchdino.error_text import first_line
from patchdino.errors import InputError
from patchdino.losses import PairPlan
from patchdino.losses.centre import CentreUpdate, apply_updates
from patchdino.models.backbone import fit_to_backbone, state_dict_misfit
from patchdino.train import distributed
from patchdino.train.ahead import Ahead, makes_ahead
from patchdino.train.build import (
    build_augmentation,
    build_step,
    data_kind,
    open_dataset,
)
from patchdino.train.loggers import open_loggers, require_logger_packages
from patchdino.train.metrics import read_metrics
from patchdino.train.optim import build_optimizer
from patchdino.train.schedules import Schedules, ScheduleValues
from patchdino.train.signals import HANDLED_SIGNALS, WORKER_EXIT, StopRequest, deferred_signal
from patchdino.train.step import forward_backward, optimiser_step
from patchdino.train.threads import FIRST_INTERVAL_S, CpuThreads
from patchdino.viz.curves import plot_loss_curves


class TrainingError(RuntimeError):
    """The run cannot continue (a non-finite loss or gradient norm, storage not shared...)."""


@dataclass(frozen=True)
class InitialWeights:
    """Backbone weights a new run starts from (``patchdino pretrain --init-weights``).

    Attributes:
        tensors: the backbone's state dict (names as in ``Backbone.state_dict()``); a
            position embedding of another grid is resampled to the run's global views.
        source: where they were read from, for messages and the run's records.
        in_chans: the image channels they were trained on.
        sha256: SHA-256 of the file read (None when timm fetched the weights itself).
        head: a projection head for the CLS head of student and teacher (names as in
            :class:`~patchdino.models.head.DINOHead`), loaded where its shapes fit; empty
            when the source has none (the heads start fresh).
    """

    tensors: dict[str, torch.Tensor]
    source: str
    in_chans: int
    sha256: str | None = None
    head: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def record(self) -> dict[str, Any]:
        """What the checkpoint and ``config_history.jsonl`` keep of the source."""
        return {"source": self.source, "sha256": self.sha256}


@dataclass(frozen=True)
class TrainResult:
    """How a call to :meth:`Trainer.run` ended."""

    step: int
    total_steps: int
    stopped_by: str | None
    """The signal that stopped the run early (``"SIGTERM"``, ``"SIGINT"``...), else None."""
    checkpoint: Path


def has_unused_parameters(config: Config) -> bool:
    """Whether some trainable student parameters never get a gradient under ``config``.

    A separate patch head without the patch loss is built but never used; DDP must then look
    for unused parameters after each forward pass (or it fails on the second step).
    """
    return config.model.patch_head == "separate" and not config.loss.patch_loss


def step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """Seed of one micro-step's randomness (views, drop-path), distinct per rank and step."""
    return (seed * 1_000_003 + step * 1_009 + micro * 101 + rank * 7_919) % (2**63)


class Trainer:
    """Pretrains ``config`` into the run folder ``output``.

    Args:
        config: the validated configuration.
        output: run folder; an existing ``checkpoint.pt`` there is resumed.
        progress: show a progress bar (main process only).

    Raises:
        InputError: a logger of ``run.loggers`` needs a package that is not installed, the
            device or the data set cannot be used, or the data set holds fewer images than
            one optimiser step needs.
    """

    def __init__(
        self,
        config: Config,
        output: Path,
        progress: bool = True,
        notes: Callable[[str], None] | None = None,
        init: InitialWeights | None = None,
    ) -> None:
        require_logger_packages(config.run.loggers)  # before any work: one line, exit 2
        self.config = config
        self.output = Path(output)
        self.progress = progress
        self.notes = notes
        """Gets one-line notes for the user on the main process (where a run resumes, the
        settings that changed since its checkpoint); None keeps the library quiet."""
        self._saved_config: dict[str, Any] | None = None
        self.init = init
        """Backbone weights a new run starts from; unused when the run resumes."""
        self.init_record: dict[str, Any] | None = None
        """The source of the weights the run started from (:attr:`InitialWeights.record`),
        kept in every checkpoint; None for a run from random weights."""
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = distributed.resolve_device(config.run.device, local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.ctx = distributed.init_distributed(self.device, config.run.dist_timeout)
        if config.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=self.device.type == "cuda")
        # Measuring from here, the first step already has threads fit for the machine's load.
        self.threads = CpuThreads(config.run.cpu_threads, adapt=self.device.type == "cpu")
        self._prepare_data()
        self._prepare_model()
        self._resumed_at = (0, 0)  # (optimiser step, stream micro-step) the run started from
        self.saved_step: int | None = None
        """The step held by ``checkpoint.pt``, once known (None: no checkpoint yet)."""

    # ----------------------------------------------------------------------------- set-up
    def _prepare_data(self) -> None:
        config, ctx = self.config, self.ctx
        try:
            self.kind = data_kind(config)
            self.dataset = open_dataset(config)
            self.channels = int(self.dataset[0][0].shape[0])
        except InputError:
            raise
        except ValueError as err:
            # The data sets report a missing, empty or malformed folder or file (or an image
            # that cannot be decoded) with ValueError: a problem with the data the user gave.
            raise InputError(str(err)) from err
        global_batch = config.optim.batch_size * ctx.world_size
        if len(self.dataset) < global_batch * config.optim.accumulation:
            raise InputError(
                f"optim.batch_size {config.optim.batch_size} x accumulation "
                f"{config.optim.accumulation} x {ctx.world_size} process(es) needs "
                f"{global_batch * config.optim.accumulation} images per step, but the data "
                f"set has only {len(self.dataset)}"
            )
        mean, std = normalisation(config, self.kind, self.channels)
        self.augment = build_augmentation(config, mean, std)
        self.stream = BatchStream(
            self.dataset,
            config.optim.batch_size,
            config.run.seed,
            ctx.rank,
            ctx.world_size,
            config.data.num_workers,
            main_signals=HANDLED_SIGNALS,
        )
        self.micro_per_epoch = self.stream.steps_per_epoch
        steps_per_epoch = self.micro_per_epoch // config.optim.accumulation
        self.schedules = Schedules.from_config(config, steps_per_epoch, ctx.world_size)

    def _prepare_model(self) -> None:
        config = self.config
        self.step_module = build_step(config, self.channels, self.device)
        self.optimizer = build_optimizer(self.step_module.model.student, config.optim.adamw)
        self.forward: torch.nn.Module = self.step_module
        if self.ctx.enabled:
            self.forward = distributed.wrap_model(
                self.step_module, self.device, has_unused_parameters(config)
            )

    @property
    def checkpoint_path(self) -> Path:
        return self.output / CHECKPOINT_NAME

    # ------------------------------------------------------------------------ checkpoints
    def _state(self, step: int, skipped: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "samples_seen": self._samples_seen(step),
            "model": self.step_module.model.state_dict(),
            "loss": self.step_module.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "config": self.config.to_dict(),
            "world_size": self.ctx.world_size,
            "in_chans": self.channels,
            "data_kind": self.kind,
            "nonfinite_skipped": skipped,
            "init_weights": self.init_record,
        }

    def _images_per_step(self) -> int:
        o = self.config.optim
        return o.batch_size * o.accumulation * self.ctx.world_size

    def _samples_seen(self, step: int) -> int:
        """Data position after ``step`` in samples: this stream's micro-steps x global batch.

        Counted from where this run resumed, so that it stays right after a resume with another
        world size or batch size (:func:`~patchdino.data.loader.resume_position`).
        """
        start_step, start_micro = self._resumed_at
        micro = start_micro + (step - start_step) * self.config.optim.accumulation
        return micro * self.config.optim.batch_size * self.ctx.world_size

    def _resume(self) -> tuple[int, int, int]:
        """Load ``checkpoint.pt`` if present: ``(step, stream micro-step, skipped)``."""
        found = float(self.checkpoint_path.exists())
        found = distributed.mean_across_ranks({"found": found}, self.device)["found"]
        if 0.0 < found < 1.0:
            raise TrainingError(
                f"{self.checkpoint_path} is visible to some processes only: the output folder "
                "must be on storage shared by every node"
            )
        if found == 0.0:
            return 0, 0, 0
        state = load_checkpoint(self.checkpoint_path, map_location=self.device)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{self.checkpoint_path} is not a patchdino pretraining checkpoint"
            )
        saved_model = state["config"]["model"]
        now_model = self.config.to_dict()["model"]
        changed = [k for k in now_model if saved_model.get(k) != now_model[k]]
        if changed:
            raise CheckpointError(
                f"cannot resume {self.checkpoint_path}: model settings differ from the "
                f"checkpoint ({', '.join(f'model.{k}' for k in changed)}); use another --output"
            )
        try:
            self.step_module.model.load_state_dict(state["model"])
            self.step_module.loss.load_state_dict(state["loss"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as err:
            changes = _changed_settings(state["config"], self.config.to_dict())
            raise CheckpointError(
                f"cannot resume {self.checkpoint_path}: it does not fit the current "
                f"configuration ({first_line(err)}); settings changed since it was saved: "
                f"{', '.join(changes) or 'none'}. Restore them or use another --output"
            ) from err
        step = int(state["step"])
        self.saved_step = step
        self._saved_config = state["config"]
        self.init_record = state.get("init_weights")
        micro = resume_position(
            int(state["samples_seen"]),
            int(state["config"]["optim"]["batch_size"]) * int(state["world_size"]),
            self.config.optim.batch_size * self.ctx.world_size,
            len(self.dataset),
        )
        return step, micro, int(state.get("nonfinite_skipped", 0))

    def _start_from(self, init: InitialWeights) -> None:
        """Load ``init`` into the student's and the teacher's backbones (a new run).

        Raises:
            InputError: the weights do not fit the configured backbone or the data's channels.
        """
        if init.in_chans != self.channels:
            raise InputError(
                f"--init-weights {init.source} was trained on {init.in_chans}-channel images, "
                f"the data has {self.channels}"
            )
        model = self.step_module.model
        # The masked term's token is learnt anew when the weights have none (or it is off).
        tensors = fit_to_backbone(model.student.backbone, init.tensors)
        expected = model.student.backbone.state_dict()
        if "mask_token" in expected and "mask_token" not in tensors:
            tensors["mask_token"] = expected["mask_token"]
        if "mask_token" not in expected:
            tensors.pop("mask_token", None)
        misfit = state_dict_misfit(expected, tensors)
        if misfit is not None:
            raise InputError(
                f"--init-weights {init.source} does not fit model.arch "
                f"{self.config.model.arch} (patch {self.config.model.patch_size}): {misfit}"
            )
        head_note = self._start_heads(init)
        for network in (model.student, model.teacher):
            network.backbone.load_state_dict(tensors)
        self.init_record = init.record
        if self.ctx.is_main and self.notes is not None:
            self.notes(f"starting from the backbone of {init.source}{head_note}")

    def _start_heads(self, init: InitialWeights) -> str:
        """Load ``init.head`` into the CLS head of student and teacher where it fits; what
        was loaded and what starts fresh, as the end of the start note."""
        if not init.head:
            return ""
        model = self.step_module.model
        cls_head, patch_head = model.student.heads
        expected, head = cls_head.state_dict(), dict(init.head)
        norms = head.get("last_layer.weight_g")
        if norms is not None and "last_layer.weight_g" not in expected:
            if not bool((norms == 1).all()):
                return (
                    "; its head's last layer learnt its norms: set model.norm_last_layer=false "
                    "to load it (the heads start fresh)"
                )
            del head["last_layer.weight_g"]  # fixed at 1, as model.norm_last_layer fixes them
        misfit = state_dict_misfit(expected, head)
        if misfit is not None:
            return f"; its head does not fit model's ({misfit}): the heads start fresh"
        for network in (model.student, model.teacher):
            network.head.load_state_dict(head)
        fresh = "" if patch_head is cls_head else "; the separate patch head starts fresh"
        return f", and its head for the CLS (and shared patch) head{fresh}"

    def _save(self, step: int, skipped: int) -> None:
        # a loader worker that dies meanwhile stops the run after the save, not inside it
        with deferred_signal(WORKER_EXIT):
            if self.ctx.is_main:
                save_checkpoint(
                    self._state(step, skipped),
                    self.checkpoint_path,
                    step=step,
                    keep=self.config.run.keep_checkpoints,
                )
            distributed.barrier()
            self.saved_step = step

    def checkpoint_note(self) -> str:
        """Where a rerun resumes: ``"runs/x/checkpoint.pt still holds the last good state,
        step 20"``, or that there is no checkpoint yet."""
        if self.saved_step is None:
            return "no checkpoint was saved yet"
        return f"{self.checkpoint_path} still holds the last good state, step {self.saved_step}"

    # ------------------------------------------------------------------------------ loop
    def _batches(self, micro: int) -> Generator[CanvasBatch, None, None]:
        """Endless batches from stream position ``micro`` (micro-steps since the start)."""
        epoch, offset = divmod(micro, self.micro_per_epoch)
        while True:
            yield from self.stream.epoch(epoch, offset)
            epoch, offset = epoch + 1, 0

    def run(self, until: int | None = None) -> TrainResult:
        """Train until ``schedules.total_steps``; returns early on a stop signal.

        Args:
            until: stop (and save) after this step instead, keeping the schedules of the
                whole run; a later call continues from the checkpoint. For evaluations in
                the middle of a run.
        """
        config, ctx = self.config, self.ctx
        step, micro, skipped = self._resume()
        self._resumed_at = (step, micro)
        if self.init is not None and self.saved_step is None:
            self._start_from(self.init)
        elif self.init is not None and ctx.is_main and self.notes is not None:
            self.notes(f"--init-weights {self.init.source} ignored: the run resumes instead")
        total = self.schedules.total_steps
        end = total if until is None else min(until, total)
        bar = None
        # The kind actually read, not "auto", so that the run's records say what was trained on.
        saved = replace(config, data=replace(config.data, kind=self.kind))  # type: ignore[arg-type]
        if ctx.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            changes = _changes(self._saved_config or config.to_dict(), config.to_dict())
            if self.notes is not None and step > 0:
                self.notes(f"resuming from step {step} of {total} ({self.checkpoint_path})")
                if changes:
                    listed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changes.items())
                    self.notes(f"warning: settings changed since step {step}: {listed}")
            _record_history(
                self.output / "config_history.jsonl",
                step,
                changes,
                saved,
                self.init_record if step == 0 else None,
            )
            (self.output / "config.yaml").write_text(saved.to_yaml())
        loggers = open_loggers(saved, self.output, step, main=ctx.is_main)
        if ctx.is_main and self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=step, desc="pretrain", unit="step", dynamic_ncols=True)
        stop = StopRequest().install()
        batches = self._batches(micro)
        accumulation = config.optim.accumulation
        inputs = Ahead(
            lambda index: self._inputs(index, batches),
            step * accumulation,
            self.device,
            enabled=makes_ahead(config.run.pipeline, self.device),
        )
        threads = self.threads
        threads.update(min_interval=FIRST_INTERVAL_S)
        self.step_module.train()
        stopped_by: str | None = None
        interrupted = False
        try:
            while step < end:
                started = time.perf_counter()
                values = self.schedules.at(step)
                record, taken = self._optimise(step, values, inputs)
                if not taken:
                    skipped += 1
                    record = dict.fromkeys(record, math.nan)  # logged as null
                step += 1
                if step % config.run.log_every == 0:
                    record = distributed.mean_across_ranks(record, self.device)
                    seconds = time.perf_counter() - started
                    record.update(
                        step=step,
                        epoch=(step - 1) // self.schedules.steps_per_epoch,
                        lr=values.lr,
                        wd=values.weight_decay,
                        momentum=values.teacher_momentum,
                        teacher_temp=values.teacher_temp,
                        images_per_s=self._images_per_step() / seconds,
                        step_seconds=seconds,
                        nonfinite_skipped=skipped,
                        bad_images=_bad_image_count(self.dataset),
                        cpu_threads=threads.threads,
                    )
                    loggers.log(record, step)
                    if bar is not None:
                        bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
                if bar is not None:
                    bar.update(1)
                threads.update()
                stopped_by = _agree(stop.signal_name, self.device)
                if step % config.run.save_every == 0 or step == end or stopped_by:
                    loggers.flush()  # what was logged up to the checkpoint survives a kill
                    self._save(step, skipped)
                if stopped_by:
                    break
        except KeyboardInterrupt:
            interrupted = True  # a second Ctrl-C: stop at once, drawing nothing
            raise
        except RuntimeError as err:
            if distributed.peer_failure(err):
                raise TrainingError(
                    f"rank {ctx.rank}: another process of the job did not answer within "
                    f"run.dist_timeout={config.run.dist_timeout:g} s during step {step + 1} "
                    f"(hung or dead); stopped without saving it ({self.checkpoint_note()}); "
                    "rerun to resume (torchrun --max-restarts restarts the group itself)"
                ) from err
            failure = worker_failure(err)
            if failure is None:
                raise
            raise TrainingError(
                f"{failure} during step {step + 1}; stopped without saving it "
                f"({self.checkpoint_note()}); rerun the same command to resume"
            ) from err
        finally:
            inputs.close()  # the item in flight is finished before the batches close
            batches.close()  # stops the loader workers now, however the loop ended
            stop.restore()
            threads.restore()
            if bar is not None:
                bar.close()
            loggers.close()  # before the curves are drawn from metrics.jsonl
            if ctx.is_main and not interrupted and (self.output / "metrics.jsonl").exists():
                plot_loss_curves(
                    read_metrics(self.output / "metrics.jsonl"), self.output / "loss.png"
                )
        return TrainResult(step, total, stopped_by, self.checkpoint_path)

    def _inputs(
        self, index: int, batches: Iterator[CanvasBatch]
    ) -> tuple[MultiCropBatch, PairPlan]:
        """Views and pair plan of micro-step ``index`` (micro-steps since step 0): the next
        batch of the stream, cut and matched with the micro-step's own seeded generator."""
        step, micro = divmod(index, self.config.optim.accumulation)
        seed = step_seed(self.config.run.seed, step, micro, self.ctx.rank)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        canvas = next(batches)
        images = canvas.images.to(self.device, non_blocking=True)
        sizes = canvas.sizes.to(self.device, non_blocking=True)
        views = self.augment(images, sizes, generator=generator)
        return views, self.step_module.plan(views, generator)

    def _optimise(
        self, step: int, values: ScheduleValues, inputs: Ahead[tuple[MultiCropBatch, PairPlan]]
    ) -> tuple[dict[str, float], bool]:
        """One optimiser step: its metrics, and whether it was taken (False: skipped).

        The metrics are the loss output's scalars (:meth:`LocalGlobalOutput.scalars`) averaged
        over the micro-batches, and ``grad_norm`` when the step was taken.
        """
        config = self.config
        accumulation = config.optim.accumulation
        # The centre moves once the step is taken, from the statistics of all its micro-batches
        # (reduced across processes during the backward passes); a skipped step drops them.
        updates: list[CentreUpdate] = []
        totals: dict[str, float] = {}
        for micro in range(accumulation):
            views, plan = inputs.next()
            torch.manual_seed(step_seed(config.run.seed, step, micro, self.ctx.rank))  # drop-path
            out = forward_backward(
                self.forward,
                views,
                plan,
                values.teacher_temp,
                config.run.precision,
                accumulation=accumulation,
                sync=micro == accumulation - 1,
                apply_centre=False,
            )
            if out.centre_update is not None:
                updates.append(out.centre_update)
            scalars = out.scalars()
            numbers = torch.stack([v.detach().to(torch.float64) for v in scalars.values()])
            for key, value in zip(scalars, numbers.tolist()):  # one host sync for all
                totals[key] = totals.get(key, 0.0) + value / accumulation
        loss = distributed.mean_across_ranks({"loss": totals["loss"]}, self.device)["loss"]
        grad_norm = math.nan
        if math.isfinite(loss):
            model = self.step_module.model
            grad_norm = optimiser_step(model, self.optimizer, values, config.optim.clip_grad)
        else:
            self.optimizer.zero_grad(set_to_none=True)
        if math.isfinite(grad_norm):
            apply_updates(updates)
            return {**totals, "grad_norm": grad_norm}, True
        for update in updates:
            update.discard()
        if config.run.on_nonfinite == "skip":
            return totals, False
        bad = f"the gradient norm is {grad_norm}" if math.isfinite(loss) else f"the loss is {loss}"
        raise TrainingError(
            f"{bad} at step {step + 1}; stopped without saving ({self.checkpoint_note()}). "
            "Remedies: a "
            "lower optim.lr, longer optim.warmup_epochs, a smaller optim.clip_grad, "
            "run.precision=fp32, or run.on_nonfinite=skip to skip such steps"
        )


def _agree(signal_name: str | None, device: torch.device) -> str | None:
    """A stop requested on any rank stops every rank."""
    flag = distributed.mean_across_ranks({"stop": 1.0 if signal_name else 0.0}, device)["stop"]
    if flag <= 0:
        return None
    return signal_name or "SIGTERM"


def _changes(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, value now)}`` of every key whose value differs."""
    before, after = flatten_tree(saved), flatten_tree(now)
    keys = sorted(set(before) | set(after))
    return {k: (before.get(k), after.get(k)) for k in keys if before.get(k) != after.get(k)}


def _record_history(
    path: Path,
    step: int,
    changes: dict[str, tuple[Any, Any]],
    config: Config,
    init_weights: dict[str, Any] | None = None,
) -> None:
    """Append one line to the run's config history: this start's step, what changed since
    the checkpoint it resumed from, the whole configuration it runs with, and for a new run
    from ``--init-weights`` their source and checksum."""
    record: dict[str, Any] = {
        "started_at_step": step,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "changed": {k: {"was": old, "now": new} for k, (old, new) in changes.items()},
        "config": config.to_dict(),
    }
    if init_weights is not None:
        record["init_weights"] = init_weights
    with path.open("a") as handle:
        handle.write(json.dumps(record, default=str) + "\n")


def _changed_settings(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Dotted keys outside ``run`` whose value differs between two config dicts."""
    before, after = flatten_tree(saved), flatten_tree(now)
    return [k for k, v in after.items() if not k.startswith("run.") and before.get(k) != v]


def _bad_image_count(dataset: Any) -> int:
    log = getattr(dataset, "bad_images", None)
    return int(log.count) if log is not None else 0
