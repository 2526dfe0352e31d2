"""The Python API (``import patchdino``) and the torch.hub entry points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import patchdino
from idx_files import write_idx_split
from patchdino.cli.main import main
from patchdino.data.datasets import DATASET_KINDS
from patchdino.data.multicrop import MultiCropSpec

REPO = Path(__file__).resolve().parents[1]
TINY = """\
model: {arch: vit_pico, patch_size: 4}
views: {global_size: 16, local_size: 8, num_local: 2}
"""


def test_import_is_light() -> None:
    code = "import sys, patchdino; print('torch' in sys.modules, 'timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert callable(patchdino.load_backbone) and "extract_features" in patchdino.__all__
    with pytest.raises(AttributeError):
        _ = patchdino.no_such_name


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image folder of the two JPEG photos shipped with scikit-learn."""
    from sklearn.datasets import load_sample_image

    root = tmp_path_factory.mktemp("photos")
    for split in ("train", "val"):
        for name in ("china.jpg", "flower.jpg"):
            folder = root / split / name.split(".")[0]
            folder.mkdir(parents=True)
            Image.fromarray(load_sample_image(name)).save(folder / name, quality=90)
    return root


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_eval_transform_gives_the_features_of_extract_features(photos: Path, config: Path) -> None:
    """Paths through the transform (canvas, resize, crop, normalise) match the pipeline."""
    expected, labels = patchdino.extract_features("random", photos, "val", config=config)
    assert expected.shape == (2, 32) and labels.tolist() == [0, 1]
    loaded = patchdino.load_backbone("random", config_path=config)
    transform = patchdino.eval_transform(loaded)
    paths = sorted(photos.glob("val/*/*.jpg"))
    images = torch.stack([transform(p) for p in paths])  # (2, 3, 16, 16)
    assert images.shape == (2, 3, 16, 16) and images.dtype == torch.float32
    with torch.no_grad():
        features = loaded.backbone(images)[:, 0]
    assert (features - expected).abs().max() < 1e-5
    # A decoded PIL image differs only by the JPEG reduced-scale decoding of large files.
    pil = transform(Image.open(paths[0]).convert("RGB"))
    assert (pil - images[0]).abs().mean() < 0.1
    assert "canvas=320" in repr(transform) and transform.to_dict()["resize_shorter_side"] == 18


def _data_of_kind(kind: str, root: Path) -> tuple[Path, list[object]]:
    """A three-image test split of ``kind`` (train for a flat folder) under ``root`` and its
    images as the transform takes them: paths for image files, uint8 arrays for in-memory kinds."""
    rng = np.random.default_rng(0)
    if kind in ("imagefolder", "flat"):
        folder = root / "test" / "a" if kind == "imagefolder" else root
        folder.mkdir(parents=True)
        paths = []
        for i, (h, w) in enumerate([(40, 60), (70, 30), (33, 33)]):
            paths.append(folder / f"{i}.png")
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
        if kind == "imagefolder":
            (root / "train" / "a").mkdir(parents=True)
            Image.open(paths[0]).save(root / "train" / "a" / "0.png")
        return root, list(paths)
    if kind in ("fashion_mnist", "mnist"):
        images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
        root = root / kind
        write_idx_split(root, "test", images, np.arange(3))
        return root, list(images)
    import pickle

    pixels = rng.integers(0, 256, (3, 3 * 32 * 32), dtype=np.uint8)
    folder, name, key = {
        "cifar10": ("cifar-10-batches-py", "test_batch", "labels"),
        "cifar100": ("cifar-100-python", "test", "fine_labels"),
    }[kind]
    (root / folder).mkdir(parents=True)
    with open(root / folder / name, "wb") as f:
        pickle.dump({"data": pixels, key: [0, 1, 2]}, f)
    return root, [p.reshape(3, 32, 32).transpose(1, 2, 0) for p in pixels]


@pytest.mark.parametrize("kind", DATASET_KINDS)
def test_default_eval_transform_gives_the_features_of_patchdino_features(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Weights record the kind they were trained on; the transform follows it by default."""
    config = tmp_path / "tiny.yaml"
    config.write_text(f"{TINY}data: {{kind: {kind}}}\n")
    root, images = _data_of_kind(kind, tmp_path / "data")
    out = tmp_path / "features.pt"
    args = ["features", "--weights", "random", "--config", str(config), "--data", str(root)]
    split = "train" if kind == "flat" else "test"  # a flat folder is one train split
    assert main([*args, "--split", split, "--output", str(out), "--no-progress"]) == 0
    expected = torch.load(out)["features"]  # (3, D)
    loaded = patchdino.load_backbone("random", config_path=config)
    transform = patchdino.eval_transform(loaded)
    assert transform.mode == ("center_crop" if kind in ("imagefolder", "flat") else "resize")
    with torch.no_grad():
        features = loaded.backbone(torch.stack([transform(i) for i in images]))[:, 0]
    assert expected.shape == features.shape == (3, 32)
    assert (features - expected).abs().max() < 1e-5


def test_eval_transform_accepts_pixels_and_checks_sizes(config: Path) -> None:
    loaded = patchdino.load_backbone("random", config_path=config)
    transform = patchdino.eval_transform(loaded, image_size=32, kind="cifar10")
    array = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    from_array = transform(array)
    from_tensor = transform(torch.from_numpy(array).permute(2, 0, 1))
    assert from_array.shape == (3, 32, 32) and transform.mode == "resize"
    torch.testing.assert_close(from_array, from_tensor)
    with pytest.raises(ValueError, match="not a multiple of the patch size 4"):
        patchdino.eval_transform(loaded, image_size=18)
    with pytest.raises(ValueError, match="unknown data set kind"):
        patchdino.eval_transform(loaded, kind="imagenet")


def test_match_views() -> None:
    image = torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8)
    spec = MultiCropSpec(global_size=32, local_size=16, num_local=2, patch_size=8)
    matched = patchdino.match_views(image, spec, seed=1)
    assert matched.names == ["global1", "global2", "local1", "local2"]
    assert matched.num_global == 2 and len(matched.pairs) == 2 * 3
    assert matched.views[0].shape == (3, 32, 32) and matched.views[2].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="unknown mode"):
        patchdino.match_views(image, spec, mode="fuzzy")


def test_torch_hub_entries(run: Path) -> None:
    """``torch.hub.load(REPO, entry, source="local", weights=...)`` gives the timm model."""
    model = torch.hub.load(str(REPO), "vit_pico", source="local", weights=str(run))
    transform = torch.hub.load(str(REPO), "eval_transform", source="local", weights=str(run))
    loaded = patchdino.load_backbone(run)
    x = transform(np.full((16, 16), 100, dtype=np.uint8))[None]  # (1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), loaded.backbone(x)[:, 0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="load it with the 'vit_pico' entry"):
        torch.hub.load(str(REPO), "vit_small_patch16", source="local", weights=str(run))
    random = torch.hub.load(str(REPO), "vit_small_patch16", source="local")
    assert random.embed_dim == 384


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-step tiny pretraining run (see tests/cli/eval_cli_data.py)."""
    sys.path.insert(0, str(Path(__file__).parent / "cli"))
    from eval_cli_data import tiny_run

    return tiny_run(tmp_path_factory.getbasetemp())
