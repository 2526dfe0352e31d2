"""Output paths are checked before any work: one line and exit code 2 for unwritable ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchdino.cli.errors import UsageError
from patchdino.cli.main import main
from patchdino.cli.outputs import check_output, check_output_folder


def test_writable_paths_pass_and_nothing_is_created(tmp_path: Path) -> None:
    check_output(tmp_path / "new" / "deeper" / "knn.json", ".json")
    check_output(tmp_path / "f.npz", (".pt", ".npz"))
    check_output_folder(tmp_path / "run" / "sub")
    check_output_folder(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("knn.txt", "must end in .json"),
        ("folder.json", "is a folder"),
        ("a_file/knn.json", "is a file, not a folder"),
        ("a_file/deeper/knn.json", "is a file, not a folder"),
    ],
)
def test_unwritable_files(tmp_path: Path, name: str, fragment: str) -> None:
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "folder.json").mkdir()
    with pytest.raises(UsageError, match=fragment):
        check_output(tmp_path / name, ".json")


def test_unwritable_folders(tmp_path: Path) -> None:
    image = tmp_path / "china.jpg"
    image.write_bytes(b"\xff\xd8")
    with pytest.raises(UsageError, match=r"--out .*china\.jpg is a file; --out must be a folder"):
        check_output_folder(image, "--out")
    with pytest.raises(UsageError, match="cannot write in /proc"):
        check_output_folder(Path("/proc/x/run"))
    with pytest.raises(UsageError, match="cannot write in /proc"):
        check_output(Path("/proc/x/knn.json"), ".json")


def _commands(tmp_path: Path) -> list[tuple[list[str], str]]:
    """Each command with an unwritable output and missing inputs it would read first."""
    missing = str(tmp_path / "missing")
    blocked = tmp_path / "a_file"
    blocked.write_text("x")
    common = ["--data", missing, "--weights", missing]
    return [
        (["knn", *common, "--output", "/proc/x/knn.json"], "--output"),
        (["linear", *common, "--output", str(blocked / "linear.json")], "--output"),
        (["features", *common, "--output", str(blocked / "f.pt")], "--output"),
        (["segment", *common, "--output", "/proc/x/segment.json"], "--output"),
        (["export", "--weights", missing, "--output", "/proc/x/b.safetensors"], "--output"),
        (["pretrain", "--data", missing, "--output", str(blocked)], "--output"),
        (["propagate", *common, "--output", str(blocked / "masks")], "--output"),
        (["match", missing, "--output", str(blocked)], "--output"),
        (["match", missing, "--out", "/proc/forbidden"], "--output"),
    ]


def test_every_command_checks_its_output_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for args, option in _commands(tmp_path):
        capsys.readouterr()
        assert main(args) == 2, args
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and f"error: {option} " in lines[0], (args, err)
        assert "missing" not in lines[0].replace(str(tmp_path / "a_file"), ""), (args, err)
