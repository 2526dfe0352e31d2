"""Typed run configuration: the bottom layer, importing nothing else of patchdino.

One dataclass per section (``data``, ``views``, ``model``, ``loss``, ``optim``, ``run``), each
with its defaults, its allowed values (``Literal`` annotations, read back with
:func:`~patchdino.config.checks.literal_values` by the modules that need the tuple) and its
own checks; :func:`load_config` reads YAML files and ``key=value`` overrides and reports every
problem at once.
"""

from patchdino.config.checks import literal_values
from patchdino.config.data import BadImagePolicy, DataConfig, DatasetKind
from patchdino.config.loading import (
    PACKAGED_CONFIGS,
    ConfigError,
    config_from_dict,
    config_keys,
    flatten_tree,
    load_config,
    packaged_config_names,
    parse_override,
    resolve_config_path,
)
from patchdino.config.loss import (
    OLD_KEYS,
    ClsTermConfig,
    KoLeoTermConfig,
    LossConfig,
    MaskedTermConfig,
    PatchTermConfig,
    TermConfig,
    TermsConfig,
)
from patchdino.config.model import ModelConfig
from patchdino.config.optim import OptimConfig
from patchdino.config.run import RunConfig
from patchdino.config.schema import Config, validate
from patchdino.config.views import ViewsConfig

__all__ = [
    "OLD_KEYS",
    "PACKAGED_CONFIGS",
    "BadImagePolicy",
    "ClsTermConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DatasetKind",
    "KoLeoTermConfig",
    "LossConfig",
    "MaskedTermConfig",
    "ModelConfig",
    "OptimConfig",
    "PatchTermConfig",
    "RunConfig",
    "TermConfig",
    "TermsConfig",
    "ViewsConfig",
    "config_from_dict",
    "config_keys",
    "flatten_tree",
    "literal_values",
    "load_config",
    "packaged_config_names",
    "parse_override",
    "resolve_config_path",
    "validate",
]
