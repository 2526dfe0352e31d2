"""Seeded strong copies: same seed, same bytes; their ground truth."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patchdino.data.datasets import InMemoryDataset
from patchdino.eval.retrieval.copies import (
    CopyError,
    CopySettings,
    make_queries,
    random_crop_box,
    strong_copy,
)


def _dataset(n: int = 12, channels: int = 3, side: int = 40) -> InMemoryDataset:
    images = torch.randint(
        0, 256, (n, channels, side, side), generator=torch.Generator().manual_seed(0)
    )
    return InMemoryDataset(images.to(torch.uint8), torch.arange(n) % 3, ["a", "b", "c"], None)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    data = _dataset()
    names = [str(i) for i in range(len(data))]
    first = make_queries(data, names, tmp_path / "a", 8, seed=3, progress=False)
    second = make_queries(data, names, tmp_path / "b", 8, seed=3, progress=False)
    other = make_queries(data, names, tmp_path / "c", 8, seed=4, progress=False)
    assert _files(first.folder) == _files(second.folder)
    assert first.ground_truth.read_bytes() == second.ground_truth.read_bytes()
    assert _files(first.folder) != _files(other.folder)
    # A larger count adds copies and keeps the first ones.
    more = make_queries(data, names, tmp_path / "d", 10, seed=3, progress=False)
    assert {k: v for k, v in _files(more.folder).items() if k in _files(first.folder)} == _files(
        first.folder
    )


def test_ground_truth_and_manifest(tmp_path: Path) -> None:
    data = _dataset(channels=1)
    names = [f"img{i}" for i in range(len(data))]
    made = make_queries(data, names, tmp_path, 6, seed=0, progress=False)
    truth = json.loads(made.ground_truth.read_text())
    assert sorted(truth) == sorted(p.name for p in made.folder.iterdir())
    originals = [v[0] for v in truth.values()]
    assert len(set(originals)) == 6 and set(originals) <= set(names)
    manifest = json.loads(made.manifest.read_text())
    assert manifest["seed"] == 0 and len(manifest["copies"]) == 6
    for record in manifest["copies"]:
        assert 10 <= record["quality"] <= 50
        with Image.open(made.folder / record["query"]) as image:
            assert image.mode == "L" and list(image.size[::-1]) == record["size"]


def test_crops_keep_ten_to_fifty_percent_of_the_area() -> None:
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(200):
        _, _, h, w = random_crop_box(100, 120, (0.1, 0.5), rng)
        shares.append(h * w / (100 * 120))
    assert 0.095 <= min(shares) and max(shares) <= 0.51


def test_every_transform_can_apply() -> None:
    settings = CopySettings(p_rotate=1, p_flip=1, p_jitter=1, p_gray=1, p_blur=1, p_overlay=1)
    image = torch.randint(0, 256, (3, 64, 48), dtype=torch.uint8)
    data, params = strong_copy(image, image.flip(1), np.random.default_rng(1), settings)
    assert {"angle", "flip", "jitter", "gray", "blur", "overlay"} <= set(params)
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.format == "JPEG" and min(decoded.size) >= 8


def test_refuses_impossible_counts_and_used_folders(tmp_path: Path) -> None:
    data = _dataset(n=4)
    names = [str(i) for i in range(4)]
    with pytest.raises(CopyError, match=r"must lie in \[1, 4\]"):
        make_queries(data, names, tmp_path / "x", 5, seed=0, progress=False)
    make_queries(data, names, tmp_path / "y", 2, seed=0, progress=False)
    with pytest.raises(CopyError, match="already holds files"):
        make_queries(data, names, tmp_path / "y", 2, seed=0, progress=False)
