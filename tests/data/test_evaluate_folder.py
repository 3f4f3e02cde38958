"""``python -m gcc_jax.evaluate --folder DIR``: a raw annotated folder scored image by image,
the same rows as its prepared split, and its bad input named."""

import math
import pathlib

import jax
import numpy as np
import pytest
from folder_layouts import write_labelme_json, write_points_csv
from PIL import Image, ImageOps
from tolerances import sum_rtol, vgg_rtol

from gcc_jax.data import build_dataset
from gcc_jax.data._builder_base import BadExampleError
from gcc_jax.data.raw_folder_source import AnnotatedFolderSource
from gcc_jax.image_results import ImageResults
from gcc_jax.imagenet import normalize_images
from gcc_jax.inference import evaluate_checkpoint
from gcc_jax.localization_scoring import LocalizationOptions
from gcc_jax.models import VGG19Density, load_variables, save_variables
from gcc_jax.runtime import load_config_module
from random_model import random_variables

REPO = pathlib.Path(__file__).resolve().parents[2]
WIDTH = 1 / 16
_EXIF_ORIENTATION = 0x0112


def _photo(path, height, width, *, seed, orientation=None):
    """A random RGB photo; with an EXIF ``orientation`` (6: shown turned a quarter clockwise)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    if orientation is None:
        image.save(path)
    else:
        exif = Image.Exif()
        exif[_EXIF_ORIENTATION] = orientation
        image.save(path, exif=exif, quality=95)


def _write_folder(root):
    """Four photos in four annotation situations; returns the true counts. Their sizes differ but
    pad to one shape (80 x 112), so the model compiles once."""
    _photo(root / "a.png", 72, 100, seed=0)
    write_labelme_json(root / "a.json", "a.png", [[10.5, 20.5], [50.0, 30.0], [90.0, 60.0]], 72, 100)
    # A point outside the 70 x 110 image is dropped, as the folder builder drops it.
    _photo(root / "sub" / "b.png", 70, 110, seed=1)
    write_points_csv(root / "sub" / "b.csv", [[5.0, 5.0], [120.0, 10.0]])
    # Stored 100 x 75, shown (and annotated) upright as 75 x 100: (90, 10) lies inside only upright.
    _photo(root / "c.jpg", 100, 75, seed=2, orientation=6)
    write_labelme_json(root / "c.json", "c.jpg", [[90.0, 10.0]], 75, 100)
    # No annotation: an image with no heads under missing_annotation="empty".
    _photo(root / "d.png", 65, 97, seed=3)
    return {"a.png": 3, "c.jpg": 1, "d.png": 0, "sub/b.png": 1}


def _config(*, batch_size):
    config = load_config_module(REPO / "configs" / "synthetic.py").get_config("runlocal")
    config.eval_batch_size = batch_size
    return config


_apply = jax.jit(VGG19Density(width=WIDTH).apply)


def _density_sum(variables, path, pad_multiple):
    """The model run on one upright photo alone, zero-padded (the ImageNet mean colour) to the
    pipeline's multiple, its density map cut to the photo's cells: the predicted count."""
    with Image.open(path) as image:
        pixels = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    height, width = pixels.shape[:2]
    padded = np.zeros((-(-height // pad_multiple) * pad_multiple, -(-width // pad_multiple) * pad_multiple, 3), np.float32)
    padded[:height, :width] = normalize_images(pixels.astype(np.float32))
    density = np.asarray(_apply(variables, padded[None]))[0]
    cells = density[: math.ceil(height / 8), : math.ceil(width / 8)]
    return float(cells.sum(dtype=np.float64)), float(np.abs(density).max()), cells.size


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    save_variables(path, random_variables(VGG19Density(width=WIDTH), bias_scale=0.0, output_scale=0.02), {"width": WIDTH})
    return path


def _evaluate(config, model_dir, **kwargs):
    results = ImageResults(LocalizationOptions.from_config(config))
    metrics = evaluate_checkpoint(config, checkpoint=str(model_dir), on_image=results, **kwargs)
    return metrics, results


def test_folder_rows_hold_its_heads_and_the_model_on_each_photo(tmp_path, model_dir):
    counts = _write_folder(tmp_path / "photos")
    source = AnnotatedFolderSource(tmp_path / "photos", missing_annotation="empty")
    assert source.files == ["a.png", "c.jpg", "d.png", "sub/b.png"]
    assert [source.image_size(i) for i in range(len(source))] == [(72, 100), (75, 100), (65, 97), (70, 110)]
    config = _config(batch_size=1)
    metrics, results = _evaluate(config, model_dir, source=source, split=str(tmp_path / "photos"))
    assert metrics["split"] == str(tmp_path / "photos") and metrics["num_images"] == 4
    assert "trivial_mae" not in metrics  # a model directory: no training split at hand

    variables = jax.device_get(load_variables(str(model_dir))[0])
    rows = {result.file: result for result in results.results}
    assert sorted(rows) == sorted(counts)
    for file, count in counts.items():
        assert rows[file].true_count == count
        expected, largest, cells = _density_sum(variables, tmp_path / "photos" / file, config.dataset.eval_pad_multiple)
        # Two float32 forward passes (relative to the largest output), then a sum of the cells.
        atol = (vgg_rtol(WIDTH) + sum_rtol(cells)) * largest * cells
        assert rows[file].predicted_count == pytest.approx(expected, abs=atol), file


def test_folder_bad_input_is_named(tmp_path):
    _write_folder(tmp_path / "photos")
    with pytest.raises(ValueError, match="d.png"):
        AnnotatedFolderSource(tmp_path / "photos")  # missing_annotation="error" by default
    (tmp_path / "photos" / "a.png").write_bytes(b"not an image")
    source = AnnotatedFolderSource(tmp_path / "photos", missing_annotation="empty")
    with pytest.raises(BadExampleError, match="a.png"):
        source.image_size(0)
    with pytest.raises(BadExampleError, match="a.png"):
        source.read(0)
    with pytest.raises(ValueError, match="no_such"):
        AnnotatedFolderSource(tmp_path / "no_such")
    # A LabelMe file made on the photo before its EXIF turn, as the folder builder refuses it.
    write_labelme_json(tmp_path / "photos" / "c.json", "c.jpg", [[10.0, 10.0]], 100, 75)
    with pytest.raises(BadExampleError, match=r"c.json: annotates a 75x100 image.*turned by 90 degrees"):
        source.read(source.files.index("c.jpg"))


def test_folder_gives_the_rows_of_its_prepared_split(tmp_path, model_dir):
    counts = {f"test/{file}": count for file, count in _write_folder(tmp_path / "photos" / "test").items()}
    _photo(tmp_path / "photos" / "train" / "e.png", 66, 99, seed=4)
    write_points_csv(tmp_path / "photos" / "train" / "e.csv", [[30.0, 30.0], [31.0, 60.0]])
    counts["train/e.png"] = 2
    build_dataset(
        "folder", manual_dir=tmp_path / "photos", data_dir=tmp_path / "tfds", builder_options={"missing_annotation": "empty"}
    )
    # One photo per batch: both orders of the photos give each one the same input, so the same
    # density map to the bit.
    config = _config(batch_size=1)
    config.dataset.name = "folder"
    config.dataset.data_dir = str(tmp_path / "tfds")
    prepared, prepared_rows = _evaluate(config, model_dir, split="train+test")
    source = AnnotatedFolderSource(tmp_path / "photos", missing_annotation="empty")
    raw, raw_rows = _evaluate(config, model_dir, source=source, split="raw")

    prepared_csv = prepared_rows.write_csv(tmp_path / "prepared.csv").read_text()
    assert raw_rows.write_csv(tmp_path / "raw.csv").read_text() == prepared_csv
    assert [line.split(",")[:2] for line in prepared_csv.splitlines()[1:]] == [
        [file, str(count)] for file, count in sorted(counts.items())
    ]
    # The same metrics, summed over the photos in another order (float64 round-off); the
    # prepared data set has a training split for the trivial baseline.
    expected = {k: v for k, v in prepared.items() if not k.startswith("trivial_")} | {"split": "raw"}
    rtol = len(counts) * np.finfo(np.float64).eps
    assert raw == {k: pytest.approx(v, rel=rtol) if isinstance(v, float) else v for k, v in expected.items()}
