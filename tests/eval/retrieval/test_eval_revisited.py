"""Revisited Oxford/Paris: ground truth, the restricted converter, query boxes, mAP."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from patchdino.eval.retrieval.revisited import (
    BoxedImages,
    RevisitedError,
    check_images,
    convert_ground_truth,
    parse_ground_truth,
    read_ground_truth,
    revisited_map,
)


def official_tree() -> dict[str, Any]:
    """The structure of an official gnd_*.pkl: numpy index arrays, float boxes."""
    return {
        "imlist": ["d0", "d1", "d2", "d3", "d4", "d5"],
        "qimlist": ["q0", "q1"],
        "gnd": [
            {"bbx": [1.0, 2.0, 9.5, 7.0], "easy": np.array([1]), "hard": np.array([4]),
             "junk": np.array([0, 3])},
            {"bbx": np.array([0.0, 0.0, 4.0, 4.0]), "easy": [2], "hard": [], "junk": []},
        ],
    }  # fmt: skip


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_converter_writes_json_of_the_official_pickle(tmp_path: Path) -> None:
    source = tmp_path / "gnd_test.pkl"
    source.write_bytes(pickle.dumps(official_tree(), protocol=2))
    target = tmp_path / "gnd_test.json"
    truth = convert_ground_truth(source, target)
    assert read_ground_truth(target) == truth
    tree = json.loads(target.read_text())
    assert tree["gnd"][0] == {"bbx": [1.0, 2.0, 9.5, 7.0], "easy": [1], "hard": [4], "junk": [0, 3]}
    assert truth.truth[1].box == (0.0, 0.0, 4.0, 4.0)


def test_converter_runs_nothing_from_the_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    source = tmp_path / "gnd_bad.pkl"
    source.write_bytes(pickle.dumps({**official_tree(), "x": _Payload(marker)}, protocol=2))
    with pytest.raises(RevisitedError, match="refusing to load"):
        convert_ground_truth(source, tmp_path / "out.json")
    assert not marker.exists() and not (tmp_path / "out.json").exists()
    with pytest.raises(RevisitedError, match="does not exist"):
        convert_ground_truth(tmp_path / "missing.pkl", tmp_path / "out.json")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"gnd": []}, "one entry per query"),
        ({"imlist": []}, "imlist must be a non-empty list"),
        ({"gnd": [{"easy": [6]}, {}]}, r"easy must list database indices in \[0, 6\)"),
        ({"gnd": [{"bbx": [3, 0, 1, 1]}, {}]}, "bbx must be"),
    ],
)
def test_structure_errors(change: dict[str, Any], message: str) -> None:
    with pytest.raises(RevisitedError, match=message):
        parse_ground_truth({**official_tree(), **change}, "gnd.json")


def test_settings_on_a_hand_made_ranking() -> None:
    truth = parse_ground_truth(official_tree(), "gnd")
    # Query 0 ranks d0..d5 in order; query 1 ranks d2 first.
    scores = torch.tensor([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0], [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    result = revisited_map(scores, truth)
    # Medium, query 0: positives d1, d4, junk d0, d3 -> ranking d1 d2 d4 d5, AP 19/24.
    # Hard: positive d4, junk d0 d3 d1 -> ranking d2 d4 d5, AP (0 + 1/2) / 2; query 1 has
    # no hard positive and is left out. Easy: positive d1 first once junk is out, AP 1.
    assert result["medium"] == pytest.approx(100 * (19 / 24 + 1) / 2, abs=1e-4)
    assert result["hard"] == pytest.approx(25.0, abs=1e-4)
    assert result["easy"] == pytest.approx(100.0, abs=1e-4)


def test_query_images_are_cropped_to_their_box(tmp_path: Path) -> None:
    folder = tmp_path / "jpg"
    folder.mkdir()
    array = np.zeros((10, 12, 3), dtype=np.uint8)
    array[2:7, 1:10] = 255
    Image.fromarray(array).save(folder / "q0.png")
    images = BoxedImages([folder / "q0.png"], [(1.0, 2.0, 9.6, 7.0)], 3, None)
    image, size, label = images[0]
    assert tuple(image.shape) == (3, 5, 9) and size.tolist() == [5, 9] and label == -1
    assert int(image.min()) == 255


def test_missing_images_are_named(tmp_path: Path) -> None:
    (tmp_path / "jpg").mkdir()
    truth = parse_ground_truth(official_tree(), "gnd")
    with pytest.raises(RevisitedError, match="8 images of the ground truth are missing"):
        check_images(tmp_path, truth)
