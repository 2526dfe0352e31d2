"""The kinds of data set this package reads: one record per kind, detection, opening.

Every fact about a kind lives in its :class:`DataKind` record of :data:`KINDS`: how to open
it, how to recognise its folder, its usual normalisation statistics, whether it is held in
memory or read from image files, its native channels and its canvas when none is configured.
Adding a kind means adding one record here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from patchdino.config import Config
from patchdino.config.checks import literal_values
from patchdino.config.data import DatasetKind
from patchdino.data.datasets.bad_images import check_policy
from patchdino.data.datasets.base import CanvasDataset
from patchdino.data.datasets.files import (
    IMG_EXTENSIONS,
    FlatFolderDataset,
    ImageFolderDataset,
    has_image_file,
    has_split_layout,
    is_image_file,
    subfolders,
)
from patchdino.data.datasets.in_memory import (
    CIFAR_FOLDERS,
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    MNIST_CLASSES,
    CIFARDataset,
    IdxDataset,
    find_idx_dir,
)

Opener = Callable[[Path, str, int | None, int | None, str], CanvasDataset]
"""``open(root, split, canvas, channels, on_bad_image)``: one split of a data set of a kind."""

Statistics = tuple[tuple[float, ...], tuple[float, ...]]
"""``(mean, std)`` per channel, in ``[0, 1]`` pixel units."""

IMAGENET_STATISTICS: Statistics = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
FILE_CANVAS = 320
"""Canvas of image files when none is configured: room for 224 px crops."""
DEFAULT_CANVAS = 256
"""Canvas of :func:`build_dataset` when the caller gives none."""


@dataclass(frozen=True)
class DataKind:
    """Everything the package knows about one kind of data set.

    Attributes:
        name: the kind's name in configs and on the command line (``data.kind``).
        open: opens one split (see :data:`Opener`); arguments are already checked.
        detect: whether a folder holds this kind (see :func:`detect_kind` for the order).
        layout: one line describing the folder layout, for error messages.
        mean: usual per-channel normalisation mean (1 or 3 entries).
        std: usual per-channel normalisation standard deviation.
        channels: native channels of the images (1 or 3).
        in_memory: True when a split is read at once into a ``(N, C, H, W)`` uint8 tensor;
            False for image files decoded one at a time by loader workers.
        canvas: canvas when none is configured: None keeps native sizes (in-memory kinds
            share one size), :data:`FILE_CANVAS` for image files.
        default_root: where the data set lives when no folder is given, if anywhere.
    """

    name: str
    open: Opener
    detect: Callable[[Path], bool]
    layout: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int
    in_memory: bool
    canvas: int | None
    default_root: Path | None = None

    @property
    def statistics(self) -> Statistics:
        """``(mean, std)`` of the kind."""
        return self.mean, self.std


def _cifar_folder(path: Path, num_classes: int) -> bool:
    folder = CIFAR_FOLDERS[num_classes]
    return path.name == folder or (path / folder).is_dir()


def _is_cifar10(path: Path) -> bool:
    batches = (path / "data_batch_1").is_file() and (path / "test_batch").is_file()
    return _cifar_folder(path, 10) or (batches and not _cifar_folder(path, 100))


def _idx_kind(path: Path) -> str | None:
    """``"mnist"`` or ``"fashion_mnist"`` for a folder of IDX files (by its name), else None."""
    folder = find_idx_dir(path)
    if folder is None:
        return None
    names = " ".join(p.name.lower() for p in (folder, folder.parent))
    return "mnist" if "mnist" in names and "fashion" not in names else "fashion_mnist"


def _is_imagefolder(path: Path) -> bool:
    return has_split_layout(path) or any(has_image_file(d) for d in subfolders(path))


def _is_flat(path: Path) -> bool:
    return any(is_image_file(p) and p.is_file() for p in path.iterdir())


def _open_idx(classes: list[str]) -> Opener:
    def open_idx(
        root: Path, split: str, canvas: int | None, channels: int | None, on_bad_image: str
    ) -> CanvasDataset:
        return IdxDataset(root, split, canvas, channels, classes)

    return open_idx


def _open_cifar(num_classes: int) -> Opener:
    def open_cifar(
        root: Path, split: str, canvas: int | None, channels: int | None, on_bad_image: str
    ) -> CanvasDataset:
        return CIFARDataset(root, num_classes, split, canvas, channels)

    return open_cifar


_RECORDS = (
    DataKind(
        name="imagefolder",
        open=ImageFolderDataset,
        detect=_is_imagefolder,
        layout="class sub-folders of images, optionally inside train/ and val/",
        mean=IMAGENET_STATISTICS[0],
        std=IMAGENET_STATISTICS[1],
        channels=3,
        in_memory=False,
        canvas=FILE_CANVAS,
    ),
    DataKind(
        name="flat",
        open=FlatFolderDataset,
        detect=_is_flat,
        layout="images without class sub-folders (unlabelled)",
        mean=IMAGENET_STATISTICS[0],
        std=IMAGENET_STATISTICS[1],
        channels=3,
        in_memory=False,
        canvas=FILE_CANVAS,
    ),
    DataKind(
        name="cifar10",
        open=_open_cifar(10),
        detect=_is_cifar10,
        layout="cifar-10-batches-py/ (data_batch_1..5, test_batch) or its parent",
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        channels=3,
        in_memory=True,
        canvas=None,
    ),
    DataKind(
        name="cifar100",
        open=_open_cifar(100),
        detect=lambda path: _cifar_folder(path, 100),
        layout="cifar-100-python/ (train, test) or its parent",
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        channels=3,
        in_memory=True,
        canvas=None,
    ),
    DataKind(
        name="fashion_mnist",
        open=_open_idx(FASHION_MNIST_CLASSES),
        detect=lambda path: _idx_kind(path) == "fashion_mnist",
        layout="train-images-idx3-ubyte[.gz], t10k-... files (or their raw/ sub-folder)",
        mean=(0.2860,),
        std=(0.3530,),
        channels=1,
        in_memory=True,
        canvas=None,
        default_root=DEFAULT_FASHION_MNIST_DIR,
    ),
    DataKind(
        name="mnist",
        open=_open_idx(MNIST_CLASSES),
        detect=lambda path: _idx_kind(path) == "mnist",
        layout="the same IDX files in a folder named *mnist* (not *fashion*)",
        mean=(0.1307,),
        std=(0.3081,),
        channels=1,
        in_memory=True,
        canvas=None,
    ),
)

KINDS: dict[str, DataKind] = {kind.name: kind for kind in _RECORDS}
"""Every data set kind by name."""
DATASET_KINDS: tuple[str, ...] = tuple(KINDS)
"""Names of the kinds (``data.kind`` also accepts ``"auto"``)."""
if DATASET_KINDS != literal_values(DatasetKind):
    raise ImportError(  # the registry and the config's type must name the same kinds
        f"data set kinds {DATASET_KINDS} differ from patchdino.config.DatasetKind "
        f"{literal_values(DatasetKind)}"
    )
FILE_KINDS: tuple[str, ...] = tuple(k.name for k in _RECORDS if not k.in_memory)
"""Kinds read from image files, one at a time."""
AUTO_DEFAULT_KIND = "fashion_mnist"
"""Kind whose default folder an empty path means when the kind is ``"auto"``."""


def get_kind(name: str) -> DataKind:
    """The record of the kind called ``name``.

    Raises:
        ValueError: ``name`` is not a kind (the message lists the kinds).
    """
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(
            f"unknown data set kind {name!r}; expected 'auto' or one of {DATASET_KINDS}"
        ) from None


def statistics(name: str) -> Statistics:
    """``(mean, std)`` usual for the kind ``name``; ImageNet's for any other name."""
    return KINDS[name].statistics if name in KINDS else IMAGENET_STATISTICS


def normalisation(config: Config, kind: str, channels: int) -> tuple[tuple[float, ...], ...]:
    """``(mean, std)`` of the configured or usual statistics, with ``channels`` entries.

    The usual statistics are the kind's (:func:`~patchdino.data.datasets.statistics`);
    ImageNet's for any other ``kind`` name.
    """
    if config.data.mean is not None and config.data.std is not None:
        mean, std = config.data.mean, config.data.std
    else:
        mean, std = statistics(kind)
    if len(mean) == channels:
        return mean, std
    if channels == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    return mean * 3, std * 3


def canvas_for(name: str, canvas: int | None) -> int | None:
    """The configured ``canvas``, else the kind's own (:attr:`DataKind.canvas`)."""
    return get_kind(name).canvas if canvas is None else canvas


def default_root(name: str) -> Path | None:
    """Where the kind ``name`` (or ``"auto"``) lives when no folder is given, if anywhere."""
    return get_kind(AUTO_DEFAULT_KIND if name == "auto" else name).default_root


def _describe(path: Path) -> str:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    if not entries:
        return "it is empty"
    shown = ", ".join(entries[:8]) + (f" and {len(entries) - 8} more" if len(entries) > 8 else "")
    return f"found {shown}"


def _detection_order() -> list[DataKind]:
    """In-memory kinds (precise file names) first, then folders of images, each in order."""
    return sorted(_RECORDS, key=lambda kind: not kind.in_memory)


def detect_kind(path: str | Path) -> str:
    """Guess the kind of data set stored at ``path`` from its contents.

    Kinds are tried in :func:`_detection_order`: the named files of in-memory kinds first,
    then class sub-folders, then loose images.

    Returns:
        One of :data:`DATASET_KINDS`.

    Raises:
        ValueError: ``path`` is not a folder, or no known layout matches (the message lists
            what was found and the known layouts).
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"data set path {path} does not exist or is not a folder")
    order = _detection_order()
    for kind in order:
        if kind.detect(path):
            return kind.name
    layouts = "\n".join(f"  {kind.name:<14} {kind.layout}" for kind in order)
    raise ValueError(
        f"cannot tell which kind of data set {path} holds: {_describe(path)}, and no image "
        f"files ({' '.join(IMG_EXTENSIONS)}) at any depth.\n"
        f"known kinds and their layouts:\n{layouts}\n"
        "Pass the kind explicitly if the layout is one of these."
    )


def build_dataset(
    path: str | Path,
    kind: str = "auto",
    split: str = "train",
    canvas: int | None = DEFAULT_CANVAS,
    channels: int | None = None,
    on_bad_image: str = "skip",
) -> CanvasDataset:
    """Open the data set at ``path``; items are ``(image, size, label)`` on a square canvas.

    Args:
        path: data set folder (see :func:`detect_kind` for the layouts).
        kind: one of :data:`DATASET_KINDS`, or "auto" to detect it from the contents.
        split: "train", "val" or "test".
        canvas: side of the square canvas the longer image side is resized to, or None to
            keep native sizes (for data sets whose images all share one size).
        channels: 1 or 3, or None for the native count (1 for MNIST-like, 3 otherwise).
        on_bad_image: "skip" or "fail" for unreadable files of file-based kinds.

    Returns:
        The data set; ``classes``/``num_classes`` are None for unlabelled kinds.
    """
    check_policy(on_bad_image)
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1, 3 or None, got {channels}")
    record = get_kind(detect_kind(path) if kind == "auto" else kind)
    return record.open(Path(path), split, canvas, channels, on_bad_image)
