"""Load pickled data files without running code from them.

Pickles can call any importable function while loading, so a data file downloaded from the
internet could run commands. This unpickler resolves only plain containers and the numpy
functions that rebuild arrays; any other reference is refused before it is called.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np


def _numpy_function(name: str, modules: tuple[str, ...]) -> Any:
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy provides no {name} in {modules}")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode``, which pickle protocols <= 2 use to store bytes."""
    if encoding.lower().replace("-", "_") not in ("latin1", "latin_1", "iso8859_1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")


def _allowed() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {}
    for module in ("builtins", "__builtin__"):
        for kind in (dict, list, bytes, str, int):
            allowed[(module, kind.__name__)] = kind
    reconstruct = _numpy_function("_reconstruct", _MULTIARRAY)
    scalar = _numpy_function("scalar", _MULTIARRAY)
    frombuffer = _numpy_function("_frombuffer", _NUMERIC)
    for module in _MULTIARRAY:
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    for module in _NUMERIC:
        allowed[(module, "_frombuffer")] = frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


class UnsafePickleError(ValueError):
    """A pickle file refers to something other than containers and numpy arrays."""


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified_name = f"{module}.{name}"


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only builtins dict/list/bytes/str/int and numpy arrays."""

    _ALLOWED = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise _RefusedGlobal(module, name) from None


def load_restricted_pickle(path: Path) -> Any:
    """Unpickle a data file that may only hold plain containers and numpy arrays.

    Python 2 strings are read as latin-1, as numpy needs for arrays pickled by Python 2.

    Raises:
        UnsafePickleError: the file refers to anything else (nothing of it is run).
        ValueError: the file is not a readable pickle.
    """
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f, encoding="latin1").load()
        except _RefusedGlobal as error:
            raise UnsafePickleError(
                f"refusing to load {path}: it refers to {error.qualified_name}, which is neither "
                "a plain container nor a numpy array. The file may be malicious or not a data "
                "batch; download it again from the data set's official source"
            ) from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as error:
            raise ValueError(f"{path} is not a valid pickle file: {error}") from error
