"""ensure_fashion_mnist: found paths and the install/download fallbacks, all mocked."""

import subprocess
from pathlib import Path

import pytest

from patchdino.data.datasets import fetch

NAMES = [
    f"{p}-{k}.gz" for p in ("train", "t10k") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")
]


def _fill(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        (folder / name).write_bytes(b"")
    return folder


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No system copy, cache under tmp_path, and no real apt-get or download."""
    monkeypatch.setattr(fetch, "DEFAULT_FASHION_MNIST_DIR", tmp_path / "system")
    monkeypatch.setenv("PATCHDINO_CACHE", str(tmp_path / "cache"))

    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("subprocess.run must not be called here")

    monkeypatch.setattr(subprocess, "run", no_run)
    monkeypatch.setattr(fetch, "_try_torchvision", lambda target: "download disabled")
    return tmp_path


def test_default_dir_is_used(isolated: Path) -> None:
    system = _fill(isolated / "system")
    assert fetch.ensure_fashion_mnist() == system


def test_dest_and_cache_are_used(isolated: Path) -> None:
    cache = _fill(isolated / "cache" / "fashion-mnist")
    assert fetch.ensure_fashion_mnist() == cache
    dest = _fill(isolated / "mine" / "FashionMNIST" / "raw")
    assert fetch.ensure_fashion_mnist(isolated / "mine") == dest


def test_apt_branch(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_run(command: list[str], check: bool) -> subprocess.CompletedProcess:
        calls.append(command)
        _fill(isolated / "system")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(fetch.os, "geteuid", lambda: 0)
    monkeypatch.setattr(fetch.shutil, "which", lambda name: "/usr/bin/apt-get")
    assert fetch.ensure_fashion_mnist() == isolated / "system"
    assert calls == [["apt-get", "install", "-y", "dataset-fashion-mnist"]]


def test_everything_fails_clearly(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch.os, "geteuid", lambda: 1000)
    with pytest.raises(RuntimeError, match=r"not running as root.*download disabled"):
        fetch.ensure_fashion_mnist()
