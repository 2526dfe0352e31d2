"""Training-step throughput benchmark: model-only steps, input pipeline, end to end."""

from patchdino.bench.cases import MODES, BenchCase, BenchSettings, make_cases
from patchdino.bench.reference_loss import ReferenceLocalGlobalLoss
from patchdino.bench.report import format_report, write_json
from patchdino.bench.results import BenchResult, BenchRow
from patchdino.bench.runner import run_bench

__all__ = [
    "MODES",
    "BenchCase",
    "BenchResult",
    "BenchRow",
    "BenchSettings",
    "ReferenceLocalGlobalLoss",
    "format_report",
    "make_cases",
    "run_bench",
    "write_json",
]
