"""Results of a benchmark run: one row per case, the ratios between rows, JSON form."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

OK = "ok"
OOM = "OOM"


@dataclass
class BenchRow:
    """Measurements of one case.

    Attributes:
        name: row label.
        kind: ``model``, ``reference``, ``pipeline`` or ``end2end``.
        overrides: the ``key=value`` overrides of the case.
        batch_size: images per step.
        status: ``"ok"``, ``"OOM"`` or ``"error: <message>"``.
        step_seconds: wall time of every timed step.
        cpu_seconds: process CPU time (all threads) of every timed step.
        peak_memory_bytes: peak memory of the case (see the result's ``memory_method``).
        head_tokens_per_image: tokens the projection heads ran on per image (model rows).
        student_tokens_per_image: those of them the student's heads ran on.
        matched_patches: mean matched patch pairs per (sample, view pair) (model rows).
        flops_per_step: FLOPs one step dispatches (:mod:`patchdino.bench.flops`; model and
            end-to-end rows).
        peak_flops: the device's dense peak at the row's precision, when known (for MFU).
        host_syncs: host synchronisations of one step by kind (:mod:`patchdino.bench.syncs`).
    """

    name: str
    kind: str
    overrides: list[str]
    batch_size: int
    status: str = OK
    step_seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    peak_memory_bytes: int | None = None
    head_tokens_per_image: float | None = None
    student_tokens_per_image: float | None = None
    matched_patches: float | None = None
    flops_per_step: float | None = None
    peak_flops: float | None = None
    host_syncs: dict[str, int] | None = None

    @property
    def host_sync_count(self) -> int | None:
        """Host synchronisations of one step, all kinds together."""
        return None if self.host_syncs is None else sum(self.host_syncs.values())

    @property
    def tflops_per_s(self) -> float | None:
        """Counted FLOPs per second at the median step time, in TFLOP/s."""
        median = self.median_ms
        if not median or self.flops_per_step is None:
            return None
        return self.flops_per_step / (median / 1e3) / 1e12

    @property
    def mfu(self) -> float | None:
        """Model FLOPs utilisation: counted FLOP/s over the device's peak (None if unknown)."""
        achieved = self.tflops_per_s
        if achieved is None or not self.peak_flops:
            return None
        return achieved * 1e12 / self.peak_flops

    @property
    def ok(self) -> bool:
        return self.status == OK and bool(self.step_seconds)

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.step_seconds) * 1e3 if self.ok else None

    @property
    def min_ms(self) -> float | None:
        return min(self.step_seconds) * 1e3 if self.ok else None

    @property
    def cpu_median_ms(self) -> float | None:
        """Median process CPU time per step (all threads), in ms."""
        return statistics.median(self.cpu_seconds) * 1e3 if self.ok and self.cpu_seconds else None

    @property
    def images_per_s(self) -> float | None:
        """Images per second at the median step time."""
        median = self.median_ms
        return self.batch_size / (median / 1e3) if median else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "overrides": self.overrides,
            "batch_size": self.batch_size,
            "status": self.status,
            "ms_per_step_median": self.median_ms,
            "ms_per_step_min": self.min_ms,
            "cpu_ms_per_step_median": self.cpu_median_ms,
            "images_per_s": self.images_per_s,
            "peak_memory_bytes": self.peak_memory_bytes,
            "head_tokens_per_image": self.head_tokens_per_image,
            "student_tokens_per_image": self.student_tokens_per_image,
            "matched_patches": self.matched_patches,
            "flops_per_step": self.flops_per_step,
            "tflops_per_s": self.tflops_per_s,
            "mfu": self.mfu,
            "host_syncs": self.host_sync_count,
            "host_syncs_by_kind": self.host_syncs,
            "step_seconds": self.step_seconds,
            "cpu_seconds": self.cpu_seconds,
        }


@dataclass
class BenchResult:
    """A whole run.

    Attributes:
        machine: platform, CPU, torch version, device name, threads, load averages.
        settings: the command's settings (sizes, steps, precision...).
        memory_method: how ``peak_memory_bytes`` was measured.
        rows: one per case, in run order.
    """

    machine: dict[str, Any]
    settings: dict[str, Any]
    memory_method: str
    rows: list[BenchRow]

    def row(self, name: str) -> BenchRow | None:
        """The row called ``name`` if it completed, else None."""
        for r in self.rows:
            if r.name == name and r.ok:
                return r
        return None

    def ratios(self) -> dict[str, float]:
        """Step-time ratios against ``cls`` and ``patch``, and pipeline vs model throughput.

        On the CPU the same ratios of median process CPU time are added (``... CPU time``):
        they are far less sensitive to other processes sharing the machine.
        """
        out: dict[str, float] = {}
        cls, patch = self.row("cls"), self.row("patch")
        clocks = [("step time", "median_ms")]
        if str(self.settings.get("device", "")).startswith("cpu"):
            clocks.append(("CPU time", "cpu_median_ms"))
        for label, attribute in clocks:
            for r in self.rows:
                value = getattr(r, attribute)
                if not r.ok or r.kind not in ("model", "reference") or not value:
                    continue
                for base in (cls, patch):
                    if base is None or r is base or (base is patch and r is cls):
                        continue
                    base_value = getattr(base, attribute)
                    if base_value:
                        out[f"{r.name} / {base.name} {label}"] = value / base_value
        pipeline, end2end = self.row("pipeline"), self.row("end2end")
        model = patch or cls
        if pipeline is not None and model is not None:
            pipe_rate, model_rate = pipeline.images_per_s, model.images_per_s
            if pipe_rate and model_rate:
                out[f"pipeline img/s / {model.name} model-step img/s"] = pipe_rate / model_rate
        if end2end is not None and patch is not None and end2end.median_ms and patch.median_ms:
            out["end2end / patch step time"] = end2end.median_ms / patch.median_ms
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "settings": self.settings,
            "memory_method": self.memory_method,
            "rows": [r.to_dict() for r in self.rows],
            "ratios": self.ratios(),
            "triton_tiles": triton_tiles(),
        }


def triton_tiles() -> list[dict[str, Any]]:
    """The tiles :data:`~patchdino.losses.triton_distill.TUNER` chose in this process, one
    record per kernel key (none when ``loss.kernel=triton`` never ran; Triton not imported)."""
    import dataclasses
    import sys

    module = sys.modules.get("patchdino.losses.triton_distill")
    if module is None:
        return []
    names = ("kernel", "capability", "dtype", "dim", "keys", "bias")
    return [
        {**dict(zip(names, key)), "tile": dataclasses.asdict(tile)}
        for key, tile in module.TUNER.chosen.items()
    ]
