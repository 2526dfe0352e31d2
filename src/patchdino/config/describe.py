"""What each config key is: its type, default and one-line doc, read from the sections.

The doc of a key is the string written under its field in the section's dataclass (the one
source of both the code's and the command line's documentation); :func:`describe_keys`
reads it with :mod:`ast` from the section's source.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import re
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any

from patchdino.config.checks import literal_values
from patchdino.config.schema import Config
from patchdino.config.section import Section

_DOCS: dict[type, dict[str, str]] = {}
"""The field docs of each section class, read once."""


@dataclass(frozen=True)
class KeyInfo:
    """One settable key.

    Attributes:
        key: dotted name (``loss.terms.patch.weight``).
        kind: its type in words (``float``, ``one of grid, nearest``, ``int or null``).
        default: the library default.
        value: the value in the configuration described.
        doc: the first sentence of the field's doc (empty when it has none).
    """

    key: str
    kind: str
    default: Any
    value: Any
    doc: str


def _field_docs(section: type) -> dict[str, str]:
    """``{field: doc}`` of the strings right after each field of ``section`` (and its bases)."""
    if section in _DOCS:
        return _DOCS[section]
    docs: dict[str, str] = _DOCS.setdefault(section, {})
    for cls in reversed(section.__mro__):
        if cls is object or not dataclasses.is_dataclass(cls):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
        for statement, following in itertools.pairwise(body):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def _kind(annotation: Any) -> str:
    """A type annotation in words: ``float``, ``one of grid, nearest``, ``int or null``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [_kind(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or null" if type(None) in args else "")
    allowed = literal_values(annotation)
    if allowed is not None:
        return "one of " + ", ".join(map(str, allowed))
    if typing.get_origin(annotation) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_kind(args[0])}"
        return f"list of {len(args)} {_kind(args[0])}"
    return str(getattr(annotation, "__name__", annotation))


def describe_keys(config: Config | None = None) -> list[KeyInfo]:
    """Every settable key of ``config`` (the defaults when None), in file order."""
    config = Config() if config is None else config
    found: list[KeyInfo] = []

    def walk(section: Any, default: Any, prefix: str) -> None:
        hints = typing.get_type_hints(type(section))
        docs = _field_docs(type(section))
        for f in dataclasses.fields(section):
            value, base = getattr(section, f.name), getattr(default, f.name)
            if isinstance(value, Section):
                walk(value, base, f"{prefix}{f.name}.")
                continue
            doc = re.sub(r":\w+:`~?([^`]+)`", r"\1", docs.get(f.name, "")).replace("``", "")
            first = doc.split(". ")[0].rstrip(".")
            found.append(KeyInfo(prefix + f.name, _kind(hints[f.name]), base, value, first))

    defaults = Config()
    for f in dataclasses.fields(config):
        walk(getattr(config, f.name), getattr(defaults, f.name), f"{f.name}.")
    return found
