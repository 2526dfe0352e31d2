"""benchmarks/bench_throughput.py runs the same benchmark and writes its JSON by default."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_throughput.py"


def test_script_writes_json_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("bench_throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.chdir(tmp_path)
    argv = ["--device", "cpu", "--modes", "pipeline", "--batch-size", "2", "--threads", "1"]
    argv += ["--global-size", "32", "--local-size", "16", "--num-local", "2", "--canvas", "40"]
    argv += ["--steps", "1", "--warmup", "0"]
    assert module.run(argv) == 0
    result = json.loads((tmp_path / module.DEFAULT_JSON).read_text())
    assert [r["name"] for r in result["rows"]] == ["pipeline"]
    assert result["rows"][0]["status"] == "ok"
