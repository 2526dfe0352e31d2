"""The DAVIS-2017 folder layout of video object segmentation data, read and written.

::

    ROOT/JPEGImages/480p/<sequence>/00000.jpg, 00001.jpg, ...   frames (any image format)
    ROOT/Annotations/480p/<sequence>/00000.png, ...             index PNGs, 0 = background,
                                                                1..K = objects
    ROOT/ImageSets/2017/val.txt                                 one sequence name per line

Annotations are palette ("P" mode) PNGs whose pixel values are object ids; the colours are
the DAVIS palette (:data:`DAVIS_PALETTE`, the Pascal VOC colour map). Frames and annotations
are paired by file stem. Semi-supervised evaluation needs the first frame's annotation; the
others, when present, are the ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from patchdino.errors import InputError

RESOLUTION = "480p"
YEAR = "2017"
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DavisLayoutError(InputError):
    """The folder does not follow the DAVIS layout; the one-line message says where."""


def _palette() -> list[int]:
    """768 RGB values: colour ``i`` spreads the bits of ``i`` over R, G, B from the top bit."""
    values = []
    for index in range(256):
        rgb = [0, 0, 0]
        bits = index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((bits >> channel) & 1) << shift
            bits >>= 3
        values.extend(rgb)
    return values


DAVIS_PALETTE: list[int] = _palette()
"""Flat ``[r0, g0, b0, r1, ...]`` palette of DAVIS annotations: 0 black, 1 (128, 0, 0),
2 (0, 128, 0), 3 (128, 128, 0), 4 (0, 0, 128), ..."""


@dataclass(frozen=True)
class DavisSequence:
    """One video of a DAVIS-layout folder.

    Attributes:
        name: sequence name (its folder name).
        frames: frame files in temporal order.
        annotations: for each frame, its annotation file or None; the first is never None.
    """

    name: str
    frames: tuple[Path, ...]
    annotations: tuple[Path | None, ...]


def frames_dir(root: Path, name: str, resolution: str = RESOLUTION) -> Path:
    """Folder of the frames of sequence ``name``."""
    return Path(root) / "JPEGImages" / resolution / name


def annotations_dir(root: Path, name: str, resolution: str = RESOLUTION) -> Path:
    """Folder of the annotations of sequence ``name``."""
    return Path(root) / "Annotations" / resolution / name


def split_file(root: Path, split: str = "val", year: str = YEAR) -> Path:
    """The file listing the sequences of ``split``."""
    return Path(root) / "ImageSets" / year / f"{split}.txt"


def read_split(root: Path, split: str = "val", year: str = YEAR) -> list[str]:
    """Sequence names listed for ``split``, in file order.

    Raises:
        DavisLayoutError: the root or the list file is missing, or the list is empty.
    """
    root = Path(root)
    if not root.is_dir():
        raise DavisLayoutError(f"DAVIS folder {root} does not exist")
    path = split_file(root, split, year)
    if not path.is_file():
        raise DavisLayoutError(
            f"{path} is missing: a DAVIS-2017 folder lists its sequences in "
            f"ImageSets/{year}/{split}.txt"
        )
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DavisLayoutError(f"{path} lists no sequences")
    return names


def write_split(root: Path, names: Sequence[str], split: str = "val", year: str = YEAR) -> Path:
    """Write the list of sequences of ``split``; returns its path."""
    path = split_file(root, split, year)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name}\n" for name in names))
    return path


def find_sequences(
    root: Path,
    names: Sequence[str] | None = None,
    split: str = "val",
    resolution: str = RESOLUTION,
    year: str = YEAR,
) -> list[DavisSequence]:
    """The sequences of a DAVIS-layout folder, checked before any work is done.

    Args:
        root: the DAVIS folder.
        names: sequences to keep (all of the split when None); each must be in the split.
        split: which list of ``ImageSets/<year>/`` to read.
        resolution: sub-folder of ``JPEGImages`` and ``Annotations``.
        year: sub-folder of ``ImageSets``.

    Returns:
        The sequences in list order.

    Raises:
        DavisLayoutError: a missing folder or list, an unknown requested name, a sequence
            without frames, without the first frame's annotation, or with a frame or
            annotation of another size than the first frame.
    """
    listed = read_split(root, split, year)
    if names is not None:
        unknown = [name for name in names if name not in listed]
        if unknown:
            raise DavisLayoutError(
                f"sequence {unknown[0]!r} is not listed in {split_file(root, split, year)}"
            )
        listed = [name for name in listed if name in set(names)]
    return [_sequence(Path(root), name, resolution) for name in listed]


def _sequence(root: Path, name: str, resolution: str) -> DavisSequence:
    folder = frames_dir(root, name, resolution)
    if not folder.is_dir():
        raise DavisLayoutError(f"sequence {name!r} has no frame folder {folder}")
    frames = sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)
    if not frames:
        raise DavisLayoutError(f"sequence {name!r} has no frames in {folder}")
    labels = annotations_dir(root, name, resolution)
    annotations = tuple(
        path if (path := labels / f"{frame.stem}.png").is_file() else None for frame in frames
    )
    first = annotations[0]
    if first is None:
        raise DavisLayoutError(
            f"sequence {name!r} has no annotation of its first frame: "
            f"{labels / (frames[0].stem + '.png')} is missing"
        )
    width, height = _image_size(frames[0])
    for path in [*frames[1:], *(a for a in annotations if a is not None)]:
        other = _image_size(path)
        if other != (width, height):
            raise DavisLayoutError(
                f"sequence {name!r}: {path} is {other[0]}x{other[1]} pixels but the first "
                f"frame is {width}x{height}"
            )
    return DavisSequence(name, tuple(frames), annotations)


def _image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the file header."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as err:
        raise DavisLayoutError(f"cannot read image {path}: {err}") from err


def read_mask(path: Path) -> Tensor:
    """An annotation as object ids.

    Returns:
        ``(H, W)`` uint8 tensor of the PNG's palette indices (or grey levels).

    Raises:
        DavisLayoutError: unreadable file, or not a palette or grey-level image.
    """
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise DavisLayoutError(
                    f"annotation {path} is a {image.mode} image; expected an index (palette) PNG"
                )
            array = np.array(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as err:
        raise DavisLayoutError(f"cannot read annotation {path}: {err}") from err
    return torch.from_numpy(array)


def write_mask(path: Path, mask: Tensor | np.ndarray) -> Path:
    """Save ``(H, W)`` object ids (0..255) as a palette PNG with :data:`DAVIS_PALETTE`."""
    array = np.asarray(mask.cpu() if isinstance(mask, Tensor) else mask)
    if array.ndim != 2 or (array.size and (array.min() < 0 or array.max() > 255)):
        raise ValueError(f"a mask is (H, W) with ids in 0..255, got shape {array.shape}")
    height, width = array.shape
    image = Image.frombytes("P", (width, height), np.ascontiguousarray(array, np.uint8).tobytes())
    image.putpalette(DAVIS_PALETTE)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=False)
    return path


def read_frame(path: Path, channels: int = 3) -> Tensor:
    """A frame as ``(channels, H, W)`` uint8 (1: luminance, 3: RGB).

    Raises:
        DavisLayoutError: the file cannot be decoded.
    """
    try:
        with Image.open(path) as image:
            array = np.array(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as err:
        raise DavisLayoutError(f"cannot read frame {path}: {err}") from err
    tensor = torch.from_numpy(array)
    return tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def write_frame(path: Path, frame: Tensor | np.ndarray) -> Path:
    """Save an ``(H, W)`` grey or ``(H, W, 3)`` RGB uint8 frame (format from the suffix)."""
    array = np.asarray(frame.cpu() if isinstance(frame, Tensor) else frame, dtype=np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path
