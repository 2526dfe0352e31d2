"""The field's weights in: DINO's, DINOv2's and timm's layouts through every entry point.

No file is downloaded: each official layout is made here from a timm model with random
weights, the way its authors lay it out (for DINOv2 the inverse of timm's ``_convert_dinov2``:
``register_tokens``, ``mask_token``, a position embedding with a CLS slot that timm folds into
``cls_token``; for DINO its backbone file and its full training checkpoint with DDP's
``module.``). Loading must give the random model's own tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from eval_cli_data import run_cli, write_idx_folder, write_unsafe_pickle
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

import patchdino
import patchdino.train.trainer as trainer_module
from patchdino.checkpoint import load_checkpoint
from patchdino.eval.common.backbone_loading import BackboneLoadError, load_backbone, read_weights
from patchdino.models.head import DINOHead

REPO = Path(__file__).resolve().parents[2]
REG4 = "vit_small_patch14_reg4_dinov2"
DINOV2 = "vit_small_patch14_dinov2"
DINO = "vit_small_patch16_224"
DIM = 384


def _dyadic(t: torch.Tensor, seed: int) -> torch.Tensor:
    """Random values on a 1/64 grid: sums and differences of them are exact in float32."""
    g = torch.Generator().manual_seed(seed)
    return torch.round(torch.randn(t.shape, generator=g) * 16) / 64


def _reference(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True)
    with torch.no_grad():
        model.cls_token.copy_(_dyadic(model.cls_token, seed))
    return model.eval()


def _dinov2_layout(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """DINOv2's own file of a timm DINOv2 model: the inverse of timm's conversion."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    layout: dict[str, torch.Tensor] = {"mask_token": torch.zeros(1, DIM)}
    if "reg_token" in sd:  # timm folds DINOv2's CLS slot of pos_embed into cls_token
        slot = _dyadic(torch.empty(1, 1, DIM), 99)
        layout["register_tokens"] = sd.pop("reg_token")
        layout["cls_token"] = sd.pop("cls_token") - slot
        layout["pos_embed"] = torch.cat([slot, sd.pop("pos_embed")], dim=1)
    layout.update(sd)
    return layout


def _dino_head(seed: int) -> dict[str, torch.Tensor]:
    """DINO's head state dict: weight-normed last layer with ``weight_g`` as ``(K, 1)``."""
    torch.manual_seed(seed)
    head = DINOHead(DIM, 64, hidden_dim=32, bottleneck_dim=16, nlayers=3)
    sd = head.state_dict()
    sd["last_layer.weight_g"] = torch.ones(64, 1)
    return sd


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The official layouts, their reference models and a tiny IDX data set."""
    base = tmp_path_factory.mktemp("published")
    reg4, dinov2 = _reference(REG4, 0), _reference(DINOV2, 1)
    teacher, student = _reference(DINO, 2), _reference(DINO, 3)
    torch.save(_dinov2_layout(reg4), base / "dinov2_vits14_reg4_pretrain.pth")
    torch.save(_dinov2_layout(dinov2), base / "dinov2_vits14_pretrain.pth")
    torch.save(teacher.state_dict(), base / "dino_deitsmall16_pretrain.pth")
    head_t, head_s = _dino_head(4), _dino_head(5)
    full = {
        "student": {f"module.backbone.{k}": v for k, v in student.state_dict().items()}
        | {f"module.head.{k}": v for k, v in head_s.items()},
        "teacher": {f"backbone.{k}": v for k, v in teacher.state_dict().items()}
        | {f"head.{k}": v for k, v in head_t.items()},
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16, out_dim=64, lr=0.0005),
        "dino_loss": {"center": torch.zeros(1, 64)},
    }
    torch.save(full, base / "dino_deitsmall16_full_checkpoint.pth")
    folder = base / "hf_reg4"
    folder.mkdir()
    save_file(reg4.state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(
        json.dumps(
            {
                "architecture": REG4,
                "num_classes": 0,
                "pretrained_cfg": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            }
        )
    )
    return {
        "base": base,
        "reg4": reg4,
        "dinov2": dinov2,
        "teacher": teacher,
        "student": student,
        "head": head_t,
        "data": write_idx_folder(base / "fashion"),
        "hf": folder,
    }


def _weights(files: dict[str, Any], form: str) -> tuple[str, torch.nn.Module, int]:
    """The weights string of ``form``, the reference model it holds, its native side."""
    base = files["base"]
    reg4, v2 = base / "dinov2_vits14_reg4_pretrain.pth", base / "dinov2_vits14_pretrain.pth"
    dino, full = (
        base / "dino_deitsmall16_pretrain.pth",
        base / "dino_deitsmall16_full_checkpoint.pth",
    )
    return {
        "dinov2_reg4": (f"timm:{REG4}@{reg4}", files["reg4"], 518),
        "dinov2": (f"timm:{DINOV2}.lvd142m@{v2}", files["dinov2"], 518),
        "dino": (f"timm:{DINO}.dino@{dino}", files["teacher"], 224),
        "dino_full": (str(full), files["teacher"], 224),
        "dino_full_named": (f"timm:{DINO}.dino@{full}", files["teacher"], 224),
        "hf_folder": (str(files["hf"]), files["reg4"], 518),
    }[form]  # fmt: skip


@pytest.mark.parametrize(
    "form", ["dinov2_reg4", "dinov2", "dino", "dino_full", "dino_full_named", "hf_folder"]
)
def test_each_layout_gives_the_tokens_of_its_model(files: dict[str, Any], form: str) -> None:
    weights, reference, native = _weights(files, form)
    loaded = load_backbone(weights)
    backbone = loaded.backbone
    assert loaded.config.views.global_size == native and loaded.in_chans == 3
    prefix = reference.num_prefix_tokens
    assert backbone.num_prefix_tokens == prefix
    x = torch.randn(1, 3, native, native, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ours, theirs = backbone(x), reference.forward_features(x)
    # timm's token order: CLS, the registers, then the patches.
    assert ours.shape == theirs.shape == (1, prefix + (native // backbone.patch_size) ** 2, DIM)
    assert (ours[:, 0] - theirs[:, 0]).abs().max() <= 1e-5
    assert (ours[:, prefix:] - theirs[:, prefix:]).abs().max() <= 1e-5
    if form.startswith("dino_full"):  # a training checkpoint: its teacher by default
        student = load_backbone(weights, key="student").backbone
        with torch.no_grad():
            got = student(x)[:, 0]
            assert (got - files["student"].forward_features(x)[:, 0]).abs().max() <= 1e-5


def test_timm_own_loading_of_the_file_agrees(files: dict[str, Any]) -> None:
    """timm's own ``pretrained_cfg_overlay=dict(file=...)`` reads the same model."""
    path = files["base"] / "dinov2_vits14_reg4_pretrain.pth"
    own = timm.create_model(
        REG4,
        pretrained=True,
        num_classes=0,
        dynamic_img_size=True,
        pretrained_cfg_overlay={"file": str(path)},
    ).eval()
    ours = load_backbone(f"timm:{REG4}@{path}").backbone
    x = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        assert (ours(x) - own.forward_features(x)).abs().max() <= 1e-5


def test_the_record_of_published_weights(files: dict[str, Any]) -> None:
    stored = read_weights(_weights(files, "dinov2_reg4")[0])
    m = stored.config.model
    assert (m.arch, m.patch_size) == (REG4, 14)
    assert stored.config.data.mean == pytest.approx((0.485, 0.456, 0.406))
    assert stored.sha256 is not None and len(stored.sha256) == 64
    assert "model.reg_token" in stored.tensors and "mask_token" not in stored.tensors
    full = read_weights(_weights(files, "dino_full")[0])
    assert set(full.heads) == set(files["head"]) and full.heads["last_layer.weight_g"].ndim == 1


def test_features_command_api_and_hub_take_the_weights_string(
    files: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, reference, _ = _weights(files, "dinov2_reg4")
    output = tmp_path / "features.pt"
    args = ["features", "--data", files["data"], "--weights", weights, "--split", "test"]
    code, _, err = run_cli([*args, "--image-size", 28, "--output", output, "--no-progress"], capsys)
    assert code == 0, err
    features = torch.load(output)["features"]  # (12, D) CLS
    transform = patchdino.eval_transform(weights, image_size=28, kind="fashion_mnist")
    from eval_cli_data import idx_arrays

    images = torch.stack([transform(image) for image in idx_arrays()["test"][0]])
    assert images.shape[1] == 3  # grey images fed to an RGB network
    with torch.no_grad():
        expected = reference.forward_features(images)[:, 0]
        assert (features - expected).abs().max() <= 1e-4
        hub = torch.hub.load(str(REPO), REG4, source="local", weights=weights)
        assert (hub.forward_features(images)[:, 0] - expected).abs().max() <= 1e-5
        anything = torch.hub.load(str(REPO), "backbone", source="local", weights=weights)
        assert anything.num_reg_tokens == 4
    wrong = torch.hub.load
    with pytest.raises(patchdino.errors.InputError, match=f"load it with the '{REG4}' entry"):
        wrong(str(REPO), "vit_small_patch16", source="local", weights=weights)


def _pretrain(files: dict[str, Any], out: Path, *extra: object) -> list[str]:
    return [
        str(a)
        for a in [
            "pretrain", "--data", files["data"], "--output", out, "--max-steps", 1, "--no-progress",
            "views.global_size=28", "views.local_size=14", "views.num_local=2",
            "model.out_dim=64", "model.patch_out_dim=64", "model.hidden_dim=32",
            "model.bottleneck_dim=16", "optim.batch_size=4", "data.num_workers=0",
            "run.device=cpu", "optim.lr=0", "optim.min_lr=0", *extra,
        ]
    ]  # fmt: skip


def test_init_weights_from_dinov2_copies_its_tensors_and_records_the_source(
    files: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights, reference, _ = _weights(files, "dinov2_reg4")
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "plot_loss_curves", lambda records, path: Path(path))
        args = _pretrain(files, out, "--init-weights", weights, "model.drop_path=0")
        code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert f"starting from the backbone of {weights}" in err
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["config"]["model"]["arch"] == REG4 and state["config"]["model"]["patch_size"] == 14
    want = reference.state_dict()
    want["pos_embed"] = resample_abs_pos_embed(want["pos_embed"], (2, 2), num_prefix_tokens=0)
    for network in ("student", "teacher"):
        for name, value in want.items():
            got = state["model"][f"{network}.backbone.model.{name}"]
            assert torch.allclose(got, value, atol=1e-6), (network, name)
    record = {"source": weights, "sha256": read_weights(weights).sha256}
    assert state["init_weights"] == record
    history = [json.loads(line) for line in (out / "config_history.jsonl").read_text().splitlines()]
    assert history[0]["init_weights"] == record


def test_init_weights_from_dino_training_checkpoint_loads_its_head(
    files: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = _weights(files, "dino_full")[0]
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "plot_loss_curves", lambda records, path: Path(path))
        args = _pretrain(
            files, out, "--init-weights", weights, "views.global_size=32", "views.local_size=16"
        )
        code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert "and its head for the CLS (and shared patch) head" in err
    state = load_checkpoint(out / "checkpoint.pt")["model"]
    for network in ("student", "teacher"):
        for name, value in files["head"].items():
            if name != "last_layer.weight_g":  # all ones, fixed by model.norm_last_layer
                assert torch.allclose(state[f"{network}.head.{name}"], value), (network, name)
    ours = files["teacher"].state_dict()["blocks.0.attn.qkv.weight"]
    assert torch.allclose(state["student.backbone.model.blocks.0.attn.qkv.weight"], ours)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        ("unknown", "timm has no ViT named 'vit_smal_patch16_224.dino'; did you mean"),
        ("misfit", "does not fit timm's vit_base_patch16_224: tensor cls_token is (1, 1, 384)"),
        ("unsafe", "refusing to load"),
        ("empty", "is empty"),
        ("truncated", "cannot read checkpoint"),
        ("offline", "offline, give the file: timm:vit_small_patch16_224.dino@FILE"),
        ("bare", "name their timm architecture: timm:NAME@"),
    ],
)
def test_bad_weights_are_one_line_before_any_output(
    files: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    make: str,
    message: str,
) -> None:
    base = files["base"]
    dino = base / "dino_deitsmall16_pretrain.pth"
    if make == "unknown":
        weights = f"timm:vit_smal_patch16_224.dino@{dino}"
    elif make == "misfit":
        weights = f"timm:vit_base_patch16_224@{dino}"
    elif make == "unsafe":
        marker = tmp_path / "ran"
        weights = f"timm:{DINO}@{write_unsafe_pickle(tmp_path / 'x.pth', marker)}"
    elif make == "empty":
        (tmp_path / "e.pth").write_bytes(b"")
        weights = f"timm:{DINO}@{tmp_path / 'e.pth'}"
    elif make == "truncated":
        (tmp_path / "t.pth").write_bytes(dino.read_bytes()[:5000])
        weights = f"timm:{DINO}@{tmp_path / 't.pth'}"
    elif make == "offline":
        import huggingface_hub.constants as hub  # read at import: set for this test

        monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf"))  # nothing cached
        weights = f"timm:{DINO}.dino"
    else:
        weights = str(dino)
    for command in (
        ["knn", "--data", files["data"], "--weights", weights, "--output", tmp_path / "k.json"],
        _pretrain(files, tmp_path / "run", "--init-weights", weights),
    ):
        code, _, err = run_cli(command, capsys)
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "k.json").exists()
    if make == "unsafe":
        assert not marker.exists()


def test_a_command_line_arch_that_contradicts_the_weights_is_refused(
    files: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = _weights(files, "dino")[0]
    args = _pretrain(files, tmp_path / "run", "--init-weights", weights, f"model.arch={REG4}")
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"model.arch={REG4} contradicts --init-weights {weights}, whose arch is {DINO}" in err
    # A recipe whose views the weights' patches do not tile: one line too.
    code, _, err = run_cli(
        _pretrain(files, tmp_path / "run", "--init-weights", weights, "views.local_size=14"), capsys
    )
    assert code == 2 and "views.local_size 14 is not divisible by model.patch_size 16" in err
    assert f"come from --init-weights {weights}" in err
    assert not (tmp_path / "run").exists()


def test_state_file_reader_takes_only_the_allow_list(tmp_path: Path) -> None:
    """DINO's ``args`` (an ``argparse.Namespace``) is the one object a file may build."""
    from patchdino.eval.common.published_weights import read_state_file

    path = tmp_path / "a.pth"
    torch.save({"args": argparse.Namespace(arch="vit_small"), "w": torch.ones(1)}, path)
    assert read_state_file(path)["args"].arch == "vit_small"
    torch.save({"args": np.float64(1.0)}, path)  # numpy scalars need a global: refused
    with pytest.raises(BackboneLoadError, match="refusing to load"):
        read_state_file(path)
    assert "patchdino" in sys.modules
