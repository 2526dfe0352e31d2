"""`patchdino bench` on the CPU with a tiny model: every mode runs and the JSON is complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from patchdino.bench import BenchSettings, make_cases, run_bench
from patchdino.bench.model_step import TrainingStep
from patchdino.bench.results import BenchResult, BenchRow
from patchdino.cli.main import main
from patchdino.data.batch import MultiCropBatch
from tiny_config import TINY_BENCH_OVERRIDES

TINY = [
    "--device",
    "cpu",
    "--arch",
    "vit_pico",
    "--patch-size",
    "4",
    "--global-size",
    "16",
    "--local-size",
    "8",
    "--num-local",
    "2",
    "--out-dim",
    "32",
    "--batch-size",
    "2",
    "--canvas",
    "24",
    "--steps",
    "1",
    "--warmup",
    "0",
    "--threads",
    "1",
]
TINY_HEAD = ["model.hidden_dim=16", "model.bottleneck_dim=8"]


def test_bench_runs_every_mode_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            *TINY,
            "--variant",
            "pairs2:loss.terms.patch.pairs_per_view=2",
            "--variant",
            "narrow:model.patch_head=separate,model.patch_out_dim=16",
            "--json",
            str(out),
            *TINY_HEAD,
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["cls", "patch", "pairs2", "narrow", "reference", "pipeline", "end2end"]
    for row in rows.values():
        assert row["status"] == "ok"
        assert len(row["step_seconds"]) == 1 and row["ms_per_step_median"] > 0
        assert row["images_per_s"] == pytest.approx(2 / (row["ms_per_step_median"] / 1e3))
        assert row["peak_memory_bytes"] is not None
    assert rows["cls"]["head_tokens_per_image"] == 6  # 4 student + 2 teacher CLS tokens
    assert rows["cls"]["student_tokens_per_image"] == 4
    assert rows["pairs2"]["matched_patches"] <= 2 < rows["patch"]["matched_patches"]
    # The reference runs the head on every token: 2 x 17 + 2 x 5 student, 2 x 17 teacher.
    assert rows["reference"]["head_tokens_per_image"] == 78
    assert rows["patch"]["head_tokens_per_image"] < 78
    # Counted FLOPs: the patch loss adds work to the CLS-only step; no MFU on a CPU.
    assert rows["patch"]["flops_per_step"] > rows["cls"]["flops_per_step"] > 0
    assert rows["pipeline"]["flops_per_step"] is None and rows["patch"]["mfu"] is None
    assert "patch / cls step time" in result["ratios"]
    assert "pipeline img/s / patch model-step img/s" in result["ratios"]
    assert result["machine"]["torch"] == torch.__version__
    assert result["settings"]["batch_size"] == 2 and result["settings"]["out_dim"] == 32
    printed = capsys.readouterr().out
    assert "reference" in printed and "peak memory:" in printed
    assert "model FLOPs (counted" in printed and "TFLOP/step" in printed


def test_bench_rejects_bad_modes_and_variants(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", *TINY, "--modes", "cls,fast"]) == 2
    assert "unknown mode" in capsys.readouterr().err
    assert main(["bench", *TINY, "--variant", "novalue"]) == 2
    assert "NAME:key=value" in capsys.readouterr().err
    assert main(["bench", *TINY, "loss.terms.patch.pairs_per_view=-2"]) == 2
    assert "loss.terms.patch.pairs_per_view" in capsys.readouterr().err


def test_out_of_memory_marks_the_row_and_the_run_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    original = TrainingStep.__call__

    def fail_on_reference(self: TrainingStep, batch: MultiCropBatch, plan: object) -> object:
        if type(self.module.loss).__name__ == "ReferenceLocalGlobalLoss":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")
        return original(self, batch, plan)

    monkeypatch.setattr(TrainingStep, "__call__", fail_on_reference)
    cases = make_cases(["cls", "reference", "patch"], TINY_BENCH_OVERRIDES)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        settings = BenchSettings(torch.device("cpu"), steps=1, warmup=0, canvas=24)
        result = run_bench(cases, settings)
    finally:
        torch.set_num_threads(threads)
    status = {r.name: r.status for r in result.rows}
    assert status == {"cls": "ok", "reference": "OOM", "patch": "ok"}
    assert "reference / cls step time" not in result.ratios()
    assert "patch / cls step time" in result.ratios()


def test_ratios_use_median_step_times() -> None:
    def row(name: str, kind: str, seconds: list[float]) -> BenchRow:
        cpu = [2 * t for t in seconds] if kind != "reference" else [1.0, 1.0, 1.0]
        return BenchRow(name, kind, [], 4, step_seconds=seconds, cpu_seconds=cpu)

    result = BenchResult(
        {},
        {"device": "cpu"},
        "test",
        [
            row("cls", "model", [1.0, 2.0, 100.0]),  # median 2 s
            row("patch", "model", [3.0, 3.0, 0.1]),  # median 3 s
            row("reference", "reference", [5.0, 4.0, 4.0]),  # median 4 s
            row("pipeline", "pipeline", [0.5, 0.5, 0.5]),
        ],
    )
    ratios = result.ratios()
    assert ratios["patch / cls step time"] == pytest.approx(1.5)
    assert ratios["reference / cls step time"] == pytest.approx(2.0)
    assert ratios["reference / patch step time"] == pytest.approx(4 / 3)
    assert ratios["pipeline img/s / patch model-step img/s"] == pytest.approx(6.0)
    assert ratios["patch / cls CPU time"] == pytest.approx(1.5)
    assert ratios["reference / cls CPU time"] == pytest.approx(0.25)
    assert "cls / patch step time" not in ratios
