"""``patchdino config``: the settings, their types, defaults and docs, and a resolved config.

``config keys`` lists every key; ``config show [NAME|FILE] [key=value ...]`` prints the
configuration a run with that file and those overrides would use, each key with its type,
default and doc (the docs are those of the config dataclasses, ``src/patchdino/config/``).
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True, help="keys or show")
    keys = sub.add_parser("keys", help="every config key with its type, default and doc")
    keys.add_argument("--section", help="only the keys of this section (e.g. loss.terms)")
    show = sub.add_parser(
        "show", help="the resolved config of a file or packaged config, with overrides"
    )
    show.add_argument(
        "config",
        nargs="?",
        help="a YAML file or packaged config name (default: the library defaults)",
    )
    show.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    show.add_argument("--section", help="only the keys of this section")
    show.add_argument("--yaml", action="store_true", help="print plain YAML (a config file)")


def _text(value: Any) -> str:
    """A value as it is written in overrides (JSON, which YAML reads)."""
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def run(args: argparse.Namespace) -> int:
    from patchdino.cli.errors import UsageError
    from patchdino.config import Config, load_config
    from patchdino.config.describe import describe_keys

    config = Config()
    if args.action == "show":
        source, overrides = args.config, list(args.overrides)
        if source is not None and "=" in source and not source.endswith((".yaml", ".yml")):
            source, overrides = None, [source, *overrides]  # only overrides were given
        config = load_config(source, overrides)
        if args.yaml:
            print(config.to_yaml(), end="")
            return 0
    keys = describe_keys(config)
    if args.section:
        prefix = args.section.rstrip(".") + "."
        keys = [k for k in keys if k.key.startswith(prefix)]
        if not keys:
            sections = sorted({".".join(k.key.split(".")[:-1]) for k in describe_keys()})
            raise UsageError(f"no section '{args.section}' (sections: {', '.join(sections)})")
    width = max(len(k.key) for k in keys)
    for k in keys:
        if args.action == "keys":
            print(f"{k.key:<{width}}  {k.kind}; default {_text(k.default)}")
        else:
            changed = "" if k.value == k.default else f" (default {_text(k.default)})"
            print(f"{k.key:<{width}}  = {_text(k.value)}{changed}    # {k.kind}")
        if k.doc:
            print(f"{'':<{width}}    {k.doc}")
    return 0
