"""Locate Fashion-MNIST on this machine, installing or downloading it when missing."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from patchdino.data.datasets.idx import find_idx_dir, idx_files

logger = logging.getLogger("patchdino.data")

DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` puts the four IDX files."""

APT_PACKAGE = "dataset-fashion-mnist"


def cache_dir() -> Path:
    """Download folder: ``$PATCHDINO_CACHE/fashion-mnist``, else ``~/.cache/patchdino/...``."""
    root = os.environ.get("PATCHDINO_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "patchdino"
    return base / "fashion-mnist"


def complete_idx_dir(root: Path) -> Path | None:
    """The folder under ``root`` holding train and test IDX files, or None."""
    folder = find_idx_dir(root) if root.is_dir() else None
    if folder is None or idx_files(folder, "train") is None or idx_files(folder, "test") is None:
        return None
    return folder


def _try_apt() -> str | None:
    """Install the Debian package; returns why it was not possible, or None on success."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "apt-get skipped: not running as root"
    if shutil.which("apt-get") is None:
        return "apt-get skipped: apt-get not found"
    logger.info("installing Fashion-MNIST with apt-get install -y %s", APT_PACKAGE)
    result = subprocess.run(["apt-get", "install", "-y", APT_PACKAGE], check=False)
    if result.returncode != 0:
        return f"apt-get install -y {APT_PACKAGE} failed with exit status {result.returncode}"
    return None


def _try_torchvision(target: Path) -> str | None:
    """Download with torchvision; returns why it failed, or None on success."""
    from torchvision.datasets import FashionMNIST

    logger.info("downloading Fashion-MNIST with torchvision into %s", target)
    try:
        for train in (True, False):
            FashionMNIST(str(target), train=train, download=True)
    except Exception as error:  # network and archive errors come in many types
        return f"torchvision download into {target} failed: {type(error).__name__}: {error}"
    return None


def ensure_fashion_mnist(dest: Path | None = None) -> Path:
    """Return a folder holding Fashion-MNIST's four IDX files, fetching them if needed.

    Looks in ``dest``, :data:`DEFAULT_FASHION_MNIST_DIR` and :func:`cache_dir`; then, as
    root with apt-get available, installs the ``dataset-fashion-mnist`` package; then
    downloads with torchvision into ``dest`` (default :func:`cache_dir`).

    Raises:
        RuntimeError: every way failed; the message says why for each.
    """
    target = Path(dest) if dest is not None else cache_dir()
    for root in dict.fromkeys([target, DEFAULT_FASHION_MNIST_DIR, cache_dir()]):
        found = complete_idx_dir(root)
        if found is not None:
            return found
    failures = []
    failure = _try_apt()
    found = complete_idx_dir(DEFAULT_FASHION_MNIST_DIR) if failure is None else None
    if found is not None:
        return found
    failures.append(failure or f"no IDX files in {DEFAULT_FASHION_MNIST_DIR} after apt-get")
    failure = _try_torchvision(target)
    found = complete_idx_dir(target) if failure is None else None
    if found is not None:
        return found
    failures.append(failure or f"no IDX files in {target} after the download")
    raise RuntimeError(
        "Fashion-MNIST is not available: " + "; ".join(failures) + ". Install the Debian "
        f"package {APT_PACKAGE} or place train-/t10k- images-idx3-ubyte and labels-idx1-ubyte "
        f"files in {DEFAULT_FASHION_MNIST_DIR} or {target}"
    )
