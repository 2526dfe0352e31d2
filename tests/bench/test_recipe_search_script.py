"""benchmarks/recipe_search.py: candidate parsing and the table over seeds."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def search() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling quality.py
    try:
        spec = importlib.util.spec_from_file_location(
            "recipe_search", BENCHMARKS / "recipe_search.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_extra_candidates_are_parsed_or_refused(search: ModuleType) -> None:
    assert search.parse_try("fast:optim.lr=0.01, views.num_local=2") == (
        "fast",
        ["optim.lr=0.01", "views.num_local=2"],
    )
    for bad in ("fast", "fast:", ":optim.lr=1", "fast:optim.lr"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME:key=value"):
            search.parse_try(bad)


def test_seed_table_gives_mean_and_spread_per_candidate(search: ModuleType, tmp_path: Path) -> None:
    values = {"a": [(70.0, 75.0), (72.0, 77.0)], "b": [(60.0, 61.0)]}
    for seed in range(2):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        lines = [
            json.dumps(
                {
                    "candidate": name,
                    "knn20": v[seed][0],
                    "knn20_mean": v[seed][1],
                    "knn20_both": v[seed][1],
                    **({"linear_top1": 80.0 + seed} if name == "a" else {}),
                }
            )
            for name, v in values.items()
            if seed < len(v)
        ]
        (folder / "results.jsonl").write_text("\n".join(lines) + "\n")
    table = search.seed_table([tmp_path / "seed0", tmp_path / "seed1"])
    assert "| a | 2 | 71.00 ± 1.41 | 76.00 ± 1.41 | 76.00 ± 1.41 | 80.50 ± 0.71 |" in table
    assert "| b | 1 | 60.00 ± 0.00 | 61.00 ± 0.00 | 61.00 ± 0.00 | - |" in table  # no probe


def test_paired_table_gives_per_seed_differences(search: ModuleType, tmp_path: Path) -> None:
    scores = {"base": [70.0, 72.0, 71.0], "better": [71.0, 74.0, 71.5], "mixed": [69.0, 73.0, 71.0]}
    folders = []
    for seed in range(3):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        lines = [
            json.dumps({"candidate": name, "knn20": v[seed], "knn20_mean": v[seed] + 1.0})
            for name, v in scores.items()
        ]
        (folder / "results.jsonl").write_text("\n".join(lines) + "\n")
        folders.append(folder)
    table = search.paired_table(folders, "base")
    assert "| base |" not in table
    # differences 1, 2, 0.5: mean 1.17, sample std 0.76, all positive; no probe: no linear
    assert "| better | 3 | +1.17 ± 0.76 | 3/3 | +1.17 ± 0.76 | 3/3 | - | - |" in table
    # differences -1, 1, 0: mean 0, no seed has the sign of the mean
    assert "| mixed | 3 | +0.00 ± 1.00 | 0/3 |" in table
