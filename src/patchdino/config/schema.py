"""The whole configuration of a pretraining run, and the checks across its sections."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

from patchdino.config.data import DataConfig
from patchdino.config.loss import LossConfig
from patchdino.config.model import ModelConfig
from patchdino.config.optim import OptimConfig
from patchdino.config.run import RunConfig
from patchdino.config.views import ViewsConfig


@dataclass
class Config:
    """The whole configuration of a pretraining run."""

    data: DataConfig = field(default_factory=DataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), suitable for YAML or JSON."""
        return _plain(dataclasses.asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def validate(config: Config) -> list[str]:
    """Every impossible value or combination in ``config``, as messages.

    Each section checks its own values (:meth:`~patchdino.config.section.Section.problems`);
    what involves two sections is checked here.
    """
    problems: list[str] = []
    for f in dataclasses.fields(config):
        problems += getattr(config, f.name).problems(f"{f.name}.")
    v, m, lo = config.views, config.model, config.loss
    problems += v.patch_problems(m.patch_size, "views.", "model.patch_size")
    if lo.local_local and v.num_local < 2:
        problems.append("loss.local_local needs at least 2 local views (views.num_local >= 2)")
    if lo.terms.masked.weight > 0 and lo.local_local:
        problems.append(
            "loss.terms.masked and loss.local_local cannot be combined yet: masks cover the "
            "global views only, while local-local pairs run the teacher on local views"
        )
    return problems
