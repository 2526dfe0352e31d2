"""Typed run configuration: one source of defaults, YAML files, ``key=value`` overrides.

Defaults reproduce the paper's ImageNet settings (ViT-S/16, 2 x 224 + 8 x 96 views, DINO head
with 65,536 outputs, grid matching, reference loss weighting). A YAML file overrides any subset
of fields by section (``optim: {lr: 1e-3}``); command-line overrides use dotted keys
(``optim.lr=1e-3``). Every problem (unknown keys, wrong types, impossible values) is collected
and reported at once by :class:`ConfigError` before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from patchdino.errors import InputError


class ConfigError(InputError):
    """One or more configuration problems; ``problems`` lists them all."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


@dataclass
class DataConfig:
    """Where the images come from and how workers prepare them."""

    path: str = ""
    """Data set root. Empty means the default location of the kind (Fashion-MNIST only)."""
    kind: str = "auto"
    """auto (detected from the folder) or a kind of :data:`patchdino.data.datasets.KINDS`:
    imagefolder, flat, cifar10, cifar100, fashion_mnist, mnist."""
    canvas: int | None = None
    """Longer image side after decoding (images padded to a square canvas); None keeps the
    native size, which requires all images to share one size (CIFAR, MNIST)."""
    channels: int | None = None
    """1 or 3; None keeps the data set's own (1 for MNIST-like, 3 otherwise)."""
    mean: tuple[float, ...] | None = None
    """Per-channel normalisation mean; None uses the data set's usual statistics."""
    std: tuple[float, ...] | None = None
    num_workers: int = 4
    on_bad_image: str = "skip"
    """skip | fail: what to do with a corrupt, truncated or non-image file."""
    holdout: int = 0
    """Training images held out for validation (a fixed random subset); pretraining never
    sees them and ``benchmarks/`` evaluate on them to choose recipes. 0: none."""


@dataclass
class ViewsConfig:
    """Multi-crop views (docs/method.md section 1).

    :class:`patchdino.data.multicrop.MultiCropSpec` extends these fields with what the
    sampler needs besides, and :func:`patchdino.data.multicrop.view_problems` checks them.
    """

    global_size: int = 224
    local_size: int = 96
    num_local: int = 8
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    photometric: bool = True
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: tuple[float, float, float] = (1.0, 0.1, 0.5)
    """Gaussian blur probability for global-1, global-2 and the local views."""
    solarize_p: tuple[float, float, float] = (0.0, 0.2, 0.0)
    geometry: str = "per_sample"
    """per_sample: every image draws its own crop boxes and flips | per_batch: one draw per
    view shared by the whole batch (reference)."""


@dataclass
class ModelConfig:
    """Backbone and projection heads (docs/method.md section 3)."""

    arch: str = "vit_small_patch16_224"
    """A timm ViT name, or one of patchdino's small custom sizes."""
    patch_size: int = 16
    drop_path: float = 0.1
    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    norm_last_layer: bool = True
    patch_head: str = "shared"
    """shared: patches use the CLS head (the paper); separate: a head of their own."""
    patch_out_dim: int = 65536
    """Output width of the separate patch head."""


@dataclass
class LossConfig:
    """Local-global loss (docs/method.md section 4)."""

    patch_loss: bool = True
    """False gives plain DINO through the same code path."""
    matching: str = "grid"
    """grid (the paper's algorithm) | nearest."""
    match_threshold: float = 0.5
    """nearest mode: largest centre distance kept, in coarser-patch units."""
    local_local: bool = False
    """Also pair local views with each other (the teacher then runs on local views too)."""
    cls_weighting: str = "token"
    """token: CLS is one token among 1 + matches (reference); split: fixed cls_weight."""
    cls_weight: float = 0.5
    patch_pairs_per_view: int = 0
    """Keep at most this many randomly chosen matched patch pairs per (sample, view pair),
    drawn anew every step; 0 keeps all. A cheaper setting: the heads run on fewer tokens."""
    centre: str = "position"
    """position: one centre per token position (reference) | shared: CLS + one for patches."""
    centre_tokens: str = "matched"
    """matched: the centre statistics average the teacher tokens that take part in a pair |
    all: every teacher token (reference; the teacher head also runs on unmatched patches)."""
    centre_momentum: float = 0.9
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0


@dataclass
class OptimConfig:
    """Optimisation and schedules (docs/method.md section 5)."""

    batch_size: int = 64
    """Images per step on one process (the global batch is this times the world size)."""
    epochs: int = 100
    lr: float = 5e-4
    """Peak learning rate for a global batch of 256; scaled linearly by the global batch."""
    min_lr: float = 1e-6
    warmup_epochs: float = 10.0
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_teacher: float = 0.996
    clip_grad: float = 3.0
    """Gradient-norm clip per parameter tensor as in DINO; 0 disables."""
    freeze_last_layer: float = 1.0
    """Epochs during which the head's last layer is not updated."""
    accumulation: int = 1
    """Gradient accumulation steps per optimiser step."""


@dataclass
class RunConfig:
    """Run-time settings."""

    seed: int = 0
    device: str = "auto"
    """auto | cpu | cuda | cuda:N."""
    precision: str = "auto"
    """auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16."""
    max_steps: int | None = None
    """Total optimiser steps; None runs ``optim.epochs`` epochs."""
    save_every: int = 1000
    log_every: int = 1
    compile: bool = False
    deterministic: bool = False
    on_nonfinite: str = "stop"
    """stop | skip: what to do with a non-finite loss."""


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


NONFINITE_POLICIES = ("stop", "skip")
"""``run.on_nonfinite`` values."""


def _choices() -> dict[str, tuple[str, ...]]:
    """The allowed values of each text option, as the modules that use them define them.

    Imported when called: those modules import torch, which ``import patchdino.config`` does
    not need. View options (``views.geometry``) are checked with the other view fields, by
    :func:`patchdino.data.multicrop.view_problems`.
    """
    from patchdino.data.datasets import BAD_IMAGE_POLICIES, DATASET_KINDS
    from patchdino.losses.centre import CENTRE_MODES, CENTRE_TOKENS
    from patchdino.losses.pairs import CLS_WEIGHTINGS
    from patchdino.matching.match import MATCH_MODES
    from patchdino.models.student_teacher import PATCH_HEAD_MODES
    from patchdino.train.precision import PRECISIONS

    return {
        "data.kind": ("auto", *DATASET_KINDS),
        "data.on_bad_image": BAD_IMAGE_POLICIES,
        "model.patch_head": PATCH_HEAD_MODES,
        "loss.matching": MATCH_MODES,
        "loss.cls_weighting": CLS_WEIGHTINGS,
        "loss.centre": CENTRE_MODES,
        "loss.centre_tokens": CENTRE_TOKENS,
        "run.precision": PRECISIONS,
        "run.on_nonfinite": NONFINITE_POLICIES,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _number(value: Any) -> float | None:
    """``value`` as a float, or None; accepts text such as ``1e-3``, which YAML reads as text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` to ``annotation`` or raise ValueError naming ``key``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0] if errors else f"{key}: cannot be null")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ValueError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        number = _number(value)
        if number is not None and number.is_integer():
            return int(number)
        raise ValueError(f"{key}: expected an integer, got {value!r}")
    if annotation is float:
        number = _number(value)
        if number is None:
            raise ValueError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(number):
            raise ValueError(f"{key}: expected a finite number, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"{key}: expected a string, got {value!r}")
    raise TypeError(f"unsupported annotation {annotation!r} for {key}")


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def _apply(config: Config, updates: Mapping[str, Any], source: str, problems: list[str]) -> None:
    """Set dotted keys of ``updates`` on ``config``, recording every problem."""
    sections = _sections()
    for dotted, value in updates.items():
        section_name, _, name = dotted.partition(".")
        if section_name not in sections:
            problems.append(
                f"{source}: unknown section '{section_name}' (known: {', '.join(sections)})"
            )
            continue
        section = getattr(config, section_name)
        hints = typing.get_type_hints(type(section))
        if name not in hints:
            close = [k for k in hints if k.startswith(name[:3])] if name else []
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            problems.append(f"{source}: unknown key '{dotted}'{hint}")
            continue
        try:
            setattr(section, name, _coerce(value, hints[name], dotted))
        except ValueError as err:
            problems.append(f"{source}: {err}")


def _flatten(tree: Mapping[str, Any], source: str, problems: list[str]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in tree.items():
        if not isinstance(values, Mapping):
            problems.append(f"{source}: '{section}' must be a mapping of keys, got {values!r}")
            continue
        for key, value in values.items():
            flat[f"{section}.{key}"] = value
    return flat


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``section.key=value``; the value is read as YAML (numbers, lists, true/false)."""
    key, sep, raw = text.partition("=")
    if not sep or "." not in key:
        raise ConfigError([f"override '{text}' is not of the form section.key=value"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError([f"override '{text}': cannot parse value ({err})"]) from err
    return key.strip(), value


PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"
"""Config files shipped with the package (``configs/`` in a checkout points here)."""


def packaged_config_names() -> list[str]:
    """Sorted names of the packaged configs, usable as ``--config NAME``."""
    return sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml"))


def resolve_config_path(name: str | Path) -> Path:
    """A config file path, or the name of a packaged config (``fashion_mnist_tiny``).

    A name without a folder may carry the ``.yaml`` suffix (``fashion_mnist_tiny.yaml``); an
    existing file of that name in the working directory comes first.
    """
    path = Path(name)
    if path.exists() or path.parent != Path("."):
        return path
    packaged = PACKAGED_CONFIGS / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    return packaged if packaged.exists() else path


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key '{key}' on line {line} (first given on line {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _duplicate_key(err: yaml.YAMLError) -> str | None:
    """The message of a duplicate-key error raised by :class:`_UniqueKeyLoader`, else None."""
    problem = getattr(err, "problem", None)
    return problem if isinstance(problem, str) and problem.startswith("duplicate key") else None


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Defaults, then the YAML file at ``path``, then ``overrides``; validated.

    ``path`` may also name a packaged config without its folder, with or without its suffix
    (``fashion_mnist_tiny``, ``fashion_mnist_tiny.yaml``). A key given twice in the file is
    an error.

    Raises:
        ConfigError: listing every unknown key, wrong type and impossible value.
    """
    config = Config()
    problems: list[str] = []
    if path is not None:
        path = resolve_config_path(path)
        if not path.exists():
            raise ConfigError(
                [
                    f"cannot read config file {path}: it does not exist; give a YAML file or "
                    f"a packaged config: {', '.join(packaged_config_names())}"
                ]
            )
        try:
            tree = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
        except OSError as err:
            raise ConfigError([f"cannot read config file {path}: {err.strerror}"]) from err
        except yaml.YAMLError as err:
            duplicate = _duplicate_key(err)
            if duplicate is not None:
                raise ConfigError([f"{path}: {duplicate}"]) from err
            raise ConfigError([f"{path}: not valid YAML ({err})"]) from err
        if not isinstance(tree, Mapping):
            raise ConfigError([f"{path}: expected a mapping of sections"])
        _apply(config, _flatten(tree, str(path), problems), str(path), problems)
    parsed: dict[str, Any] = {}
    for text in overrides:
        try:
            key, value = parse_override(text)
        except ConfigError as err:
            problems.extend(err.problems)
            continue
        parsed[key] = value
    _apply(config, parsed, "override", problems)
    problems.extend(validate(config))
    if problems:
        raise ConfigError(problems)
    return config


def validate(config: Config) -> list[str]:
    """Every impossible value or combination in ``config``, as messages."""
    from patchdino.data.multicrop import view_problems

    problems: list[str] = []
    flat = _flatten(config.to_dict(), "", problems)
    for key, allowed in _choices().items():
        if flat[key] not in allowed:
            problems.append(f"{key}: '{flat[key]}' is not one of {', '.join(allowed)}")

    v, m, lo, o, r, d = (
        config.views,
        config.model,
        config.loss,
        config.optim,
        config.run,
        config.data,
    )
    problems += view_problems(v, m.patch_size, prefix="views.", patch_key="model.patch_size")
    if lo.patch_pairs_per_view < 0:
        problems.append(
            f"loss.patch_pairs_per_view must be >= 0 (0 keeps all), got {lo.patch_pairs_per_view}"
        )
    if lo.local_local and v.num_local < 2:
        problems.append("loss.local_local needs at least 2 local views (views.num_local >= 2)")
    if lo.matching == "nearest" and lo.match_threshold <= 0:
        problems.append(f"loss.match_threshold must be > 0, got {lo.match_threshold}")
    if not 0 <= lo.cls_weight <= 1:
        problems.append(f"loss.cls_weight must lie in [0, 1], got {lo.cls_weight}")
    if not 0 <= lo.centre_momentum < 1:
        problems.append(f"loss.centre_momentum must lie in [0, 1), got {lo.centre_momentum}")
    for name, t in (
        ("loss.student_temp", lo.student_temp),
        ("loss.teacher_temp", lo.teacher_temp),
        ("loss.warmup_teacher_temp", lo.warmup_teacher_temp),
    ):
        if t <= 0:
            problems.append(f"{name} must be > 0, got {t}")
    for name, n in (
        ("model.out_dim", m.out_dim),
        ("model.hidden_dim", m.hidden_dim),
        ("model.bottleneck_dim", m.bottleneck_dim),
        ("model.patch_out_dim", m.patch_out_dim),
        ("optim.batch_size", o.batch_size),
        ("optim.epochs", o.epochs),
        ("optim.accumulation", o.accumulation),
        ("run.save_every", r.save_every),
        ("run.log_every", r.log_every),
    ):
        if n <= 0:
            problems.append(f"{name} must be > 0, got {n}")
    if r.max_steps is not None and r.max_steps <= 0:
        problems.append(f"run.max_steps must be > 0, got {r.max_steps}")
    if not 0 <= r.seed < 2**32:
        problems.append(f"run.seed must lie in [0, 2**32), got {r.seed}")
    if o.weight_decay < 0 or o.weight_decay_end < 0:
        problems.append(
            f"optim.weight_decay and weight_decay_end must be >= 0, got "
            f"{o.weight_decay}, {o.weight_decay_end}"
        )
    if not 0 <= m.drop_path < 1:
        problems.append(f"model.drop_path must lie in [0, 1), got {m.drop_path}")
    if o.lr <= 0 or o.min_lr < 0:
        problems.append(f"optim.lr must be > 0 and optim.min_lr >= 0, got {o.lr}, {o.min_lr}")
    if not 0 <= o.momentum_teacher <= 1:
        problems.append(f"optim.momentum_teacher must lie in [0, 1], got {o.momentum_teacher}")
    if o.warmup_epochs < 0 or o.freeze_last_layer < 0 or o.clip_grad < 0:
        problems.append("optim.warmup_epochs, freeze_last_layer and clip_grad must be >= 0")
    if d.channels not in (None, 1, 3):
        problems.append(f"data.channels must be 1, 3 or null, got {d.channels}")
    if d.canvas is not None and d.canvas <= 0:
        problems.append(f"data.canvas must be > 0 or null, got {d.canvas}")
    if (d.mean is None) != (d.std is None):
        problems.append("data.mean and data.std must be given together")
    elif d.mean is not None and d.std is not None:
        if len(d.mean) != len(d.std) or len(d.mean) not in (1, 3):
            problems.append("data.mean and data.std must both have 1 or 3 values")
        if any(s <= 0 for s in d.std):
            problems.append(f"data.std values must be > 0, got {d.std}")
    if d.num_workers < 0:
        problems.append(f"data.num_workers must be >= 0, got {d.num_workers}")
    if d.holdout < 0:
        problems.append(f"data.holdout must be >= 0, got {d.holdout}")
    if not (r.device in ("auto", "cpu", "cuda") or r.device.startswith("cuda:")):
        problems.append(f"run.device '{r.device}' is not auto, cpu, cuda or cuda:N")
    return problems
