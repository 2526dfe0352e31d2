"""benchmarks/gpu_evidence.py: goals, log parsing, reports, rendering, and its CPU dry run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_evidence.py"


@pytest.fixture(scope="module")
def kit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_evidence", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_evidence"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _row(ms: float, images: float, memory: float = 2**30, tokens: float | None = 12.0) -> Any:
    return {
        "status": "ok",
        "ms_per_step_median": ms,
        "images_per_s": images,
        "peak_memory_bytes": memory,
        "head_tokens_per_image": tokens,
    }


TABLES = {
    "k10000": {
        "cls": _row(100.0, 1280.0),
        "patch": _row(140.0, 914.0),
        "pairs16": _row(120.0, 1066.0),
        "pairs8": _row(110.0, 1163.0),
    },
    "k65536": {
        "cls": _row(100.0, 1280.0),
        "patch": _row(300.0, 426.0, memory=90 * 2**30),
        "narrow": _row(130.0, 984.0),
        "pipeline": _row(50.0, 2560.0, tokens=None),
        "end2end": _row(320.0, 400.0, tokens=None),
    },
}


def test_goals_are_checked_with_how_much_they_miss(kit: ModuleType) -> None:
    goals = {g["goal"]: g for g in kit.check_goals(TABLES)}
    patch = goals["patch_over_cls_k10000"]
    assert patch["measured"] == pytest.approx(1.4) and patch["met"] is False
    assert patch["missed_by_fraction"] == pytest.approx(1.4 / 1.15 - 1)
    assert goals["patch_over_cls_k65536"]["measured"] == pytest.approx(3.0)
    memory = goals["patch_memory_k65536_gib"]
    assert memory["measured"] == pytest.approx(90.0) and memory["met"] is False
    assert goals["cheaper_over_cls_k65536"]["measured"] == pytest.approx(1.3)  # narrow
    pipeline = goals["pipeline_over_patch"]
    assert pipeline["measured"] == pytest.approx(2560 / 426) and pipeline["met"] is True
    end2end = goals["end2end_images_per_s"]
    assert end2end["met"] is False and end2end["missed_by_fraction"] == pytest.approx(900 / 400 - 1)
    overlap = goals["end2end_over_patch"]
    assert overlap["measured"] == pytest.approx(320 / 300) and overlap["met"] is True
    cls = goals["cls_images_per_s"]
    assert cls["met"] is False and cls["missed_by_fraction"] == pytest.approx(1300 / 1280 - 1)
    assert kit.check_goals({})[0]["met"] is None  # nothing measured: neither met nor missed


def test_rows_of_a_stopped_bench_come_from_its_log(kit: ModuleType) -> None:
    log = "cls: 118.5 ms/step\npatch: 382.4 ms/step\nreference: OOM\nnoise line\n"
    rows = kit.rows_from_log(log)
    assert rows["cls"]["ms_per_step_median"] == 118.5 and rows["patch"]["status"] == "ok"
    assert rows["reference"]["status"] == "OOM" and set(rows) == {"cls", "patch", "reference"}


def test_junit_summary_counts_and_names_failures(kit: ModuleType, tmp_path: Path) -> None:
    xml = tmp_path / "report.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest" tests="4">'
        '<testcase classname="tests.a" name="test_ok"/>'
        '<testcase classname="tests.a" name="test_bad"><failure message="boom"/></testcase>'
        '<testcase classname="tests.b" name="test_err"><error message="setup"/></testcase>'
        '<testcase classname="tests.b" name="test_skip"><skipped message="no gpu"/></testcase>'
        "</testsuite></testsuites>"
    )
    summary = kit.junit_summary(xml)
    assert (summary["tests"], summary["passed"], summary["failed"], summary["skipped"]) == (
        4,
        1,
        2,
        1,
    )
    assert [f["test"] for f in summary["failures"]] == ["tests.a::test_bad", "tests.b::test_err"]


def _evidence(started: str, **stages: Any) -> dict[str, Any]:
    return {
        "command": f"python benchmarks/gpu_evidence.py --output run_{started}",
        "started": started,
        "dry_run": False,
        "environment": {"card": "NVIDIA H200", "torch": "2.11.0", "python": "3.12.3"},
        "stages": [{"stage": s, "status": "ok", "seconds": 1.0} for s in stages],
        **stages,
    }


def _throughput(kit: ModuleType, tables: dict[str, Any]) -> dict[str, Any]:
    runs = {name: {"command": f"python -m patchdino bench {name}"} for name in tables}
    return {"status": "ok", "tables": tables, "goals": kit.check_goals(tables), "runs": runs}


def test_throughput_lists_the_tiles_the_tuner_chose(kit: ModuleType) -> None:
    result = _throughput(kit, TABLES)
    tile = {"block_m": 32, "block_k": 32, "warps": 4, "stages": 2}
    chosen = {"kernel": "row", "dtype": "bfloat16", "dim": 256, "keys": 65536, "bias": True}
    result["runs"]["k65536"]["triton_tiles"] = [{**chosen, "capability": [9, 0], "tile": tile}]
    text = "\n".join(kit.throughput_markdown(result))
    assert "row kernel, bfloat16, d = 256, K <= 65536, bias True: " in text
    assert "'block_m': 32" in text and text.count("Tiles the first-use tuner chose") == 1


def test_merge_takes_each_stage_from_the_last_run_that_has_it(kit: ModuleType) -> None:
    first = _evidence(
        "1",
        correctness={"status": "failed", "run": {"seconds": 1.0}},
        throughput=_throughput(kit, TABLES),
    )
    faster = {"cls": _row(100.0, 1280.0), "patch": _row(120.0, 1066.0)}
    second = _evidence(
        "2",
        correctness={"status": "ok", "run": {"seconds": 1.0}},
        throughput=_throughput(kit, {"k10000": faster}),
    )
    merged = kit.merge_evidence([first, second])
    assert merged["correctness"]["status"] == "ok"
    assert merged["throughput"]["tables"]["k10000"] == faster
    assert merged["throughput"]["tables"]["k65536"] == TABLES["k65536"]
    goals = {g["goal"]: g for g in merged["throughput"]["goals"]}
    assert goals["patch_over_cls_k10000"]["measured"] == pytest.approx(1.2)
    assert [r["started"] for r in merged["runs"]] == ["1", "2"]


def test_render_replaces_only_the_marked_blocks(kit: ModuleType, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("performance.md", "results.md"):
        (docs / name).write_text(f"# {name}\nbefore\n{kit.BEGIN}\nold\n{kit.END}\nafter\n")
    quality = {
        "status": "ok",
        "recipe": "fashion_mnist_tiny",
        "steps": 10,
        "batch_size": 8,
        "baselines": {"pixels": {"knn20": 86.05}},
        "table": {
            "grid": {
                "seeds": 3,
                "knn20_mean": 88.5,
                "knn20_std": 0.25,
                "linear_top1_mean": 90.0,
                "linear_top1_std": 0.5,
                "train_seconds_mean": 60.0,
            }
        },
    }
    evidence = _evidence("1", throughput=_throughput(kit, TABLES), quality=quality)
    path = tmp_path / "run" / "evidence.json"
    path.parent.mkdir()
    path.write_text(json.dumps(evidence))
    kit.render_docs([path], docs)
    performance = (docs / "performance.md").read_text()
    results = (docs / "results.md").read_text()
    assert performance.startswith("# performance.md\nbefore\n") and performance.endswith("after\n")
    assert (
        "old" not in performance
        and "| `patch` | 426 | 300.0 | 90.00 | 12.0 | 3.00 |" in performance
    )
    assert "| `grid` | 88.50 ± 0.25 | 90.00 ± 0.50 | 3 | 1.0 |" in results
    assert "| raw pixels | 86.05 |" in results
    path.write_text(json.dumps(dict(evidence, dry_run=True)))
    with pytest.raises(ValueError, match="dry run"):
        kit.render_docs([path], docs)
    (docs / "results.md").write_text("no markers\n")
    path.write_text(json.dumps(evidence))
    with pytest.raises(ValueError, match="block"):
        kit.render_docs([path], docs)


def test_dry_run_runs_every_stage_on_the_cpu(kit: ModuleType, tmp_path: Path) -> None:
    output = tmp_path / "evidence"
    code = kit.main(["--dry-run", "--output", str(output)])
    evidence = json.loads((output / "evidence.json").read_text())
    assert [(s["stage"], s["status"]) for s in evidence["stages"]] == [
        ("correctness", "ok"),
        ("throughput", "ok"),
        ("quality", "ok"),
        ("restarts", "skipped"),  # needs two GPUs
    ], json.dumps(evidence, indent=1)[-6000:]
    assert code == 0
    assert evidence["correctness"]["tests"] > 0  # the CUDA tests were collected (and skipped)
    tables = evidence["throughput"]["tables"]
    assert set(tables["k65536"]) == {
        "cls",
        "patch",
        "kernel_triton",
        "kernel_chunked",
        "fused_adamw",
        "pairs16",
        "pairs8",
        "narrow",
        "reference",
        "pipeline",
        "end2end",
    }
    assert set(tables["compile"]) == {"patch"}
    assert all(r["status"] == "ok" for t in tables.values() for r in t.values())
    assert evidence["throughput"]["profile"]["top"]
    assert set(evidence["quality"]["table"]) == {"dino", "grid", "nearest"}
    assert (output / "evidence.md").read_text().startswith("# GPU evidence")
    assert (
        "skipped: needs two GPUs, one per process; a CPU dry run"
        in (output / "evidence.md").read_text()
    )
    assert (output / "knn_curves.png").stat().st_size > 0


def test_bad_arguments_stop_before_any_work(kit: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stopped:
        kit.main(["--dry-run", "--output", str(tmp_path), "--stages", "speed"])
    assert stopped.value.code == 2
    with pytest.raises(SystemExit):
        kit.main(["--dry-run", "--output", str(tmp_path), "--budget", "quality=soon"])
    with pytest.raises(SystemExit):
        kit.main(["--render", str(tmp_path / "missing.json")])
    assert not (tmp_path / "evidence.json").exists()
