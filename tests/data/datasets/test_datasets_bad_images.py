"""Unreadable files: skipped and counted, or reported by path."""

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from torch.utils.data import DataLoader

from patchdino.data.datasets import BadImageError, FlatFolderDataset, collate_canvas


def _jpeg_bytes(seed: int) -> bytes:
    array = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


BAD_FILES = {
    "b_zero.jpg": b"",
    "c_truncated.jpg": _jpeg_bytes(1)[: len(_jpeg_bytes(1)) // 2],
    "d_text.jpg": b"this is a text file, not a JPEG\n",
}


def _folder(root: Path, bad: str) -> Path:
    """Good a.jpg, one bad file, good e.jpg."""
    (root / "a.jpg").write_bytes(_jpeg_bytes(0))
    (root / bad).write_bytes(BAD_FILES[bad])
    (root / "e.jpg").write_bytes(_jpeg_bytes(2))
    return root / bad


def _bad_records(caplog: pytest.LogCaptureFixture, path: Path) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "patchdino.data" and str(path) in r.message]


def test_truncated_images_stay_refused() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("bad", sorted(BAD_FILES))
@pytest.mark.parametrize("canvas", [16, None])
def test_skip_replaces_logs_once_and_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: str, canvas: int | None
) -> None:
    bad_path = _folder(tmp_path, bad)
    ds = FlatFolderDataset(tmp_path, canvas=canvas, on_bad_image="skip")
    assert ds.paths[1] == bad_path
    caplog.set_level(logging.WARNING, logger="patchdino.data")
    replaced, _, _ = ds[1]
    following, _, _ = ds[2]
    assert torch.equal(replaced, following)  # the next good item takes its place
    ds[1]
    assert ds.bad_images.count == 1
    assert ds.bad_images.paths == [bad_path]
    assert len(_bad_records(caplog, bad_path)) == 1


@pytest.mark.parametrize("bad", sorted(BAD_FILES))
def test_fail_names_the_path(tmp_path: Path, bad: str) -> None:
    bad_path = _folder(tmp_path, bad)
    ds = FlatFolderDataset(tmp_path, canvas=16, on_bad_image="fail")
    ds[0]
    with pytest.raises(ValueError, match=str(bad_path)) as error:
        ds[1]
    assert isinstance(error.value, BadImageError)


def test_last_item_wraps_around(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(_jpeg_bytes(0))
    (tmp_path / "z.jpg").write_bytes(b"")
    ds = FlatFolderDataset(tmp_path, canvas=16)
    assert torch.equal(ds[1][0], ds[0][0])


def test_all_bad_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"junk")
    with pytest.raises(ValueError, match="none of the 2 images"):
        FlatFolderDataset(tmp_path, canvas=16)[0]


def test_check_images_lists_bad_files(tmp_path: Path) -> None:
    for name in BAD_FILES:
        (tmp_path / name).write_bytes(BAD_FILES[name])
    (tmp_path / "a.jpg").write_bytes(_jpeg_bytes(0))
    ds = FlatFolderDataset(tmp_path, canvas=16)
    assert [p.name for p in ds.check_images()] == sorted(BAD_FILES)
    assert ds.bad_images.count == 3


def test_unknown_policy(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(_jpeg_bytes(0))
    with pytest.raises(ValueError, match="on_bad_image"):
        FlatFolderDataset(tmp_path, on_bad_image="ignore")


def test_count_visible_from_loader_workers(tmp_path: Path) -> None:
    bad_path = _folder(tmp_path, "b_zero.jpg")
    ds = FlatFolderDataset(tmp_path, canvas=16)
    loader = DataLoader(ds, batch_size=3, num_workers=1, collate_fn=collate_canvas)
    for _ in range(2):
        images, _, labels = next(iter(loader))
        assert images.shape == (3, 3, 16, 16) and labels.tolist() == [-1, -1, -1]
    assert ds.bad_images.count == 1 and ds.bad_images.paths == [bad_path]


def test_a_failure_in_a_loader_worker_reaches_the_main_process_as_the_error(
    tmp_path: Path,
) -> None:
    """A worker's BadImageError crosses to the main process only as text; the shared log
    gives back the same error, path and reason, to whoever holds the data set."""
    import torch.multiprocessing as mp

    bad_path = _folder(tmp_path, "b_zero.jpg")
    ds = FlatFolderDataset(tmp_path, canvas=16, on_bad_image="fail")
    with pytest.raises(BadImageError) as direct:
        ds[1]
    fresh = FlatFolderDataset(tmp_path, canvas=16, on_bad_image="fail")
    assert fresh.bad_images.failure() is None
    worker = mp.get_context("fork").Process(target=_read_item, args=(fresh, 1))
    worker.start()
    worker.join(60)
    assert worker.exitcode == 1
    again = fresh.bad_images.failure()
    assert isinstance(again, BadImageError) and str(again) == str(direct.value)
    assert again.path == bad_path and again.reason == direct.value.reason


def _read_item(dataset: FlatFolderDataset, index: int) -> None:
    dataset[index]  # raises BadImageError in the child: exit code 1
