"""Checkpoints: atomic writes on a full disk, hostile pickles, unusable files, wrong settings,
checksums, kept older checkpoints and the way back to them."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from train_fixtures import cli_args, run_cli, single_thread, write_idx_folder

from patchdino.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from patchdino.train.trainer import CHECKPOINT_FORMAT

pytestmark = pytest.mark.usefixtures("no_loss_plots")


class CreatesFileWhenUnpickled:
    """Unpickling this runs ``open(marker, 'w')``: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    state = {"format": CHECKPOINT_FORMAT, "step": 1, "payload": CreatesFileWhenUnpickled(marker)}
    torch.save(state, path)
    return path


def test_the_hostile_file_really_runs_code_when_loaded_unsafely(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = hostile_checkpoint(tmp_path / "checkpoint.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_checkpoint_refuses_code_in_a_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = hostile_checkpoint(tmp_path / "checkpoint.pt", marker)
    with pytest.raises(CheckpointError, match=r"refusing to load .* call exec when unpickled"):
        load_checkpoint(path)
    assert not marker.exists()


def test_pretrain_refuses_to_resume_a_hostile_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_idx_folder(tmp_path / "data")
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "ran"
    hostile_checkpoint(out / "checkpoint.pt", marker)
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    with single_thread():
        assert run_cli(cli_args(data, out, 2)) == 2
    err = capsys.readouterr().err
    assert err.startswith("patchdino pretrain: error: refusing to load")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()
    assert (out / "metrics.jsonl").read_text() == '{"step": 1, "loss": 1.0}\n'


def test_disk_full_while_saving_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoint.pt"
    previous = {"step": 2, "weights": torch.arange(6.0)}
    save_checkpoint(previous, path)

    def partial_write(obj: object, handle: Any) -> None:
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", partial_write)
    with pytest.raises(CheckpointError, match=r"the disk is full.*previous checkpoint .* intact"):
        save_checkpoint({"step": 4, "weights": torch.zeros(6)}, path)
    monkeypatch.undo()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "checkpoints.json"]
    state = load_checkpoint(path)
    assert state["step"] == 2 and torch.equal(state["weights"], previous["weights"])


def test_save_removes_temporary_files_of_a_killed_save(tmp_path: Path) -> None:
    stale = tmp_path / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"a save killed half-way")
    other = tmp_path / ".other.pt.abc123.tmp"
    other.write_bytes(b"not ours")
    save_checkpoint({"step": 1}, tmp_path / "checkpoint.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        other.name,
        "checkpoint.pt",
        "checkpoints.json",
    ]
    assert load_checkpoint(tmp_path / "checkpoint.pt") == {"step": 1}


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", None], ids=["empty", "junk", "cut"])
def test_unreadable_checkpoints_raise_checkpoint_error(
    tmp_path: Path, content: bytes | None
) -> None:
    path = tmp_path / "checkpoint.pt"
    if content is None:
        save_checkpoint({"step": 1, "weights": torch.ones(1000)}, path)
        content = path.read_bytes()[:500]
        (tmp_path / "checkpoints.json").unlink()  # a folder of an earlier version
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(path)


def test_load_checkpoint_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="top level is not a dict"):
        load_checkpoint(tmp_path / "list.pt")


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("views.global_size=24", "views.global_size"),
        ("model.hidden_dim=48", "model.hidden_dim"),
    ],
)
def test_resuming_with_incompatible_settings_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str, named: str
) -> None:
    data = write_idx_folder(tmp_path / "data")
    out = tmp_path / "run"
    with single_thread():
        assert run_cli(cli_args(data, out, 1)) == 0
        before = (out / "checkpoint.pt").read_bytes()
        capsys.readouterr()
        assert run_cli(cli_args(data, out, 2, change)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"patchdino pretrain: error: cannot resume {out / 'checkpoint.pt'}")
    assert named in err and "Traceback" not in err
    assert (out / "checkpoint.pt").read_bytes() == before


def test_a_foreign_checkpoint_is_not_resumed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_idx_folder(tmp_path / "data")
    out = tmp_path / "run"
    save_checkpoint({"state_dict": {"w": torch.ones(2)}}, out / "checkpoint.pt")
    with single_thread():
        assert run_cli(cli_args(data, out, 1)) == 2
    assert "is not a patchdino pretraining checkpoint" in capsys.readouterr().err


def _state(step: int) -> dict[str, Any]:
    return {"step": step, "weights": torch.full((256,), float(step))}


def test_older_checkpoints_are_kept_and_pruned(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    for step in (5, 10, 15):
        save_checkpoint(_state(step), path, step=step, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint-step0000010.pt", "checkpoint.pt", "checkpoints.json"]
    assert load_checkpoint(path)["step"] == 15
    assert load_checkpoint(tmp_path / "checkpoint-step0000010.pt")["step"] == 10
    save_checkpoint(_state(20), path, step=20, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "checkpoints.json"]


@pytest.mark.parametrize("damage", ["truncated", "empty", "bit_flip"])
def test_a_damaged_checkpoint_is_refused_and_the_older_one_offered(
    tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "checkpoint.pt"
    for step in (2, 4):
        save_checkpoint(_state(step), path, step=step, keep=2)
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    else:
        data[len(data) // 2] ^= 0x10  # one bit, inside the tensor data
    path.write_bytes(bytes(data))
    older = tmp_path / "checkpoint-step0000002.pt"
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"checkpoint {path} is damaged")
    assert message.endswith(f"{older} (step 2) verifies: to resume from it, cp {older} {path}")
    path.write_bytes(older.read_bytes())  # what the message says to do
    assert load_checkpoint(path)["step"] == 2


def test_no_older_checkpoint_is_said_too(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(_state(3), path, step=3)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"no older checkpoint of this folder verifies$"):
        load_checkpoint(path)


def test_a_save_killed_before_its_rename_leaves_a_folder_that_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(_state(1), path, step=1)
    real_replace = os.replace

    def killed_at_the_rename(src: Any, dst: Any) -> None:
        if Path(dst) == path:
            raise KeyboardInterrupt  # the manifest already records the new file
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_at_the_rename)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_state(2), path, step=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    save_checkpoint(_state(3), path, step=3)
    assert load_checkpoint(path)["step"] == 3


def test_pretrain_refuses_a_damaged_checkpoint_in_one_line_and_resumes_from_the_older(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_idx_folder(tmp_path / "data")
    out = tmp_path / "run"
    with single_thread():
        assert run_cli(cli_args(data, out, 4, "--save-every", "2")) == 0
        checkpoint = out / "checkpoint.pt"
        older = out / "checkpoint-step0000002.pt"
        assert older.is_file() and load_checkpoint(older)["step"] == 2
        checkpoint.write_bytes(checkpoint.read_bytes()[:-100])
        capsys.readouterr()
        assert run_cli(cli_args(data, out, 6, "--save-every", "2")) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"cp {older} {checkpoint}" in err
        checkpoint.write_bytes(older.read_bytes())
        assert run_cli(cli_args(data, out, 6, "--save-every", "2")) == 0
    assert load_checkpoint(checkpoint)["step"] == 6


def test_a_save_killed_before_its_rename_in_a_folder_of_an_earlier_version_still_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save(_state(1), path)  # no manifest: written before checksums existed
    real_replace = os.replace

    def killed_at_the_rename(src: Any, dst: Any) -> None:
        if Path(dst) == path:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_at_the_rename)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_state(2), path, step=2, keep=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
