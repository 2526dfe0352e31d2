"""Reading a configuration: defaults, YAML files, ``key=value`` overrides, all problems at once.

Defaults reproduce the paper's ImageNet settings (ViT-S/16, 2 x 224 + 8 x 96 views, DINO head
with 65,536 outputs, grid matching, reference loss weighting). A YAML file overrides any subset
of fields by section (``optim: {lr: 1e-3}``, nested sections as nested mappings); command-line
overrides use dotted keys (``optim.lr=1e-3``, ``loss.terms.patch.weight=0.5``). Every problem
(unknown keys, wrong types, impossible values) is collected and reported at once by
:class:`ConfigError` before any work starts. Keys of earlier versions
(:data:`~patchdino.config.loss.OLD_KEYS`) still load, as the keys they are now.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from patchdino.config.loss import OLD_KEYS, TermsConfig
from patchdino.config.schema import Config, validate
from patchdino.config.section import Section
from patchdino.errors import InputError


class ConfigError(InputError):
    """One or more configuration problems; ``problems`` lists them all."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems))


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
    if origin is typing.Literal:  # the section checks the value against its choices
        return _coerce(value, str, key)
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


def _suggestion(name: str, known: Iterable[str]) -> str:
    """``; did you mean a, b?`` naming the known names closest to ``name``, or nothing."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _renamed(dotted: str, value: Any) -> tuple[str, Any]:
    """The current key of ``dotted`` and its value (``loss.patch_loss`` became a weight)."""
    if dotted not in OLD_KEYS:
        return dotted, value
    if dotted == "loss.patch_loss" and isinstance(value, bool):
        value = 1.0 if value else 0.0
    return OLD_KEYS[dotted], value


def _apply(config: Config, updates: Mapping[str, Any], source: str, problems: list[str]) -> None:
    """Set dotted keys of ``updates`` on ``config``, recording every problem."""
    for given, raw in updates.items():
        dotted, value = _renamed(given, raw)
        parts = dotted.split(".")
        node: Any = config
        for depth, name in enumerate(parts):
            hints = typing.get_type_hints(type(node))
            if name not in hints:
                problems.append(f"{source}: {_unknown(node, parts, depth, hints)}")
                break
            child = getattr(node, name)
            if depth < len(parts) - 1:
                if not isinstance(child, Section):
                    problems.append(f"{source}: unknown key '{dotted}'")
                    break
                node = child
            elif isinstance(child, Section):
                keys = [f.name for f in dataclasses.fields(child)]  # type: ignore[arg-type]
                problems.append(
                    f"{source}: '{dotted}' is a section; set its keys ({', '.join(keys)})"
                )
            else:
                try:
                    setattr(node, name, _coerce(value, hints[name], dotted))
                except ValueError as err:
                    problems.append(f"{source}: {err}")


def _unknown(node: Any, parts: list[str], depth: int, hints: Mapping[str, Any]) -> str:
    """The message for ``parts[depth]``, which ``node`` does not have."""
    name, dotted = parts[depth], ".".join(parts)
    if depth == 0:
        return f"unknown section '{name}' (known: {', '.join(hints)})"
    if isinstance(node, TermsConfig):
        return f"unknown loss term '{name}' in '{dotted}' (known: {', '.join(hints)})"
    return f"unknown key '{dotted}'{_suggestion(name, hints)}"


def _flatten(tree: Mapping[str, Any], source: str, problems: list[str]) -> dict[str, Any]:
    """Dotted keys of a file's sections; nested mappings give nested keys."""
    flat: dict[str, Any] = {}
    for section, values in tree.items():
        if not isinstance(values, Mapping):
            problems.append(f"{source}: '{section}' must be a mapping of keys, got {values!r}")
            continue
        flat.update(_nested(values, f"{section}."))
    return flat


def _nested(values: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_nested(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def flatten_tree(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys and values of a nested config dict (``Config.to_dict()`` output, also of
    earlier versions: their keys are given as the keys they are now)."""
    return dict(_renamed(key, value) for key, value in _nested(tree, "").items())


def config_from_dict(tree: Mapping[str, Any], source: str = "saved config") -> Config:
    """Rebuild and validate a :class:`Config` from ``Config.to_dict()`` output.

    Dicts saved by earlier versions load too (:data:`~patchdino.config.loss.OLD_KEYS`).

    Raises:
        ConfigError: unknown keys, wrong types or impossible values.
    """
    config = Config()
    problems: list[str] = []
    _apply(config, _flatten(tree, source, problems), source, problems)
    problems.extend(validate(config))
    if problems:
        raise ConfigError(problems)
    return config


def config_keys(config: Config | None = None) -> dict[str, Any]:
    """Every settable dotted key of a configuration and its value (defaults without one)."""
    return _nested(Config().to_dict() if config is None else config.to_dict(), "")


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


PACKAGED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
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


Check = Callable[[Config], list[str]]
"""A check of a whole configuration by a layer above this one (e.g. that ``model.arch`` names
a backbone, which only the models know); it returns one-line problems naming their keys."""


def load_config(
    path: str | Path | None = None, overrides: Iterable[str] = (), checks: Iterable[Check] = ()
) -> Config:
    """Defaults, then the YAML file at ``path``, then ``overrides``; validated.

    ``path`` may also name a packaged config without its folder, with or without its suffix
    (``fashion_mnist_tiny``, ``fashion_mnist_tiny.yaml``). A key given twice in the file is
    an error. ``checks`` run after the sections' own checks, when the file and overrides
    could be read, and their problems are reported with the others.

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
    for check in checks:
        problems.extend(check(config))
    if problems:
        raise ConfigError(problems)
    return config


__all__ = [
    "PACKAGED_CONFIGS",
    "ConfigError",
    "config_from_dict",
    "config_keys",
    "flatten_tree",
    "load_config",
    "packaged_config_names",
    "parse_override",
    "resolve_config_path",
]
