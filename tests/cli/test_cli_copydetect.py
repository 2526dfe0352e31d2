"""``patchdino copydetect`` end to end on tiny data, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import patchdino.eval.retrieval.descriptors as descriptors
from idx_files import garment_images, write_idx_split
from patchdino.cli.main import main
from tiny_config import write_tiny_config


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An IDX data set, a tiny config, 10 copies of its test images and a distractor folder."""
    root = tmp_path_factory.mktemp("copydetect")
    data = root / "fashion"
    for split, n, seed in (("train", 12, 0), ("test", 20, 1)):
        labels = np.arange(n) % 10
        write_idx_split(data, split, garment_images(labels, 28, seed), labels)
    config = write_tiny_config(root)
    args = ["copydetect", "--make-queries", "--source", data, "--output", root / "copies"]
    assert main([str(a) for a in [*args, "--count", "10", "--seed", "1", "--no-progress"]]) == 0
    distractors = root / "distractors"
    distractors.mkdir()
    for i, image in enumerate(garment_images(np.arange(6), 28, 7)):
        Image.fromarray(image).save(distractors / f"d{i}.png")
    return {"data": data, "config": config, "copies": root / "copies", "whiten": distractors}


def _evaluate(setting: dict[str, Path], output: Path, *extra: object) -> int:
    copies = setting["copies"]
    args = [
        "copydetect",
        "--database",
        setting["data"],
        "--queries",
        copies / "queries",
        "--ground-truth",
        copies / "ground_truth.json",
        "--output",
        output,
        "--no-progress",
    ]
    return main([str(a) for a in [*args, *extra]])


def test_queries_name_test_images(setting: dict[str, Path]) -> None:
    truth = json.loads((setting["copies"] / "ground_truth.json").read_text())
    assert len(truth) == 10 and all(0 <= int(v[0]) < 20 for v in truth.values())


def test_random_weights_with_whitening(
    setting: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "cd.json"
    extra = ["--weights", "random", "--config", setting["config"], "--whiten", setting["whiten"]]
    assert _evaluate(setting, output, *extra) == 0
    record = json.loads(output.read_text())
    assert record["num_queries"] == 10 and record["num_database"] == 20
    assert 0 <= record["map"] <= 100 and 0 <= record["top1"] <= 100
    assert record["descriptor"] == "both" and record["feature_dim"] == 5  # 6 distractors - 1
    assert record["split"] == "test" and "mAP" in capsys.readouterr().out


def test_pixels(setting: dict[str, Path], tmp_path: Path) -> None:
    output = tmp_path / "pixels.json"
    assert _evaluate(setting, output, "--weights", "pixels") == 0
    record = json.loads(output.read_text())
    assert record["descriptor"] == "pixels" and record["feature_dim"] == 28 * 28
    assert 0 <= record["top1"] <= 100


def test_exact_copies_are_found_first(setting: dict[str, Path], tmp_path: Path) -> None:
    from patchdino.data.datasets import read_idx

    images = read_idx(setting["data"] / "t10k-images-idx3-ubyte")
    queries = tmp_path / "exact"
    queries.mkdir()
    for i in (3, 11, 17):
        Image.fromarray(images[i]).save(queries / f"copy{i}.png")
    truth = tmp_path / "gt.json"
    truth.write_text(json.dumps({f"copy{i}.png": str(i) for i in (3, 11, 17)}))
    output = tmp_path / "exact.json"
    args = [
        "copydetect",
        "--database",
        setting["data"],
        "--queries",
        queries,
        "--ground-truth",
        truth,
        "--weights",
        "pixels",
        "--output",
        output,
    ]
    assert main([str(a) for a in args]) == 0
    record = json.loads(output.read_text())
    assert record["top1"] == 100 and record["map"] == 100


def _one_line_error(capsys: pytest.CaptureFixture[str], message: str) -> None:
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


@pytest.fixture()
def no_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any image is encoded: errors must come before that work."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("images were encoded before the input was checked")

    monkeypatch.setattr(descriptors, "encode", refuse)


def test_missing_ground_truth(
    setting: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], no_encoding: None
) -> None:
    args = [
        "copydetect",
        "--database",
        setting["data"],
        "--queries",
        setting["copies"] / "queries",
        "--ground-truth",
        tmp_path / "none.json",
        "--weights",
        "pixels",
        "--output",
        tmp_path / "o.json",
    ]
    assert main([str(a) for a in args]) == 2
    _one_line_error(capsys, "ground-truth file")
    assert not (tmp_path / "o.json").exists()


def test_query_not_in_ground_truth(
    setting: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], no_encoding: None
) -> None:
    truth = json.loads((setting["copies"] / "ground_truth.json").read_text())
    dropped = sorted(truth)[3]
    del truth[dropped]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(truth))
    args = [
        "copydetect",
        "--database",
        setting["data"],
        "--queries",
        setting["copies"] / "queries",
        "--ground-truth",
        path,
        "--weights",
        "pixels",
        "--output",
        tmp_path / "o.json",
    ]
    assert main([str(a) for a in args]) == 2
    _one_line_error(capsys, f"1 of 10 queries are not in the ground truth, e.g. {dropped}")


def test_empty_database(
    setting: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], no_encoding: None
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [
        "copydetect",
        "--database",
        empty,
        "--queries",
        setting["copies"] / "queries",
        "--ground-truth",
        setting["copies"] / "ground_truth.json",
        "--weights",
        "pixels",
        "--output",
        tmp_path / "o.json",
    ]
    assert main([str(a) for a in args]) == 2
    _one_line_error(capsys, "it is empty")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "copydetect needs --weights"),
        (["--weights", "pixels", "--descriptor", "max"], "--descriptor must be one of"),
        (["--weights", "pixels", "--ks", "0"], "--ks must be at least 1"),
    ],
)
def test_option_errors(
    setting: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    assert _evaluate(setting, tmp_path / "o.json", *extra) == 2
    _one_line_error(capsys, message)


def test_make_queries_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["copydetect", "--make-queries", "--output", str(tmp_path)]) == 2
    _one_line_error(capsys, "--make-queries needs --source")
    args = ["copydetect", "--make-queries", "--source", str(tmp_path), "--output", str(tmp_path)]
    assert main(args) == 2
    _one_line_error(capsys, "cannot tell which kind")


def test_make_queries_area(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "fashion"
    labels = np.arange(8) % 10
    write_idx_split(data, "test", garment_images(labels, 28, 3), labels)
    write_idx_split(data, "train", garment_images(labels, 28, 4), labels)
    args = ["copydetect", "--make-queries", "--source", str(data), "--count", "4"]
    out = tmp_path / "mild"
    assert main([*args, "--output", str(out), "--area", "0.8", "0.9", "--no-progress"]) == 0
    manifest = json.loads((out / "copies.json").read_text())
    assert manifest["settings"]["area"] == [0.8, 0.9]
    assert all(0.75 <= copy["area"] <= 0.95 for copy in manifest["copies"])
    assert main([*args, "--output", str(tmp_path / "bad"), "--area", "0.5", "0.2"]) == 2
    _one_line_error(capsys, "--area needs 0 < MIN <= MAX <= 1")
    # --out, the option's former name, is still the same option
    assert main([*args, "--out", str(tmp_path / "old"), "--no-progress"]) == 0
    assert (tmp_path / "old" / "copies.json").is_file()


def test_make_queries_refuses_an_out_folder_it_cannot_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    args = ["copydetect", "--make-queries", "--source", str(tmp_path), "--output"]
    assert main([*args, str(blocker / "copies")]) == 2
    _one_line_error(capsys, f"--output {blocker / 'copies'}: {blocker} is a file, not a folder")

    def read_only(*_: object, **__: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("tempfile.TemporaryFile", read_only)
    assert main([*args, str(tmp_path / "copies")]) == 2
    _one_line_error(capsys, "cannot write in")
