"""Tell which kind of data set a folder holds."""

from __future__ import annotations

from pathlib import Path

from patchdino.data.datasets.cifar import CIFAR_FOLDERS
from patchdino.data.datasets.files import (
    IMG_EXTENSIONS,
    has_image_file,
    has_split_layout,
    is_image_file,
    subfolders,
)
from patchdino.data.datasets.idx import find_idx_dir

DATASET_KINDS = ("imagefolder", "flat", "cifar10", "cifar100", "fashion_mnist", "mnist")

_LAYOUTS = """known kinds and their layouts:
  cifar10        cifar-10-batches-py/ (data_batch_1..5, test_batch) or its parent
  cifar100       cifar-100-python/ (train, test) or its parent
  fashion_mnist  train-images-idx3-ubyte[.gz], t10k-... files (mnist: folder named *mnist*)
  imagefolder    class sub-folders of images, optionally inside train/ and val/
  flat           images without class sub-folders (unlabelled)"""


def _idx_kind(folder: Path) -> str:
    names = " ".join(p.name.lower() for p in (folder, folder.parent))
    return "mnist" if "mnist" in names and "fashion" not in names else "fashion_mnist"


def _describe(path: Path) -> str:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    if not entries:
        return "it is empty"
    shown = ", ".join(entries[:8]) + (f" and {len(entries) - 8} more" if len(entries) > 8 else "")
    return f"found {shown}"


def detect_kind(path: str | Path) -> str:
    """Guess the kind of data set stored at ``path`` from its contents.

    Returns:
        One of :data:`DATASET_KINDS`.

    Raises:
        ValueError: ``path`` is not a folder, or no known layout matches (the message lists
            what was found and the known layouts).
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"data set path {path} does not exist or is not a folder")
    for num_classes, folder in CIFAR_FOLDERS.items():
        if path.name == folder or (path / folder).is_dir():
            return f"cifar{num_classes}"
    if (path / "data_batch_1").is_file() and (path / "test_batch").is_file():
        return "cifar10"
    idx_dir = find_idx_dir(path)
    if idx_dir is not None:
        return _idx_kind(idx_dir)
    if has_split_layout(path):
        return "imagefolder"
    if any(has_image_file(d) for d in subfolders(path)):
        return "imagefolder"
    if any(is_image_file(p) and p.is_file() for p in path.iterdir()):
        return "flat"
    raise ValueError(
        f"cannot tell which kind of data set {path} holds: {_describe(path)}, and no image "
        f"files ({' '.join(IMG_EXTENSIONS)}) at any depth.\n{_LAYOUTS}\n"
        "Pass the kind explicitly if the layout is one of these."
    )
