"""The layers of the package, checked on its import graph (every ``import`` in every module,
including those inside functions, read with :mod:`ast`).

    config                       the bottom: imports nothing else of patchdino
    errors, error_text           plain messages
    precision, checkpoint        shared by training and evaluation
    data, matching, models       building blocks
    losses                       the loss terms
    train, eval, viz             what runs
    bench, api, cli              what users call

docs/architecture.md explains the rules; this test keeps them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "patchdino"

ALLOWED: dict[str, set[str]] = {
    "config": {"errors"},
    "errors": set(),
    "error_text": set(),
    "precision": {"config"},
    "checkpoint": {"errors"},
    "data": {"config", "errors", "error_text"},
    "matching": {"config", "data"},
    "models": {"config"},
    "losses": {"config", "matching"},
    "viz": {"config", "data", "matching", "models", "errors"},
    "train": {
        "config", "errors", "error_text", "precision", "checkpoint", "data", "matching",
        "models", "losses", "viz",
    },
    "eval": {
        "config", "errors", "error_text", "precision", "checkpoint", "data", "models", "viz",
    },
}  # fmt: skip
"""Which top-level parts each part may import (parts not named here may import any)."""


def _part(module: str) -> str:
    """``patchdino.data.loader`` -> ``data``; ``patchdino.config`` -> ``config``."""
    return module.split(".")[1]


def _imports() -> dict[str, set[str]]:
    """Every module of the package and the patchdino modules it imports."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m.startswith("patchdino.")}
    return graph


def test_each_part_imports_only_the_layers_below_it() -> None:
    wrong = [
        f"{module} imports {target}"
        for module, targets in _imports().items()
        if module != "patchdino" and _part(module) in ALLOWED
        for target in targets
        if _part(target) != _part(module) and _part(target) not in ALLOWED[_part(module)]
    ]
    assert wrong == []


def test_no_import_circles_between_parts() -> None:
    edges = {
        (_part(module), _part(target))
        for module, targets in _imports().items()
        if module != "patchdino"
        for target in targets
        if _part(module) != _part(target)
    }
    circles = sorted((a, b) for a, b in edges if (b, a) in edges and a < b)
    assert circles == []


@pytest.mark.parametrize("part", ["config", "data", "losses", "matching", "models", "eval"])
def test_no_import_circle_inside_a_part(part: str) -> None:
    graph = {m: t for m, t in _imports().items() if m != "patchdino" and _part(m) == part}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, set()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    # A package's __init__ re-exporting its modules is not a circle of its own.
    circles = [
        (a, b)
        for a, targets in graph.items()
        for b in targets
        if b in graph and not a.startswith(b) and not b.startswith(a) and reaches(b, a, {b})
    ]
    assert circles == []


EVAL_TASKS = ("classification", "dense", "video", "retrieval")
"""The task packages of ``eval``; each may import ``eval.common`` but no other task."""


def test_evaluation_tasks_import_only_the_shared_part() -> None:
    def task(module: str) -> str | None:
        parts = module.split(".")
        return parts[2] if len(parts) > 2 and parts[1] == "eval" else None

    tasks = {path.name for path in (PACKAGE / "eval").iterdir() if path.is_dir()} - {"__pycache__"}
    assert tasks == {"common", *EVAL_TASKS}  # every module of eval lives in one of them
    assert {p.name for p in (PACKAGE / "eval").glob("*.py")} == {"__init__.py"}
    wrong = [
        f"{module} imports {target}"
        for module, targets in _imports().items()
        if task(module) is not None
        for target in targets
        if task(target) not in (None, "common", task(module))
    ]
    assert wrong == []
    common = [
        f"{module} imports {target}"
        for module, targets in _imports().items()
        if task(module) == "common"
        for target in targets
        if task(target) in EVAL_TASKS
    ]
    assert common == []
