"""Loss-term sections: nested keys, old keys that still load, and the terms' own checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchdino.config import OLD_KEYS, Config, ConfigError, config_keys, load_config


def problems_of(*overrides: str, path: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    return caught.value.problems


def test_term_sections_by_override_and_by_file(tmp_path: Path) -> None:
    config = load_config(None, ["loss.terms.patch.weight=0.5", "loss.terms.koleo.weight=0.1"])
    assert config.loss.terms.patch.weight == 0.5 and config.loss.terms.koleo.weight == 0.1
    path = tmp_path / "run.yaml"
    path.write_text(
        "loss:\n  terms:\n    masked: {weight: 1.0, ratio: [0.2, 0.4]}\n"
        "    patch:\n      matching: nearest\n"
    )
    config = load_config(path)
    assert config.loss.terms.masked.ratio == (0.2, 0.4)
    assert config.loss.terms.patch.matching == "nearest" and config.loss.terms.patch.weight == 1.0
    assert load_config(path, ["loss.terms.masked.weight=0"]).loss.terms.masked.weight == 0.0


@pytest.mark.parametrize(
    ("old", "new", "value"),
    [
        ("loss.patch_loss=false", "loss.terms.patch.weight", 0.0),
        ("loss.patch_loss=true", "loss.terms.patch.weight", 1.0),
        ("loss.matching=nearest", "loss.terms.patch.matching", "nearest"),
        ("loss.match_threshold=0.75", "loss.terms.patch.match_threshold", 0.75),
        ("loss.patch_pairs_per_view=8", "loss.terms.patch.pairs_per_view", 8),
    ],
)
def test_old_keys_still_load(old: str, new: str, value: object) -> None:
    assert config_keys(load_config(None, [old]))[new] == value
    assert old.split("=")[0] in OLD_KEYS


def test_old_keys_in_a_saved_file_still_load(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("loss:\n  patch_loss: false\n  matching: nearest\n  centre: shared\n")
    config = load_config(path)
    assert not config.loss.patch_loss and config.loss.terms.patch.matching == "nearest"
    assert load_config(None, []).loss.patch_loss


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("loss.terms.ibot.weight=1", "unknown loss term 'ibot' in 'loss.terms.ibot.weight'"),
        ("loss.terms.koleo.weight=-0.1", "loss.terms.koleo.weight must be >= 0"),
        ("loss.terms.masked.ratio=[0.1,1.0]", "loss.terms.masked.ratio must satisfy 0 <= min"),
        ("loss.terms.masked.ratio=[-0.1,0.5]", "loss.terms.masked.ratio must satisfy"),
        ("loss.terms.masked.probability=2", "loss.terms.masked.probability must lie in [0, 1]"),
        ("loss.terms.patch.pairs_per_view=-1", "loss.terms.patch.pairs_per_view must be >= 0"),
        ("loss.terms=1", "'loss.terms' is a section; set its keys (cls, patch, masked, koleo)"),
        ("loss.centring=sk", "loss.centring: 'sk' is not one of ema, sinkhorn"),
        ("loss.sinkhorn_iterations=0", "loss.sinkhorn_iterations must be > 0"),
        ("optim.lrr=1", "unknown key 'optim.lrr'; did you mean lr?"),
        ("loss.centre_momentum=1", "loss.centre_momentum must lie in [0, 1), got 1.0"),
    ],
)
def test_bad_term_settings_are_named(override: str, fragment: str) -> None:
    problems = problems_of(override)
    assert any(fragment in p for p in problems), problems


def test_every_problem_of_the_terms_at_once() -> None:
    problems = problems_of(
        "loss.terms.cls.weight=0",
        "loss.terms.patch.weight=0",
        "loss.terms.koleo.weight=-1",
        "loss.terms.nope.weight=1",
    )
    assert len(problems) == 3, problems
    assert any("all have weight 0" in p for p in problems)


def test_masked_term_and_local_local_are_refused_together() -> None:
    problems = problems_of("loss.terms.masked.weight=1", "loss.local_local=true")
    assert any("loss.terms.masked and loss.local_local" in p for p in problems)


def test_config_keys_lists_nested_keys() -> None:
    keys = config_keys()
    assert keys["loss.terms.patch.matching"] == "grid" and keys["optim.lr"] == 5e-4
    assert "loss.matching" not in keys and len(keys) == len(set(keys))
    assert config_keys(Config()) == keys
