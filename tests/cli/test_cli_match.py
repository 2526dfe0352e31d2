"""`patchdino match` end to end on generated images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patchdino.cli.main import build_parser, main


def _photo(path: Path, height: int = 90, width: int = 130, mode: str = "RGB") -> Path:
    """A smooth, structured image (gradients plus a disc) at its own size."""
    y, x = np.mgrid[0:height, 0:width]
    red = 255 * x / width
    green = 255 * y / height
    blue = 255 * (((x - width / 2) ** 2 + (y - height / 2) ** 2) < (height / 3) ** 2)
    rgb = np.stack([red, green, blue], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).convert(mode).save(path)
    return path


def test_match_writes_views_json_and_figure(tmp_path: Path) -> None:
    image = _photo(tmp_path / "photo.png")
    out = tmp_path / "out"
    code = main(
        [
            "match",
            str(image),
            "--output",
            str(out),
            "--seed",
            "3",
            "--patch-size",
            "8",
            "--global-size",
            "64",
            "--local-size",
            "32",
            "--locals",
            "3",
            "--geometry-only",
        ]
    )
    assert code == 0
    names = ["global1", "global2", "local1", "local2", "local3"]
    for name in names:
        view = Image.open(out / "views" / f"{name}.png")
        assert view.size == ((64, 64) if name.startswith("global") else (32, 32))
    record = json.loads((out / "matches.json").read_text())
    assert record["image_size"] == [90, 130]
    assert record["patch_size"] == 8 and record["mode"] == "grid"
    assert [v["name"] for v in record["views"]] == names
    # one entry for each global view against every other view
    assert len(record["pairs"]) == 2 * 4
    for view in record["views"]:
        top, left, height, width = view["box"]
        assert 0 <= top and top + height <= 90 and 0 <= left and left + width <= 130
    for pair in record["pairs"]:
        size_b = next(v["size"] for v in record["views"] if v["name"] == pair["b"])
        for ia, ib in pair["patches"]:
            assert 0 <= ia < (64 // 8) ** 2 and 0 <= ib < (size_b // 8) ** 2
    assert Image.open(out / "matches.png").size[0] > 300


def test_geometry_only_views_are_the_recorded_boxes(tmp_path: Path) -> None:
    """With photometric changes off, a view equals its source box resized (and flipped)."""
    image = _photo(tmp_path / "photo.png")
    out = tmp_path / "out"
    assert (
        main(
            [
                "match",
                str(image),
                "--out",
                str(out),
                "--geometry-only",
                "--patch-size",
                "8",
                "--global-size",
                "64",
                "--local-size",
                "32",
                "--locals",
                "2",
                "--mode",
                "nearest",
            ]
        )
        == 0
    )
    record = json.loads((out / "matches.json").read_text())
    source = np.asarray(Image.open(image)).astype(np.float64)
    for view in record["views"]:
        pixels = np.asarray(Image.open(out / "views" / f"{view['name']}.png")).astype(np.float64)
        top, left, height, width = view["box"]
        size = view["size"]
        # the red channel encodes x and the green channel y: compare the view centre
        row = col = size // 2
        x = left + (col + 0.5) * width / size
        if view["flipped"]:
            x = left + width - (col + 0.5) * width / size
        y = top + (row + 0.5) * height / size
        assert pixels[row, col, 0] == pytest.approx(255 * (x - 0.5) / 130, abs=3.0)
        assert pixels[row, col, 1] == pytest.approx(255 * (y - 0.5) / 90, abs=3.0)
        assert source.shape[:2] == (90, 130)


def test_grayscale_image(tmp_path: Path) -> None:
    image = _photo(tmp_path / "gray.png", mode="L")
    out = tmp_path / "out"
    assert (
        main(
            [
                "match",
                str(image),
                "--out",
                str(out),
                "--patch-size",
                "8",
                "--global-size",
                "32",
                "--local-size",
                "16",
                "--locals",
                "1",
            ]
        )
        == 0
    )
    assert (out / "matches.png").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mode", "fuzzy"], "unknown mode 'fuzzy'"),
        (["--global-size", "100"], "not divisible"),
        (["--local-size", "50"], "not divisible"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    image = _photo(tmp_path / "photo.png")
    code = main(["match", str(image), "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_missing_and_unreadable_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["match", str(tmp_path / "none.jpg"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    assert main(["match", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot read image" in err and len(err.splitlines()) == 1


SMALL_VIEWS = ["--patch-size", "8", "--global-size", "32", "--local-size", "16", "--locals", "2"]


def test_a_folder_is_reported_as_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["match", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a folder; give one image file" in err and len(err.splitlines()) == 1


def test_16_bit_png_gives_the_views_of_its_8_bit_copy(tmp_path: Path) -> None:
    """16-bit images are decoded as in training, not saturated."""
    from sklearn.datasets import load_sample_image

    gray = np.asarray(Image.fromarray(load_sample_image("china.jpg")).convert("L"))
    Image.fromarray(gray).save(tmp_path / "china8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "china16.png")
    assert Image.open(tmp_path / "china16.png").mode.startswith("I;16")
    views = []
    for name in ("china8", "china16"):
        out = tmp_path / name
        assert main(["match", str(tmp_path / f"{name}.png"), "--out", str(out), *SMALL_VIEWS]) == 0
        views.append(np.asarray(Image.open(out / "views" / "global1.png")))
    np.testing.assert_array_equal(views[0], views[1])


@pytest.mark.parametrize(
    ("height", "width", "fragment"),
    [
        (120, 2400, "20.0 times wider than tall"),
        (240, 24, "10.0 times taller than wide"),
        (8, 8, "enlarge it at least 28 times"),
    ],
)
def test_misleading_images_are_warned_about(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], height: int, width: int, fragment: str
) -> None:
    image = _photo(tmp_path / "photo.png", height=height, width=width)
    args = ["--global-size", "224", "--local-size", "32", "--locals", "1"]
    code = main(["match", str(image), "--out", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err
    assert code == 0
    assert "patchdino match: warning:" in err and fragment in err


def test_an_ordinary_photo_gives_no_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _photo(tmp_path / "photo.png", height=90, width=130)
    assert main(["match", str(image), "--out", str(tmp_path / "o"), *SMALL_VIEWS]) == 0
    assert "warning" not in capsys.readouterr().err


def test_local_views_larger_than_global_ones_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _photo(tmp_path / "photo.png")
    args = ["match", str(image), "--out", str(tmp_path / "o")]
    assert main([*args, "--local-size", "256", "--global-size", "224"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--local-size 256 is larger than --global-size 224" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "o").exists()


def test_out_is_another_name_of_output() -> None:
    parser = build_parser()
    by_output = parser.parse_args(["match", "a.png", "--output", "folder"])
    by_out = parser.parse_args(["match", "a.png", "--out", "folder"])
    assert by_output.output == by_out.output == Path("folder")
