"""Training curves from a metrics file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for record in records:
        value = record.get(key)
        if isinstance(value, (int, float)):
            steps.append(int(record["step"]))
            values.append(float(value))
    return steps, values


def plot_loss_curves(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Plot total, CLS and patch loss (left) and the learning rate (right) against the step.

    Args:
        records: metrics records with ``step`` and any of ``loss``, ``loss_cls``,
            ``loss_patch``, ``lr``.
        path: PNG file to write.
    """
    path = Path(path)
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in (("loss", "total"), ("loss_cls", "CLS"), ("loss_patch", "patch")):
        steps, values = _series(records, key)
        if steps:
            ax_loss.plot(steps, values, label=label, linewidth=1.2)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("Training loss")
    ax_loss.grid(alpha=0.3)
    if ax_loss.lines:
        ax_loss.legend()
    steps, values = _series(records, "lr")
    ax_lr.plot(steps, values, color="tab:gray")
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("Schedule")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
