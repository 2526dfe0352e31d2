"""JSON-lines metrics, one object per optimiser step, safe to resume."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import IO, Any


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics file; a torn last line (killed mid-write) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsWriter:
    """Appends one JSON object per line to ``path``.

    On resume, records after ``resume_step`` (steps that ran after the last checkpoint of a
    killed run, and will run again) are dropped, so every step appears exactly once.
    """

    def __init__(self, path: str | Path, resume_step: int = 0) -> None:
        self.path = Path(path)
        kept = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= resume_step]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Rewritten beside and renamed over the old file: a kill here loses no record.
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w") as handle:
            for record in kept:
                handle.write(json.dumps(record) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        self._handle: IO[str] = self.path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in record.items()
        }
        self._handle.write(json.dumps(clean) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()
