"""Configuration: every problem reported at once, YAML round trip, override parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchdino.cli.main import main
from patchdino.config import (
    PACKAGED_CONFIGS,
    Config,
    ConfigError,
    load_config,
    packaged_config_names,
    parse_override,
    resolve_config_path,
    validate,
)


def problems_of(path: Path | None = None, *overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    return caught.value.problems


def test_defaults_are_valid() -> None:
    assert validate(Config()) == []
    assert load_config() == Config()


def test_every_kind_of_problem_is_reported_together(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "optim:\n  lr: fast\n  batchsize: 8\n"
        "optimizer:\n  lr: 0.1\n"
        "views:\n  global_size: 30\n  num_local: 0\n"
        "model:\n  patch_size: 16\n"
        "loss:\n  local_local: true\n  matching: closest\n"
    )
    problems = problems_of(path, "run.seed=-1", "run.devcie=cpu", "data.num_workers=two")
    text = "\n".join(problems)
    expected = [
        "optim.lr: expected a number, got 'fast'",
        "unknown key 'optim.batchsize'; did you mean batch_size?",
        "unknown section 'optimizer'",
        "views.global_size 30 is not divisible by model.patch_size 16",
        "views.local_size 96 is larger than views.global_size 30",
        "loss.local_local needs at least 2 local views",
        "loss.terms.patch.matching: 'closest' is not one of grid, nearest",
        "run.seed must lie in [0, 2**32), got -1",
        "unknown key 'run.devcie'",
        "data.num_workers: expected an integer, got 'two'",
    ]
    for fragment in expected:
        assert fragment in text, fragment
    assert len(problems) == len(expected)
    assert str(path) in problems[0]
    assert any(p.startswith("override: ") for p in problems)


def test_config_error_message_lists_every_problem() -> None:
    err = ConfigError(["a is wrong", "b is wrong"])
    assert str(err) == "invalid configuration:\n  - a is wrong\n  - b is wrong"
    assert isinstance(err, ValueError)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("views.local_size=10", "views.local_size 10 is not divisible by model.patch_size 16"),
        ("views.local_size=256", "views.local_size 256 is larger than views.global_size 224"),
        ("views.global_scale=[0.9,0.2]", "views.global_scale must satisfy 0 < min <= max <= 1"),
        ("views.blur_p=[1.0,0.1]", "views.blur_p: expected 3 values, got 2"),
        ("views.flip_p=1.5", "views.flip_p must lie in [0, 1]"),
        ("model.patch_size=0", "model.patch_size must be positive, got 0"),
        ("data.kind=imagenet", "data.kind: 'imagenet' is not one of auto, imagefolder, flat"),
        ("optim.batch_size=0", "optim.batch_size must be > 0"),
        ("optim.lr=-1e-3", "optim.lr and optim.min_lr must be >= 0"),
        ("optim.lr=.inf", "optim.lr: expected a finite number"),
        ("optim.lr=nan", "optim.lr: expected a finite number"),
        ("optim.weight_decay=-0.1", "optim.weight_decay and weight_decay_end must be >= 0"),
        ("optim.accumulation=1.5", "optim.accumulation: expected an integer, got 1.5"),
        ("run.max_steps=0", "run.max_steps must be > 0"),
        ("run.cpu_threads=0", "run.cpu_threads must be >= 1 or null, got 0"),
        ("run.cpu_threads=two", "run.cpu_threads: expected an integer"),
        ("run.deterministic=maybe", "run.deterministic: expected true or false"),
        ("run.device=gpu", "run.device 'gpu' is not auto, cpu, cuda or cuda:N"),
        ("data.channels=2", "data.channels must be 1, 3 or null"),
        ("data.mean=[0.5]", "data.mean and data.std must be given together"),
        ("data.on_bad_image=ignore", "data.on_bad_image: 'ignore' is not one of skip, fail"),
        ("loss.student_temp=0", "loss.student_temp must be > 0"),
        ("model.drop_path=1", "model.drop_path must lie in [0, 1)"),
        (
            "run.loggers=[jsonl,neptune]",
            "run.loggers: 'neptune' is not one of tensorboard, jsonl, wandb, mlflow",
        ),
        ("run.loggers=[jsonl,wandb,wandb]", "run.loggers names wandb more than once"),
        ("run.loggers=[tensorboard]", "run.loggers must include jsonl (metrics.jsonl is the"),
        ("run.loggers=jsonl", "run.loggers: expected a list, got 'jsonl'"),
        ("run.tracker_project=' '", "run.tracker_project must not be empty"),
        ("optim", "override 'optim' is not of the form section.key=value"),
        ("lr=1", "override 'lr=1' is not of the form section.key=value"),
        ("optim.lr=[1", "override 'optim.lr=[1': cannot parse value"),
    ],
)
def test_impossible_values_are_named(override: str, fragment: str) -> None:
    assert any(fragment in p for p in problems_of(None, override)), problems_of(None, override)


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("optim.lr=1e-3", "optim.lr", "1e-3"),  # YAML 1.1 reads this as text
        ("optim.lr=0.001", "optim.lr", 0.001),
        ("views.global_scale=[0.3, 1]", "views.global_scale", [0.3, 1]),
        ("loss.patch_loss=false", "loss.patch_loss", False),
        ("run.max_steps=null", "run.max_steps", None),
        (" data.path = /data/a=b ", "data.path", "/data/a=b"),
        ('data.path="/data/x: y #1"', "data.path", "/data/x: y #1"),
        ("data.path=", "data.path", ""),
    ],
)
def test_parse_override(text: str, key: str, value: object) -> None:
    assert parse_override(text) == (key, value)


def test_overrides_are_converted_to_the_field_types() -> None:
    config = load_config(
        None,
        [
            "optim.lr=1e-3",
            "optim.min_lr=1E-7",
            "run.max_steps=1e3",
            "optim.epochs=3.0",
            "views.global_scale=[0.3, 1]",
            "data.mean=[0.5]",
            "data.std=[0.25]",
            "run.max_steps=null",
            "run.seed=7",
            "data.path=123",
            "run.loggers=[jsonl, wandb]",
        ],
    )
    assert config.optim.lr == 0.001 and config.optim.min_lr == 1e-7
    assert config.optim.epochs == 3 and isinstance(config.optim.epochs, int)
    assert config.views.global_scale == (0.3, 1.0)
    assert config.data.mean == (0.5,) and config.data.std == (0.25,)
    assert config.run.max_steps is None  # the later override wins
    assert config.run.seed == 7 and config.data.path == "123"
    assert config.run.loggers == ("jsonl", "wandb")


def test_yaml_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 5e-4\n  batch_size: 32\nrun:\n  seed: 1\n")
    config = load_config(path, ["run.seed=2"])
    assert config.optim.lr == 5e-4 and config.optim.batch_size == 32 and config.run.seed == 2


def test_resolved_config_round_trips_through_yaml(tmp_path: Path) -> None:
    config = load_config(
        None,
        [
            "data.path=/data/it's here",
            "data.mean=[0.1, 0.2, 0.3]",
            "data.std=[0.4, 0.5, 0.6]",
            "views.ratio=[0.75, 1.3333333333333333]",
            "loss.matching=nearest",
            "run.max_steps=17",
            "optim.lr=3e-4",
        ],
    )
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    again = load_config(path)
    assert again == config
    assert again.to_yaml() == config.to_yaml()


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("optim: [1, 2\n", "not valid YAML"),
        ("- 1\n- 2\n", "expected a mapping of sections"),
        ("optim: 3\n", "'optim' must be a mapping of keys"),
    ],
)
def test_bad_files_are_reported(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert any(fragment in p for p in problems_of(path))


def test_missing_file_is_reported(tmp_path: Path) -> None:
    assert any("cannot read config file" in p for p in problems_of(tmp_path / "none.yaml"))


def test_pretrain_reports_all_problems_with_exit_2_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "pretrain",
            "--output",
            str(tmp_path / "run"),
            "--data",
            str(tmp_path),
            "views.global_size=30",
            "loss.local_local=true",
            "views.num_local=0",
            "optim.lr=fast",
            "optim.nope=1",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("patchdino pretrain: error: invalid configuration:")
    assert "Traceback" not in err
    for fragment in ("views.global_size 30", "loss.local_local", "optim.lr", "optim.nope"):
        assert fragment in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["fashion_mnist_tiny", "fashion_mnist_tiny.yaml"])
def test_packaged_config_by_name_with_or_without_suffix(name: str) -> None:
    assert resolve_config_path(name) == PACKAGED_CONFIGS / "fashion_mnist_tiny.yaml"
    assert load_config(name).model.arch == "vit_nano"


def test_a_local_file_comes_before_a_packaged_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("paper.yaml").write_text("optim: {lr: 0.25}\n")
    assert load_config("paper.yaml").optim.lr == 0.25


def test_unknown_config_name_lists_the_packaged_ones() -> None:
    (problem,) = problems_of(Path("fashion_mnist_small"))
    assert "cannot read config file fashion_mnist_small" in problem
    names = packaged_config_names()
    assert "fashion_mnist_tiny" in names and "paper" in names
    assert ", ".join(names) in problem


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("optim:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n", "duplicate key 'lr' on line 4"),
        (
            "optim: {lr: 0.1}\nrun: {seed: 1}\noptim: {epochs: 2}\n",
            "duplicate key 'optim' on line 3",
        ),
    ],
)
def test_a_key_given_twice_is_an_error(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "twice.yaml"
    path.write_text(content)
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}: {fragment}")
