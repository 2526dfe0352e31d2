"""``patchdino propagate``: end to end on tiny generated sequences, and one-line errors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_cli_data import run_cli, write_config
from PIL import Image

from patchdino.eval.common.backbone_loading import load_backbone
from patchdino.eval.video.davis import annotations_dir, find_sequences, read_mask, split_file
from patchdino.eval.video.moving_fashion import VideoSettings, write_moving_fashion
from patchdino.eval.video.propagation import PropagationSettings
from patchdino.eval.video.video_segmentation import segment_sequence

SETTINGS = VideoSettings(num_videos=2, num_frames=4, seed=3)


def garments(count: int = 8) -> torch.Tensor:
    """``(count, 28, 28)`` uint8 bright rectangles of varied texture."""
    gen = torch.Generator().manual_seed(1)
    images = torch.zeros(count, 28, 28, dtype=torch.uint8)
    for i in range(count):
        patch = torch.randint(60, 255, (14 + i % 4, 10 + i % 6), generator=gen).to(torch.uint8)
        images[i, 5 : 5 + patch.shape[0], 6 : 6 + patch.shape[1]] = patch
    return images


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    write_moving_fashion(garments(), root, SETTINGS)
    return root


def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("patchdino propagate: error:")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_random_weights_end_to_end(
    videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "tiny.yaml", "data: {num_workers: 0, channels: 1}\n")
    # one data section: a section given twice is an error
    config.write_text(config.read_text().replace("data: {num_workers: 0}\n", "", 1))
    out = tmp_path / "out"
    args = ["propagate", "--data", videos, "--weights", "random", "--config", config]
    code, stdout, _ = run_cli([*args, "--output", out, "--no-progress"], capsys)
    assert code == 0, stdout
    record = json.loads((out / "results.json").read_text())
    assert set(record["sequences"]) == {"fashion-000", "fashion-001"}
    overall = record["overall"]
    assert 0 <= overall["J_mean"] <= 100 and 0 <= overall["F_mean"] <= 100  # percent
    assert overall["JF_mean"] == pytest.approx(
        (overall["J_mean"] + overall["F_mean"]) / 2, abs=1e-4
    )
    row = record["sequences"]["fashion-000"]
    assert row["num_frames"] == 4 and row["scored_frames"] == 2
    assert row["input_size"] == [84, 112]
    assert record["settings"]["topk"] == 5 and record["settings"]["temperature"] == 0.7
    for sequence in find_sequences(videos):
        written = sorted((out / sequence.name).glob("*.png"))
        assert [p.name for p in written] == [f"{t:05d}.png" for t in range(4)]
        with Image.open(written[-1]) as image:
            assert image.mode == "P" and image.size == (112, 84)
        first = sequence.annotations[0]
        assert first is not None and torch.equal(read_mask(written[0]), read_mask(first))
    assert "overall" in stdout and "results:" in stdout


def test_checkpoint_equals_the_library_call(
    run: Path, videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["propagate", "--data", videos, "--weights", run, "--sequences", "fashion-001"]
    args += ["--topk", 3, "--n-last-frames", 1, "--size-mask-neighborhood", 4]
    code, _, err = run_cli([*args, "--image-size", 40, "--output", out, "--no-progress"], capsys)
    assert code == 0, err
    record = json.loads((out / "results.json").read_text())
    assert list(record["sequences"]) == ["fashion-001"]
    assert record["sequences"]["fashion-001"]["input_size"] == [40, 52]

    backbone = load_backbone(run).backbone
    settings = PropagationSettings(n_last_frames=1, topk=3, neighbourhood=4)
    (sequence,) = find_sequences(videos, ["fashion-001"])
    expected = segment_sequence(
        backbone,
        sequence,
        patch=4,
        channels=1,
        mean=(0.2860,),  # Fashion-MNIST statistics, as the weights were trained with
        std=(0.3530,),
        settings=settings,
        short_side=40,
        output=tmp_path / "direct",
    )
    objects = record["sequences"]["fashion-001"]["objects"]
    assert [objects[str(o)]["J"] for o in expected.scores.objects] == [
        round(100 * j, 6) for j in expected.scores.j
    ]  # results.json holds percent, the library's scores fractions
    for t in range(4):
        name = f"{t:05d}.png"
        assert torch.equal(
            read_mask(out / "fashion-001" / name), read_mask(tmp_path / "direct" / name)
        )


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + array.astype(">u1").tobytes()


def test_make_videos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "fashion"
    source.mkdir()
    (source / "t10k-images-idx3-ubyte").write_bytes(_idx(garments().numpy()))
    (source / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.arange(8, dtype=np.uint8) % 3))
    out = tmp_path / "videos"
    args = ["propagate", "--make-videos", out, "--fashion-mnist", source]
    code, stdout, err = run_cli([*args, "--num-videos", 2, "--num-frames", 3], capsys)
    assert code == 0, err
    assert "2 sequences of 3 frames" in stdout
    assert [s.name for s in find_sequences(out)] == ["fashion-000", "fashion-001"]

    code, _, err = run_cli(["propagate", "--make-videos", out, "--fashion-mnist", tmp_path], capsys)
    _one_line_error(code, err, "t10k-images-idx3-ubyte")


def test_errors_before_any_work(
    videos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    base = ["propagate", "--weights", "random", "--output", out]
    code, _, err = run_cli([*base, "--data", tmp_path / "nowhere"], capsys)
    _one_line_error(code, err, "nowhere", "does not exist")

    code, _, err = run_cli(["propagate", "--data", videos, "--output", out], capsys)
    _one_line_error(code, err, "--weights required")

    code, _, err = run_cli([*base, "--data", videos, "--topk", 0], capsys)
    _one_line_error(code, err, "--topk must be at least 1")

    code, _, err = run_cli([*base, "--data", videos, "--sequences", "zebra"], capsys)
    _one_line_error(code, err, "'zebra' is not listed")

    broken = tmp_path / "broken"
    write_moving_fashion(garments(), broken, SETTINGS)
    (annotations_dir(broken, "fashion-001") / "00000.png").unlink()
    code, _, err = run_cli([*base, "--data", broken], capsys)
    _one_line_error(code, err, "'fashion-001' has no annotation of its first frame")

    split_file(broken).unlink()
    code, _, err = run_cli([*base, "--data", broken], capsys)
    _one_line_error(code, err, "ImageSets/2017/val.txt is missing")
    assert not out.exists()
