"""Canvas geometry."""

import pytest
import torch

from patchdino.data.datasets import canvas_size, pad_to_canvas, resize_to_canvas


@pytest.mark.parametrize(
    ("h", "w", "canvas", "expected"),
    [(10, 20, 40, (20, 40)), (30, 15, 60, (60, 30)), (7, 7, 3, (3, 3)), (1, 1000, 10, (1, 10)),
     (33, 47, 47, (33, 47)), (33, 47, None, (33, 47))],
)  # fmt: skip
def test_canvas_size_keeps_aspect(h: int, w: int, canvas: int | None, expected: tuple) -> None:
    assert canvas_size(h, w, canvas) == expected


def test_canvas_size_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="canvas"):
        canvas_size(4, 4, 0)
    with pytest.raises(ValueError, match="positive"):
        canvas_size(0, 4, 8)


def test_pad_to_canvas_pads_bottom_right_with_zeros() -> None:
    image = torch.randint(1, 255, (3, 5, 7), dtype=torch.uint8)
    padded, size = pad_to_canvas(image, 9)
    assert padded.shape == (3, 9, 9)
    assert size.tolist() == [5, 7] and size.dtype == torch.long
    assert torch.equal(padded[:, :5, :7], image)
    assert padded[:, 5:].eq(0).all() and padded[:, :, 7:].eq(0).all()


def test_resize_to_canvas_fits_longer_side() -> None:
    image = torch.full((1, 6, 12), 200, dtype=torch.uint8)
    out, size = resize_to_canvas(image, 24)
    assert out.shape == (1, 24, 24) and out.dtype == torch.uint8
    assert size.tolist() == [12, 24]
    assert out[:, :12].eq(200).all() and out[:, 12:].eq(0).all()


def test_resize_to_canvas_native_size() -> None:
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    out, size = resize_to_canvas(image, None)
    assert torch.equal(out, image) and size.tolist() == [8, 8]
