"""Loading backbones from pretraining checkpoints, exports and random weights."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import patchdino.train.trainer as trainer_module
from patchdino.checkpoint import load_checkpoint, save_checkpoint
from patchdino.cli.main import main
from patchdino.config import Config, config_from_dict
from patchdino.eval.common.backbone_loading import (
    BackboneLoadError,
    PooledBackbone,
    load_backbone,
    read_weights,
)
from patchdino.eval.common.export import export_backbone

TINY = """\
model: {arch: vit_pico, patch_size: 4, out_dim: 64, patch_out_dim: 64, hidden_dim: 32,
        bottleneck_dim: 16}
views: {global_size: 16, local_size: 8, num_local: 2}
optim: {batch_size: 8}
data: {num_workers: 0}
run: {device: cpu}
"""


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(">u1").tobytes()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run folder of one step of tiny pretraining on random 16 x 16 IDX images."""
    base = tmp_path_factory.mktemp("backbone-loading")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 8), ("t10k", 4)):
        (base / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(rng.integers(0, 256, (n, 16, 16))))
        (base / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(rng.integers(0, 10, n)))
    (base / "tiny.yaml").write_text(TINY)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "plot_loss_curves", lambda records, path: Path(path))
        args = ["pretrain", "--config", base / "tiny.yaml", "--data", base]
        assert main([str(a) for a in [*args, "--output", base / "run", "--max-steps", 1]]) == 0
    return base / "run"


def test_teacher_and_student_tensors(run: Path) -> None:
    state = load_checkpoint(run / "checkpoint.pt")["model"]
    for key in ("teacher", "student"):
        backbone, config, in_chans = load_backbone(run / "checkpoint.pt", key)
        assert (in_chans, config.model.arch, config.data.kind) == (1, "vit_pico", "fashion_mnist")
        assert not backbone.training
        assert all(not p.requires_grad for p in backbone.parameters())
        loaded = backbone.state_dict()
        assert loaded.keys() == {
            k[len(f"{key}.backbone.") :] for k in state if k.startswith(f"{key}.backbone.")
        }
        for name, tensor in loaded.items():
            assert torch.equal(tensor, state[f"{key}.backbone.{name}"]), name


def test_key_picks_the_network(run: Path, tmp_path: Path) -> None:
    state = load_checkpoint(run / "checkpoint.pt")
    state["model"] = {
        k: v + 1 if k.startswith("student.") and v.is_floating_point() else v
        for k, v in state["model"].items()
    }
    save_checkpoint(state, tmp_path / "checkpoint.pt")
    teacher = load_backbone(run, "teacher").backbone.state_dict()  # a run folder works too
    student = load_backbone(tmp_path, "student").backbone.state_dict()
    assert all(torch.equal(teacher[n] + 1, student[n]) for n in teacher)


def test_given_config_of_the_same_architecture(run: Path, tmp_path: Path) -> None:
    (tmp_path / "same.yaml").write_text(TINY + "loss: {matching: nearest}\n")
    backbone, config, _ = load_backbone(run, config_path=tmp_path / "same.yaml")
    assert config.loss.terms.patch.matching == "nearest" and config.data.kind == "fashion_mnist"
    reference = load_backbone(run).backbone
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(backbone(x), reference(x), rtol=0, atol=0)


def test_export_round_trip(run: Path, tmp_path: Path) -> None:
    path = export_backbone(run, tmp_path / "out" / "teacher.safetensors")
    stored = read_weights(path)
    assert stored.step == 1 and stored.in_chans == 1 and stored.config.model.arch == "vit_pico"
    exported = load_backbone(path).backbone
    reference = load_backbone(run).backbone
    x = torch.randn(3, 1, 16, 16)
    torch.testing.assert_close(exported(x), reference(x), rtol=0, atol=0)
    half = load_backbone(export_backbone(run, tmp_path / "h.safetensors", dtype=torch.float16))
    torch.testing.assert_close(half.backbone(x), reference(x), rtol=0.05, atol=0.05)


def test_random_weights_are_seeded_and_leave_the_global_rng(tmp_path: Path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = load_backbone("random", config_path=tmp_path / "tiny.yaml", in_chans=3).backbone
    assert torch.equal(torch.rand(1), before)
    b = load_backbone("random", config_path=tmp_path / "tiny.yaml", in_chans=3).backbone
    c = load_backbone("random", config_path=tmp_path / "tiny.yaml", in_chans=3, seed=1).backbone
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    assert a.embed_dim == 32 and a.patch_size == 4


def test_pooled_backbone_shapes(run: Path) -> None:
    backbone = load_backbone(run).backbone
    x = torch.randn(2, 1, 16, 16)
    tokens = backbone(x)
    assert torch.equal(PooledBackbone(backbone, "cls")(x), tokens[:, 0])
    assert PooledBackbone(backbone, "both")(x).shape == (2, 64)


def test_config_round_trip() -> None:
    config = Config()
    config.data.path = "a folder=with signs"
    config.data.mean, config.data.std = (0.5,), (0.25,)
    config.optim.min_lr = 1e-7
    assert config_from_dict(config.to_dict()) == config


def _error(weights: Any, **kwargs: Any) -> str:
    with pytest.raises(BackboneLoadError) as info:
        load_backbone(weights, **kwargs)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    return message


def test_missing_file_and_wrong_key(run: Path, tmp_path: Path) -> None:
    assert "does not exist" in _error(tmp_path / "none.pt")
    assert "unknown checkpoint key 'ema'" in _error(run, key="ema")


def test_architecture_mismatch(run: Path, tmp_path: Path) -> None:
    (tmp_path / "nano.yaml").write_text("model: {arch: vit_nano, patch_size: 4}\n")
    message = _error(run, config_path=tmp_path / "nano.yaml")
    assert "model.cls_token is (1, 1, 32) in the weights but (1, 1, 64)" in message
    (tmp_path / "p8.yaml").write_text("model: {arch: vit_pico, patch_size: 8}\n")
    assert "model.pos_embed" in _error(run, config_path=tmp_path / "p8.yaml")


def test_foreign_files(tmp_path: Path) -> None:
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    assert "not a patchdino pretraining checkpoint" in _error(tmp_path / "other.pt")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    assert "not a patchdino backbone export" in _error(tmp_path / "plain.safetensors")
    (tmp_path / "text.safetensors").write_text("hello")
    assert "cannot read" in _error(tmp_path / "text.safetensors")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_unsafe_pickle_is_refused_before_running(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"format": "patchdino-pretrain-v1", "model": _Payload(marker)}, handle, 2)
    assert "refusing to load" in _error(tmp_path / "evil.pt")
    assert not marker.exists()


def test_a_register_backbone_round_trips_through_checkpoint_and_export(
    run: Path, tmp_path: Path
) -> None:
    """A run with register tokens: its checkpoint and its export load with the registers, and
    timm rebuilds the export from its metadata alone."""
    import json

    import timm
    from safetensors import safe_open
    from safetensors.torch import load_file

    config = tmp_path / "reg.yaml"
    config.write_text(TINY.replace("patch_size: 4,", "patch_size: 4, registers: 2,"))
    data = run.parent
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "plot_loss_curves", lambda records, path: Path(path))
        args = ["pretrain", "--config", config, "--data", data, "--output", tmp_path / "r"]
        assert main([str(a) for a in [*args, "--max-steps", 1]]) == 0
    loaded = load_backbone(tmp_path / "r")
    assert loaded.backbone.num_registers == 2 and loaded.config.model.registers == 2
    path = export_backbone(tmp_path / "r", tmp_path / "reg.safetensors")
    images = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        expected = loaded.backbone(images)  # (2, 1 + 2 + 16, D)
        assert expected.shape[1] == 19
        again = load_backbone(path).backbone
        torch.testing.assert_close(again(images), expected, rtol=0, atol=0)
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata()
        model = timm.create_model(
            meta["timm_model"], num_classes=0, **json.loads(meta["timm_kwargs"])
        )
        model.load_state_dict(load_file(str(path)))
        torch.testing.assert_close(model.eval().forward_features(images), expected)
