"""Loggers: W&B (offline) and MLflow (a local file store) get the scalars of metrics.jsonl,
step by step, and a resumed run logs to the same tracker runs; a missing extra is refused."""

from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from train_fixtures import cli_args, run_cli, single_thread, tiny_config

from patchdino.errors import InputError
from patchdino.train.loggers import (
    TRACKER_IDS,
    MlflowLogger,
    keep_tracker_id,
    open_loggers,
    read_tracker_id,
)
from patchdino.train.metrics import read_metrics
from patchdino.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("no_loss_plots")

EVERY_LOGGER = "run.loggers=[jsonl,tensorboard,wandb,mlflow]"


@pytest.fixture
def trackers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """W&B offline and quiet, its files under ``tmp_path``; MLflow without a tracking URI (so
    in the run folder's ``mlruns/``). W&B's service process is stopped afterwards."""
    wandb = pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    home = tmp_path / "wandb-home"
    settings = {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONSOLE": "off",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true",
        "WANDB_X_DISABLE_STATS": "true",
        "WANDB_X_DISABLE_META": "true",
        "WANDB_DIR": str(home / "dir"),
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_DATA_DIR": str(home / "data"),
        "WANDB_ARTIFACT_DIR": str(home / "artifacts"),
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    for name in ("WANDB_API_KEY", "MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.setenv(name, "")  # recorded, so that what the run sets is undone after
        monkeypatch.delenv(name)
    try:
        yield
    finally:
        wandb.teardown()


# W&B writes an offline run as a LevelDB-style log of protobuf records: a 7-byte header
# (":W&B", 0xBEE1, version 0), then 32 KiB blocks of chunks, each with a 7-byte header
# (CRC-32, length, kind: 1 whole record, 2 first, 3 middle, 4 last part).
_BLOCK = 32 * 1024
_CHUNK_HEADER = 7


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of one offline ``run-<id>.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, parts, position = [], b"", 7
    while position + _CHUNK_HEADER <= len(data):
        left = _BLOCK - position % _BLOCK
        if left < _CHUNK_HEADER:  # the rest of a block is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + _CHUNK_HEADER])
        if kind == 0:  # zero padding up to the end of the block
            position += left
            continue
        start = position + _CHUNK_HEADER
        parts += data[start : start + length]
        position = start + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            records.append(record)
            parts = b""
    return records


def wandb_runs(output: Path) -> list[tuple[str, dict[int, dict[str, float]]]]:
    """``(run id, {step: {key: value}})`` of each offline W&B run in the run folder, oldest
    first (W&B's own ``_step``, ``_runtime``... left out)."""
    found = []
    folders = sorted(p for p in (output / "wandb").glob("offline-run-*") if not p.is_symlink())
    for folder in folders:
        (path,) = folder.glob("run-*.wandb")
        run_id, history = "", {}
        for record in wandb_records(path):
            if record.HasField("run"):
                run_id = record.run.run_id
                assert record.run.display_name == output.name
                assert record.run.project == "patchdino"
            if record.HasField("history"):
                items = {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in record.history.item
                }
                history[record.history.step.num] = {
                    k: float(v) for k, v in items.items() if not k.startswith("_")
                }
        found.append((run_id, history))
    return found


def logged_numbers(output: Path) -> dict[int, dict[str, float]]:
    """``{step: {key: value}}`` of metrics.jsonl's numeric entries (step left out)."""
    return {
        int(r["step"]): {
            k: float(v)
            for k, v in r.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        for r in read_metrics(output / "metrics.jsonl")
    }


def mlflow_history(output: Path, run_id: str) -> dict[int, dict[str, float]]:
    """``{step: {key: value}}`` of an MLflow run of the run folder's file store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(output / "mlruns").resolve().as_uri())
    history: dict[int, dict[str, float]] = {}
    for key in client.get_run(run_id).data.metrics:
        points = client.get_metric_history(run_id, key)
        assert len({m.step for m in points}) == len(points), f"{key} logged twice at a step"
        for metric in points:
            history.setdefault(metric.step, {})[key] = metric.value
    return history


@pytest.mark.usefixtures("trackers")
def test_trackers_get_the_logged_scalars_and_continue_the_same_runs_on_resume(
    data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    config = tiny_config(data, "run.max_steps=4", EVERY_LOGGER)
    with single_thread():
        assert Trainer(config, out, progress=False).run(until=2).step == 2
        assert Trainer(config, out, progress=False).run().step == 4

    logged = logged_numbers(out)
    assert sorted(logged) == [1, 2, 3, 4]
    assert {"loss", "lr", "epoch", "bad_images"} <= set(logged[1])
    ids = json.loads((out / TRACKER_IDS).read_text())
    assert set(ids) == {"wandb", "mlflow"}

    # W&B: one offline run per start, both with the kept id; each step once, as logged
    runs = wandb_runs(out)
    assert [run_id for run_id, _ in runs] == [ids["wandb"], ids["wandb"]]
    assert [sorted(history) for _, history in runs] == [[1, 2], [3, 4]]
    assert {step: v for _, history in runs for step, v in history.items()} == logged

    # MLflow: one run in the experiment, continued; each step once, as logged
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("patchdino")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == ids["mlflow"] and run.info.status == "FINISHED"
    assert run.info.run_name == "run"
    assert run.data.params["run.loggers"] == "['jsonl', 'tensorboard', 'wandb', 'mlflow']"
    assert run.data.params["data.kind"] == "fashion_mnist"  # the kind detected
    assert mlflow_history(out, ids["mlflow"]) == logged


@pytest.mark.usefixtures("trackers")
def test_mlflow_keeps_the_steps_it_holds_when_a_run_repeats_them(tmp_path: Path) -> None:
    """After a kill the run repeats the steps since its checkpoint: MLflow cannot take them
    back, so the repeated ones (the same values in a real run) are not logged twice."""
    out = tmp_path / "run"
    out.mkdir()
    settings = {"run": {"seed": 0}}
    first = MlflowLogger(out, "patchdino", settings)
    for step in (1, 2, 3):
        first.log({"step": step, "loss": float(step), "epoch": 0}, step)
    first.close()
    again = MlflowLogger(out, "patchdino", settings)  # resumed from a checkpoint of step 1
    assert again.run_id == first.run_id == read_tracker_id(out, "mlflow")
    for step in (2, 3, 4):
        again.log({"step": step, "loss": 10.0 * step, "epoch": 1, "note": "text"}, step)
    again.close()
    history = mlflow_history(out, first.run_id)
    assert history == {
        1: {"loss": 1.0, "epoch": 0.0},
        2: {"loss": 2.0, "epoch": 0.0},
        3: {"loss": 3.0, "epoch": 0.0},
        4: {"loss": 40.0, "epoch": 1.0},
    }


def test_a_kept_mlflow_run_missing_from_the_store_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "store").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "run"
    out.mkdir()
    keep_tracker_id(out, "mlflow", "0" * 32)
    with pytest.raises(InputError) as caught:
        MlflowLogger(out, "patchdino", {})
    message = str(caught.value)
    assert message.startswith(f"{out / TRACKER_IDS} names MLflow run {'0' * 32}, which the ")
    assert "set MLFLOW_TRACKING_URI to the store it was logged to" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_a_missing_extra_stops_the_run_before_it_starts(
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    monkeypatch.setitem(sys.modules, name, None)  # import fails as if it were not installed
    out = tmp_path / "run"
    assert run_cli(cli_args(data, out, 2, f"run.loggers=[jsonl,{name}]")) == 2
    assert capsys.readouterr().err == (
        f"patchdino pretrain: error: run.loggers includes {name}, which needs the {name} "
        f"package: pip install 'patchdino[{name}]'\n"
    )
    assert not out.exists()  # nothing was written: the run never started


def test_only_the_main_process_opens_loggers(data: Path, tmp_path: Path) -> None:
    config = tiny_config(data, EVERY_LOGGER)
    assert open_loggers(config, tmp_path, 0, main=False).loggers == []
    assert list(tmp_path.iterdir()) == []


def test_the_default_loggers_are_jsonl_and_tensorboard(data: Path, tmp_path: Path) -> None:
    config = tiny_config(data)
    group = open_loggers(config, tmp_path, 0)
    try:
        kinds = [type(logger).__name__ for logger in group.loggers]
        group.log({"step": 1, "loss": 0.5, "epoch": 0, "loss_patch": math.nan}, 1)
    finally:
        group.close()
    assert kinds == ["TensorBoardLogger", "JsonlLogger"]
    assert read_metrics(tmp_path / "metrics.jsonl") == [
        {"step": 1, "loss": 0.5, "epoch": 0, "loss_patch": None}
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "tensorboard"]
