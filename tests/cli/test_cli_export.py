"""`patchdino export`: files timm loads by itself, with features equal to `patchdino features`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from eval_cli_data import idx_arrays, run_cli
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import patchdino
from patchdino.eval.common.backbone_loading import PREFIXED_EXPORT_FORMAT, load_backbone
from patchdino.eval.common.eval_data import data_kind_of


@pytest.fixture(scope="module")
def export(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "teacher.safetensors"
    assert patchdino.__name__ and run.is_dir()
    from patchdino.cli.main import main

    assert main(["export", "--weights", str(run), "--output", str(path)]) == 0
    return path


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata())


def test_keys_are_timm_keys_and_metadata_rebuilds_the_model(export: Path) -> None:
    meta = _metadata(export)
    name, kwargs = meta["timm_model"], json.loads(meta["timm_kwargs"])
    assert name == "vit_tiny_patch16_224"
    assert kwargs | {"dynamic_img_size": True} == {
        "img_size": 16, "patch_size": 4, "in_chans": 1, "embed_dim": 32, "depth": 2,
        "num_heads": 2, "dynamic_img_size": True,
    }  # fmt: skip
    model = timm.create_model(name, num_classes=0, **kwargs)
    tensors = load_file(str(export))
    assert set(tensors) == set(model.state_dict())
    assert len(json.loads(meta["mean"])) == len(json.loads(meta["std"])) == 1
    transform = json.loads(meta["eval_transform"])
    assert transform["image_size"] == 16 and transform["mean"] == pytest.approx(
        json.loads(meta["mean"])
    )


def test_timm_loads_it_both_ways_with_the_features_of_patchdino_features(
    export: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "features.pt"
    args = ["features", "--data", data, "--weights", export, "--split", "test"]
    code, _, _ = run_cli([*args, "--output", output, "--no-progress"], capsys)
    assert code == 0
    expected = torch.load(output)["features"]  # (M, D)

    meta = _metadata(export)
    name, kwargs = meta["timm_model"], json.loads(meta["timm_kwargs"])
    overlay = {"file": str(export)}
    pretrained = timm.create_model(
        name, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=0, **kwargs
    )
    plain = timm.create_model(name, num_classes=0, **kwargs)
    plain.load_state_dict(load_file(str(export)))

    transform = patchdino.eval_transform(export, kind=data_kind_of(str(data)))
    images = torch.stack([transform(image) for image in idx_arrays()["test"][0]])
    for model in (pretrained, plain):
        with torch.no_grad():
            features = model.eval()(images)  # (M, D)
        assert features.dtype == torch.float32
        assert (features - expected).abs().max() < 1e-5


def test_exports_with_prefixed_names_still_load(export: Path, tmp_path: Path) -> None:
    """Earlier exports named their tensors as the Backbone does (``model.*``)."""
    meta = _metadata(export) | {"format": PREFIXED_EXPORT_FORMAT}
    old = tmp_path / "old.safetensors"
    tensors = {f"model.{k}": v for k, v in load_file(str(export)).items()}
    save_file(tensors, str(old), metadata=meta)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 1, 16, 16))).float()
    with torch.no_grad():
        now = load_backbone(export).backbone(x)
        before = load_backbone(old).backbone(x)
    torch.testing.assert_close(before, now, rtol=0, atol=0)


@pytest.fixture(scope="module")
def model_folder(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model folder of a copy of the tiny run, with an evaluation result beside it."""
    import shutil

    base = tmp_path_factory.mktemp("hf")
    copy, folder = base / "run", base / "model"
    shutil.copytree(run, copy)
    (copy / "knn.json").write_text(json.dumps({"k": {"20": 61.5}, "num_train": 24}))
    from patchdino.cli.main import main

    code = main(["export", "--weights", str(copy), "--format", "hf", "--output", str(folder)])
    assert code == 0
    return folder


def test_timm_loads_the_model_folder_with_its_transform_and_the_features_of_patchdino(
    model_folder: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    assert {p.name for p in model_folder.iterdir()} == {
        "model.safetensors", "config.json", "README.md"
    }  # fmt: skip
    output = tmp_path / "features.pt"
    args = ["features", "--data", data, "--weights", model_folder, "--split", "test"]
    code, _, _ = run_cli([*args, "--output", output, "--no-progress"], capsys)
    assert code == 0
    expected = torch.load(output)["features"]  # (M, D)

    model = timm.create_model(f"local-dir:{model_folder}", pretrained=True).eval()
    config = timm.data.resolve_data_config({}, model=model)
    assert config["input_size"] == (1, 16, 16) and config["crop_mode"] == "squash"
    transform = timm.data.create_transform(**config)
    images = idx_arrays()["test"][0]  # (M, 16, 16) uint8
    inputs = torch.stack([transform(Image.fromarray(image, mode="L")) for image in images])
    ours = patchdino.eval_transform(model_folder, kind=data_kind_of(str(data)))
    torch.testing.assert_close(inputs, torch.stack([ours(image) for image in images]))
    with torch.no_grad():
        features = model(inputs)  # (M, D)
    assert features.shape == expected.shape
    assert (features - expected).abs().max() < 1e-5


def test_model_card_names_the_run_and_its_results(model_folder: Path) -> None:
    card = (model_folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: timm\n")
    assert 'timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True)' in card
    assert "- step: 1" in card and "kind `fashion_mnist`" in card
    assert "`knn.json`:" in card and '"20": 61.5' in card
    assert "checkpoints.json" not in card  # the manifest is not a result
    config = json.loads((model_folder / "config.json").read_text())
    assert config["patchdino"]["step"] == 1 and config["num_classes"] == 0
    assert config["model_args"]["in_chans"] == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--format", "onnx"], "--format must be one of safetensors, hf, got 'onnx'"),
        (["--format", "hf", "--output", "FILE"], "is a file; --output must be a folder"),
    ],
)
def test_bad_format_and_output_of_the_model_folder(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    file = tmp_path / "taken.txt"
    file.write_text("")
    extra = [str(file) if item == "FILE" else item for item in extra]
    output = ["--output", str(tmp_path / "m")] if "--output" not in extra else []
    code, _, err = run_cli(["export", "--weights", run, *extra, *output], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert file.read_text() == "" and not (tmp_path / "m").exists()
