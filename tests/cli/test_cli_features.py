"""``patchdino features``: shapes, values, file formats and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from eval_cli_data import NUM_TEST, NUM_TRAIN, idx_arrays, run_cli
from PIL import Image

from patchdino.cli.main import main
from patchdino.eval.common.backbone_loading import load_backbone


def _expected(run: Path, split: str, key: str = "teacher") -> torch.Tensor:
    """``(N, 1 + 16, 32)`` tokens of the generated images, normalised by hand."""
    backbone = load_backbone(run, key).backbone
    images = torch.from_numpy(idx_arrays()[split][0]).unsqueeze(1)  # (N, 1, 16, 16)
    with torch.no_grad():
        return backbone((images.float() / 255 - 0.2860) / 0.3530)


@pytest.mark.parametrize("pool,dim", [("cls", 32), ("mean", 32), ("both", 64)])
def test_pt_file_features_and_labels(
    run: Path, data: Path, tmp_path: Path, pool: str, dim: int
) -> None:
    out = tmp_path / "feats.pt"
    args = ["features", "--data", data, "--weights", run, "--pool", pool, "--batch-size", 5]
    assert main([str(a) for a in [*args, "--output", out, "--no-progress"]]) == 0
    saved = torch.load(out, weights_only=True)
    assert set(saved) == {
        "features",
        "labels",
        "indices",
        "names",
        "classes",
        "skipped",
        "root",
        "split",
    }
    assert saved["skipped"] == []
    assert saved["indices"].tolist() == list(range(NUM_TRAIN)) and saved["split"] == "train"
    assert saved["names"] == [str(i) for i in range(NUM_TRAIN)]  # in memory: indices
    assert saved["classes"][:2] == ["T-shirt/top", "Trouser"] and len(saved["classes"]) == 10
    assert saved["features"].shape == (NUM_TRAIN, dim) and saved["features"].dtype == torch.float32
    assert saved["labels"].tolist() == idx_arrays()["train"][1].tolist()
    tokens = _expected(run, "train")
    expected = {
        "cls": tokens[:, 0],
        "mean": tokens[:, 1:].mean(1),
        "both": torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], 1),
    }[pool]
    torch.testing.assert_close(saved["features"], expected, rtol=1e-4, atol=1e-5)


def test_npz_test_split_of_the_student(
    run: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub" / "feats.npz"
    args = ["features", "--data", data, "--weights", run / "checkpoint.pt", "--split", "test"]
    code, stdout, _ = run_cli([*args, "--checkpoint-key", "student", "--output", out], capsys)
    assert code == 0 and f"{NUM_TEST} x 32 features" in stdout
    saved = np.load(out)
    assert saved["features"].shape == (NUM_TEST, 32)
    assert saved["labels"].tolist() == idx_arrays()["test"][1].tolist()
    expected = _expected(run, "test", "student")[:, 0].numpy()
    np.testing.assert_allclose(saved["features"], expected, rtol=1e-4, atol=1e-5)


def test_pixels_and_subset(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "pixels.pt"
    args = ["features", "--data", data, "--weights", "pixels", "--max-images", 7]
    assert main([str(a) for a in [*args, "--output", out]]) == 0
    saved = torch.load(out, weights_only=True)
    assert saved["features"].shape == (7, 256) and saved["labels"].shape == (7,)
    indices = saved["indices"].tolist()
    assert len(indices) == 7 and indices == sorted(set(indices))
    assert saved["names"] == [str(i) for i in indices]
    labels = torch.from_numpy(idx_arrays()["train"][1])
    assert saved["labels"].tolist() == labels[saved["indices"]].tolist()


def test_npz_of_image_files_joins_rows_to_paths(tmp_path: Path) -> None:
    data = tmp_path / "photos"
    for c, name in enumerate(("cat", "dog")):
        (data / name).mkdir(parents=True)
        for i in range(3):
            pixels = np.full((12, 10, 3), 60 * c + 20 * i, dtype=np.uint8)
            Image.fromarray(pixels).save(data / name / f"{i}.png")
    out = tmp_path / "feats.npz"
    args = ["features", "--data", data, "--weights", "pixels", "--image-size", 8]
    assert main([str(a) for a in [*args, "--max-images", 4, "--output", out]]) == 0
    saved = np.load(out)  # no pickled objects: every entry loads without allow_pickle
    assert saved["names"].shape == (4,) and saved["classes"].tolist() == ["cat", "dog"]
    root = Path(str(saved["root"]))
    assert str(saved["split"]) == "train"
    for name, label, index in zip(saved["names"], saved["labels"], saved["indices"]):
        path = root / str(name)
        assert path.is_file() and path.parent.name == ["cat", "dog"][label]
        assert str(name) == sorted(p.relative_to(data).as_posix() for p in data.glob("*/*"))[index]


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--output", "feats.txt"], "must end in .pt or .npz"),
        (["--output", "f.pt", "--pool", "max"], "--pool must be one of"),
        (["--output", "f.pt", "--split", "holdout"], "split"),
        (["--output", "f.pt", "--device", "tpu"], "--device must be"),
        (["--output", "f.pt", "--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_usage_errors(
    run: Path,
    data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    needle: str,
) -> None:
    extra = [str(tmp_path / e) if e.startswith(("feats", "f.")) else e for e in extra]
    code, _, err = run_cli(["features", "--data", data, "--weights", run, *extra], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err, err


def test_exported_backbone_gives_the_same_features(run: Path, data: Path, tmp_path: Path) -> None:
    export = tmp_path / "teacher.safetensors"
    assert main(["export", "--weights", str(run), "--output", str(export)]) == 0
    outputs = []
    for weights in (run, export):
        out = tmp_path / f"{Path(weights).stem}.pt"
        args = ["features", "--data", data, "--weights", weights, "--split", "test"]
        assert main([str(a) for a in [*args, "--output", out, "--no-progress"]]) == 0
        outputs.append(torch.load(out, weights_only=True)["features"])
    assert torch.equal(outputs[0], outputs[1])
