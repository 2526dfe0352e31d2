"""The revisited Oxford and Paris benchmarks: folder layout, ground truth and the converter.

Layout of a benchmark folder (e.g. ``roxford5k/``)::

    jpg/<name>.jpg          every database image and every query image
    gnd_roxford5k.json      the ground truth (any one ``gnd*.json`` of the folder)

The ground truth is the JSON form of the official ``gnd_*.pkl``: an object with ``imlist``
(database image names, without extension), ``qimlist`` (query image names) and ``gnd``, one
entry per query with ``bbx`` (the query box ``[x1, y1, x2, y2]`` in pixels) and the database
indices ``easy``, ``hard`` and ``junk``. :func:`convert_ground_truth` writes it from the official
pickle, read by a restricted unpickler (:func:`~patchdino.data.datasets.load_restricted_pickle`)
that resolves nothing but plain containers, strings, numbers and numpy arrays, so a tampered
file cannot run code.

Query images are cropped to their box; the three settings of the protocol are Easy (positives:
easy; junk: junk and hard), Medium (easy and hard; junk) and Hard (hard; junk and easy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from patchdino.data.datasets.bad_images import BadImageError
from patchdino.data.datasets.base import CanvasItem
from patchdino.data.datasets.canvas import decode_image, resize_to_canvas
from patchdino.errors import InputError
from patchdino.eval.common.eval_data import SCAN_CANVAS
from patchdino.eval.retrieval.retrieval_metrics import revisited_average_precision

IMAGES = "jpg"
"""Sub-folder of the images."""
SETTINGS = ("easy", "medium", "hard")
"""The protocol's settings."""
_POSITIVE = {"easy": ("easy",), "medium": ("easy", "hard"), "hard": ("hard",)}
_JUNK = {"easy": ("junk", "hard"), "medium": ("junk",), "hard": ("junk", "easy")}


class RevisitedError(InputError):
    """A revisited benchmark folder or ground truth that cannot be used; the message says why."""


@dataclass(frozen=True)
class QueryTruth:
    """Ground truth of one query.

    Attributes:
        box: ``(x1, y1, x2, y2)`` query box in pixels, or None for the whole image.
        easy: database indices of the easy positives.
        hard: database indices of the hard positives.
        junk: database indices ignored in every setting.
    """

    box: tuple[float, float, float, float] | None
    easy: list[int]
    hard: list[int]
    junk: list[int]


@dataclass(frozen=True)
class RevisitedTruth:
    """The ground truth of a benchmark.

    Attributes:
        images: database image names.
        queries: query image names.
        truth: one :class:`QueryTruth` per query.
    """

    images: list[str]
    queries: list[str]
    truth: list[QueryTruth]

    def masks(self, setting: str) -> tuple[Tensor, Tensor]:
        """``(Q, N)`` bool positives and ``(Q, N)`` bool junk of ``setting``."""
        if setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
        shape = (len(self.queries), len(self.images))
        positive = torch.zeros(shape, dtype=torch.bool)
        junk = torch.zeros(shape, dtype=torch.bool)
        for mask, fields in ((positive, _POSITIVE[setting]), (junk, _JUNK[setting])):
            rows, cols = _pairs([[i for f in fields for i in getattr(t, f)] for t in self.truth])
            mask[rows, cols] = True
        return positive, junk


def _pairs(lists: list[list[int]]) -> tuple[Tensor, Tensor]:
    """Row and column indices of a ragged list of column lists."""
    rows = torch.tensor([r for r, cols in enumerate(lists) for _ in cols], dtype=torch.long)
    cols = torch.tensor([c for cols in lists for c in cols], dtype=torch.long)
    return rows, cols


def _plain(value: Any) -> Any:
    """numpy arrays and scalars as lists and Python numbers, recursively."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def parse_ground_truth(tree: Any, source: str) -> RevisitedTruth:
    """Check the official structure and turn it into a :class:`RevisitedTruth`.

    Raises:
        RevisitedError: a missing key, a wrong type, or an index outside the database.
    """
    tree = _plain(tree)
    if not isinstance(tree, dict) or not {"imlist", "qimlist", "gnd"} <= set(tree):
        raise RevisitedError(f"{source} must hold an object with imlist, qimlist and gnd")
    images, queries, entries = tree["imlist"], tree["qimlist"], tree["gnd"]
    for key, names in (("imlist", images), ("qimlist", queries)):
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise RevisitedError(f"{source}: {key} must be a non-empty list of image names")
    if not isinstance(entries, list) or len(entries) != len(queries):
        raise RevisitedError(f"{source}: gnd must hold one entry per query ({len(queries)})")
    truth = []
    for q, entry in enumerate(entries):
        where = f"{source}: gnd[{q}] ({queries[q]})"
        if not isinstance(entry, dict):
            raise RevisitedError(f"{where} must be an object")
        lists = {}
        for key in ("easy", "hard", "junk"):
            values = entry.get(key, [])
            if not isinstance(values, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(images)
                for v in values
            ):
                raise RevisitedError(
                    f"{where}: {key} must list database indices in [0, {len(images)})"
                )
            lists[key] = [int(v) for v in values]
        box = entry.get("bbx")
        if box is not None:
            if not (
                isinstance(box, list)
                and len(box) == 4
                and all(isinstance(v, (int, float)) for v in box)
                and box[2] > box[0]
                and box[3] > box[1]
            ):
                raise RevisitedError(f"{where}: bbx must be [x1, y1, x2, y2] with x1 < x2, y1 < y2")
            box = tuple(float(v) for v in box)
        truth.append(QueryTruth(box, lists["easy"], lists["hard"], lists["junk"]))
    return RevisitedTruth(list(images), list(queries), truth)


def read_ground_truth(path: str | Path) -> RevisitedTruth:
    """Read the JSON ground truth of a benchmark.

    Raises:
        RevisitedError: a missing or unreadable file, or a wrong structure.
    """
    path = Path(path)
    if not path.is_file():
        raise RevisitedError(f"ground-truth file {path} does not exist")
    try:
        tree = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RevisitedError(f"ground-truth file {path} is not readable JSON: {err}") from err
    return parse_ground_truth(tree, str(path))


def convert_ground_truth(pickle_path: str | Path, json_path: str | Path) -> RevisitedTruth:
    """Write the JSON form of an official ``gnd_*.pkl`` and return it.

    Raises:
        RevisitedError: a missing file, a pickle that refers to anything but plain data (nothing
            of it is run), or a structure that is not the benchmark's.
    """
    from patchdino.data.datasets import load_restricted_pickle

    source = Path(pickle_path)
    if not source.is_file():
        raise RevisitedError(f"ground-truth pickle {source} does not exist")
    try:
        tree = load_restricted_pickle(source)
    except ValueError as err:
        raise RevisitedError(str(err).splitlines()[0]) from err
    truth = parse_ground_truth(tree, str(source))
    plain = {
        "imlist": truth.images,
        "qimlist": truth.queries,
        "gnd": [
            {"bbx": None if t.box is None else list(t.box), "easy": t.easy, "hard": t.hard,
             "junk": t.junk}
            for t in truth.truth
        ],
    }  # fmt: skip
    target = Path(json_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(plain) + "\n")
    return truth


def find_ground_truth(root: str | Path) -> Path | None:
    """The single ``gnd*.json`` of a benchmark folder, or None when it has none.

    Raises:
        RevisitedError: several candidates.
    """
    found = sorted(Path(root).glob("gnd*.json"))
    if len(found) > 1:
        raise RevisitedError(
            f"{root} holds several ground truths ({', '.join(p.name for p in found)}); "
            "choose one with --ground-truth"
        )
    return found[0] if found else None


def is_revisited(root: str | Path) -> bool:
    """Whether ``root`` looks like a revisited benchmark folder (``jpg/`` and ``gnd*.json``)."""
    root = Path(root)
    return (root / IMAGES).is_dir() and any(root.glob("gnd*.json"))


def image_path(root: Path, name: str) -> Path:
    """File of image ``name`` (``jpg/<name>.jpg``; a name with its extension is kept)."""
    folder = root / IMAGES
    direct = folder / name
    return direct if direct.suffix.lower() in (".jpg", ".jpeg", ".png") else folder / f"{name}.jpg"


def check_images(root: str | Path, truth: RevisitedTruth) -> tuple[list[Path], list[Path]]:
    """Files of the database and query images, all checked to exist and to decode.

    The ground truth refers to every image by its position, so none can be left out: an
    unreadable one stops the evaluation (whatever ``--on-bad-image`` says).

    Raises:
        RevisitedError: missing or unreadable images (the message counts and names a few).
    """
    root = Path(root)
    database = [image_path(root, n) for n in truth.images]
    queries = [image_path(root, n) for n in truth.queries]
    missing = sorted({str(p) for p in database + queries if not p.is_file()})
    if missing:
        raise RevisitedError(
            f"{len(missing)} images of the ground truth are missing, e.g. {', '.join(missing[:3])}"
        )
    unreadable = []
    for path in sorted(set(database + queries)):
        try:
            decode_image(path, 3, SCAN_CANVAS)
        except BadImageError as err:
            unreadable.append(f"{path} ({err.reason})")
    if unreadable:
        raise RevisitedError(
            f"{len(unreadable)} images of the ground truth cannot be read, e.g. "
            f"{', '.join(unreadable[:3])}; the protocol needs every one: replace them"
        )
    return database, queries


class BoxedImages(Dataset[CanvasItem]):
    """Image files, each cropped to its box (if any) and fitted onto a square canvas.

    Args:
        paths: image files.
        boxes: ``(x1, y1, x2, y2)`` per file, or None to keep the whole image.
        channels: 1 or 3.
        canvas: side of the canvas the longer side is resized to (None: native size).
    """

    def __init__(
        self,
        paths: list[Path],
        boxes: list[tuple[float, float, float, float] | None],
        channels: int,
        canvas: int | None,
    ) -> None:
        if len(paths) != len(boxes):
            raise ValueError(f"{len(paths)} files but {len(boxes)} boxes")
        self.paths = paths
        self.boxes = boxes
        self.channels = channels
        self.canvas = canvas

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> CanvasItem:
        image = decode_image(self.paths[index], self.channels, None)  # (C, H, W)
        box = self.boxes[index]
        if box is not None:
            height, width = int(image.shape[1]), int(image.shape[2])
            x1, y1 = (min(max(0, round(v)), m - 1) for v, m in zip(box[:2], (width, height)))
            x2 = min(max(x1 + 1, round(box[2])), width)
            y2 = min(max(y1 + 1, round(box[3])), height)
            image = image[:, y1:y2, x1:x2]
        canvas_image, size = resize_to_canvas(image, self.canvas)
        return canvas_image, size, -1


def revisited_map(scores: Tensor, truth: RevisitedTruth) -> dict[str, float]:
    """mAP in % of each setting (queries without positives in a setting are left out).

    Args:
        scores: ``(Q, N)`` similarities of the queries to the database.
        truth: the benchmark's ground truth.
    """
    result = {}
    for setting in SETTINGS:
        positive, junk = truth.masks(setting)
        ap = revisited_average_precision(scores, positive, junk)
        kept = ap[~torch.isnan(ap)]
        result[setting] = float(kept.mean() * 100) if kept.numel() else float("nan")
    return result
