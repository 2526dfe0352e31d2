"""``patchdino retrieve`` end to end on tiny data: labels, revisited, the converter."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from eval_cli_data import write_image_folder, write_unsafe_pickle
from PIL import Image

from idx_files import garment_images, write_idx_split
from patchdino.cli.main import main
from tiny_config import write_tiny_config


@pytest.fixture()
def config(tmp_path: Path) -> Path:
    return write_tiny_config(tmp_path)


def _retrieve(*args: object) -> int:
    return main([str(a) for a in ["retrieve", *args, "--no-progress"]])


def _one_line_error(capsys: pytest.CaptureFixture[str], message: str) -> None:
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_labels_on_idx_files(tmp_path: Path, config: Path) -> None:
    data = tmp_path / "fashion"
    for split, n, seed in (("train", 30, 0), ("test", 10, 1)):
        labels = np.arange(n) % 10
        write_idx_split(data, split, garment_images(labels, 28, seed), labels)
    output = tmp_path / "labels.json"
    extra = ["--image-size", "28", "--ks", "1", "5"]
    assert (
        _retrieve(
            "--data", data, "--weights", "random", "--config", config, "--output", output, *extra
        )
        == 0
    )
    record = json.loads(output.read_text())
    assert record["protocol"] == "labels" and record["kind"] == "fashion_mnist"
    assert record["num_queries"] == 10 and record["num_database"] == 30
    assert set(record["recall"]) == {"1", "5"} and 0 <= record["map_at_r"] <= 100
    assert record["feature_dim"] == 2 * 32
    assert _retrieve("--data", data, "--weights", "pixels", "--output", output) == 0
    assert json.loads(output.read_text())["descriptor"] == "pixels"


def test_labels_on_an_image_folder(tmp_path: Path, config: Path) -> None:
    data = write_image_folder(tmp_path / "folder", {"train": ["a", "b"], "val": ["a", "b"]})
    output = tmp_path / "folder.json"
    args = ["--data", data, "--weights", "random", "--config", config, "--output", output]
    assert _retrieve(*args, "--descriptor", "cls", "--ks", "1") == 0
    record = json.loads(output.read_text())
    assert record["kind"] == "imagefolder" and record["num_database"] == 6
    assert record["descriptor"] == "cls" and record["gem_power"] is None


def _revisited_folder(root: Path) -> Path:
    (root / "jpg").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ["d0", "d1", "d2", "d3", "q0", "q1"]:
        Image.fromarray(rng.integers(0, 255, (24, 32, 3)).astype(np.uint8)).save(
            root / "jpg" / f"{name}.jpg"
        )
    tree = {
        "imlist": ["d0", "d1", "d2", "d3"],
        "qimlist": ["q0", "q1"],
        "gnd": [
            {
                "bbx": np.array([2.0, 3.0, 20.0, 18.0]),
                "easy": np.array([0]),
                "hard": np.array([1]),
                "junk": np.array([2]),
            },
            {"bbx": [0.0, 0.0, 32.0, 24.0], "easy": [3], "hard": [], "junk": []},
        ],
    }
    (root / "gnd_tiny.pkl").write_bytes(pickle.dumps(tree, protocol=2))
    return root


def test_converter_then_revisited_protocol(tmp_path: Path, config: Path) -> None:
    root = _revisited_folder(tmp_path / "tiny5k")
    assert (
        _retrieve("--convert-gnd", root / "gnd_tiny.pkl", "--output", root / "gnd_tiny.json") == 0
    )
    output = tmp_path / "revisited.json"
    args = ["--data", root, "--weights", "random", "--config", config, "--output", output]
    assert _retrieve(*args) == 0
    record = json.loads(output.read_text())
    assert record["protocol"] == "revisited" and set(record["map"]) == {"easy", "medium", "hard"}
    assert all(0 <= v <= 100 for v in record["map"].values())
    assert record["num_queries"] == 2 and record["num_database"] == 4


def test_converter_refuses_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "ran"
    bad = write_unsafe_pickle(tmp_path / "gnd_bad.pkl", marker)
    assert _retrieve("--convert-gnd", bad, "--output", tmp_path / "gnd.json") == 2
    _one_line_error(capsys, "refusing to load")
    assert not marker.exists()


def test_revisited_errors_before_any_work(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _revisited_folder(tmp_path / "tiny5k")
    args = [
        "--data",
        root,
        "--weights",
        "random",
        "--config",
        config,
        "--output",
        tmp_path / "o.json",
    ]
    assert _retrieve(*args, "--protocol", "revisited") == 2
    _one_line_error(capsys, "holds no gnd*.json")
    assert _retrieve(*args, "--ground-truth", root / "gnd_missing.json") == 2
    _one_line_error(capsys, "gnd_missing.json does not exist")
    (root / "gnd_tiny.json").write_text(
        json.dumps({"imlist": ["d0", "x"], "qimlist": ["q0"], "gnd": [{}]})
    )
    assert _retrieve(*args) == 2
    _one_line_error(capsys, "1 images of the ground truth are missing")
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "retrieve needs --weights"),
        (["--weights", "pixels", "--protocol", "cbir"], "--protocol must be one of"),
        (["--weights", "pixels", "--gem-power", "0"], "--gem-power must be > 0"),
    ],
)
def test_option_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert _retrieve("--data", tmp_path, "--output", tmp_path / "o.json", *extra) == 2
    _one_line_error(capsys, message)


def test_revisited_refuses_an_unreadable_image_in_one_line(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _revisited_folder(tmp_path / "tiny5k")
    assert _retrieve("--convert-gnd", root / "gnd_tiny.pkl", "--output", root / "gnd.json") == 0
    bad = root / "jpg" / "d2.jpg"
    bad.write_bytes(bad.read_bytes()[:30])  # truncated
    output = tmp_path / "o.json"
    args = ["--data", root, "--weights", "random", "--config", config, "--output", output]
    assert _retrieve(*args) == 2
    _one_line_error(capsys, "1 images of the ground truth cannot be read")
    assert not output.exists()
