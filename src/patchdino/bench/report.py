"""Plain-text table of a benchmark run, and its JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from patchdino.bench.results import BenchResult, BenchRow

_COLUMNS = (
    ("row", 16),
    ("img/s", 10),
    ("wall ms", 11),
    ("min ms", 11),
    ("cpu ms", 11),
    ("peak mem", 10),
    ("head tok/img", 13),
    ("pairs/view", 11),
)


def _memory(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.0f} MiB"


def _number(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _line(row: BenchRow) -> str:
    values = [
        row.name,
        _number(row.images_per_s, 2) if row.ok else row.status,
        _number(row.median_ms),
        _number(row.min_ms),
        _number(row.cpu_median_ms),
        _memory(row.peak_memory_bytes),
        _number(row.head_tokens_per_image),
        _number(row.matched_patches),
    ]
    return " ".join(
        v.ljust(w) if i == 0 else v.rjust(w) for i, (v, (_, w)) in enumerate(zip(values, _COLUMNS))
    )


def format_report(result: BenchResult) -> str:
    """The machine, the settings, one line per row, and the ratios."""
    m, s = result.machine, result.settings
    load = ""
    if "load_average_start" in m:
        start = m["load_average_start"][0]
        end = m.get("load_average_end", [start])[0]
        load = f"; load average {start:.2f} -> {end:.2f}"
    lines = [
        f"machine: {m['platform']}; {m['cpu_count']} CPUs; torch {m['torch']}; "
        f"device {m['device']} ({m['device_name']}); {m['torch_threads']} threads{load}",
    ]
    if "arch" in s:
        lines.append(
            f"{s['arch']}, batch {s['batch_size']}, 2 x {s['global_size']} + {s['num_local']} x "
            f"{s['local_size']} views, patch {s['patch_size']}, out_dim {s['out_dim']}, "
            f"precision {s['precision']} ({s['effective_precision']}), compile {s['compile']}; "
            f"median of {s['steps']} steps after {s['warmup']} warm-up"
        )
    header = " ".join(
        name.ljust(w) if i == 0 else name.rjust(w) for i, (name, w) in enumerate(_COLUMNS)
    )
    lines += [header, *(_line(r) for r in result.rows)]
    for r in result.rows:
        extra = [o for o in r.overrides if o not in _shared(result)]
        if extra:
            lines.append(f"  {r.name}: {' '.join(extra)}")
    counted = [r for r in result.rows if r.ok and r.flops_per_step is not None]
    if counted:
        lines.append("model FLOPs (counted; work inside Triton kernels is not):")
        for r in counted:
            mfu = f", MFU {r.mfu:.1%}" if r.mfu is not None else ""
            lines.append(
                f"  {r.name}: {(r.flops_per_step or 0) / 1e12:.3f} TFLOP/step, "
                f"{r.tflops_per_s:.3f} TFLOP/s{mfu}"
            )
    synced = [r for r in result.rows if r.ok and r.host_syncs is not None]
    if synced:
        lines.append("host syncs per step (patchdino.bench.syncs):")
        for r in synced:
            kinds = ", ".join(f"{k} {n}" for k, n in (r.host_syncs or {}).items())
            lines.append(f"  {r.name}: {r.host_sync_count}" + (f" ({kinds})" if kinds else ""))
    ratios = result.ratios()
    if ratios:
        lines.append("ratios:")
        lines += [f"  {name}: {value:.2f}" for name, value in ratios.items()]
    lines.append(f"peak memory: {result.memory_method}")
    return "\n".join(lines)


def _shared(result: BenchResult) -> set[str]:
    """Overrides common to every row."""
    sets = [set(r.overrides) for r in result.rows]
    return set.intersection(*sets) if sets else set()


def write_json(result: BenchResult, path: Path) -> None:
    """Write ``result.to_dict()`` as indented JSON, creating the parent folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
