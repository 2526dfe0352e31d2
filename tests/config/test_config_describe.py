"""Every config key has a type, a default and a doc read from its dataclass."""

from __future__ import annotations

from patchdino.config import config_keys, load_config
from patchdino.config.describe import describe_keys


def test_every_key_is_described_once_with_a_doc() -> None:
    keys = describe_keys()
    assert [k.key for k in keys] == list(config_keys())
    assert [k.key for k in keys if not k.doc] == []
    info = {k.key: k for k in keys}
    assert info["loss.terms.patch.matching"].kind == "one of grid, nearest"
    assert info["data.canvas"].kind == "int or null"
    assert info["views.blur_p"].kind == "list of 3 float"
    assert info["optim.accumulation"].doc == "Gradient accumulation steps per optimiser step"
    assert info["data.kind"].doc.startswith("auto (detected from the folder) or a kind of")


def test_values_and_defaults_of_a_resolved_config() -> None:
    config = load_config("fashion_mnist_tiny", ["loss.terms.koleo.weight=0.1"])
    info = {k.key: k for k in describe_keys(config)}
    assert info["loss.terms.koleo.weight"].value == 0.1
    assert info["loss.terms.koleo.weight"].default == 0.0
    assert info["model.arch"].value == "vit_nano" and info["model.arch"].default != "vit_nano"
