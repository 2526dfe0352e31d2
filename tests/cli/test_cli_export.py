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
