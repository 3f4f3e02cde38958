"""End to end in one process: a folder annotated with LabelMe is built, ``configs/folder.py:runlocal``
fine-tunes the best checkpoint of an earlier run's workdir on it, then evaluation and prediction
read the new workdir. (``tests/test_own_images_readme.py`` runs the README's commands, slow.)"""

import csv
import json
import logging
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from tiny_runs import tiny_config

from gcc_jax.data import build_dataset
from gcc_jax.image_results import ImageResults
from gcc_jax.inference import evaluate_checkpoint
from gcc_jax.localization_scoring import LocalizationOptions
from gcc_jax.predict import count
from gcc_jax.runtime import RunCheckpoints, create_model, load_config_module, load_workdir_config, resolve_recipe
from gcc_jax.runtime.config import save_config
from gcc_jax.training import read_metrics, train_and_evaluate

REPO = pathlib.Path(__file__).resolve().parents[2]


def _labelme_folder(root: pathlib.Path) -> None:
    """Five 96 × 128 photos (one size: one compilation per program) in train/ val/ test/."""
    rng = np.random.default_rng(0)
    for number, split in enumerate(("train", "train", "train", "val", "test")):
        pixels = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        path = root / split / f"photo_{number}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)
        heads = rng.uniform([0, 0], [128, 96], (5 + number, 2))
        shapes = [{"label": "head", "points": [[float(x), float(y)]], "group_id": None, "description": "",
                   "shape_type": "point", "flags": {}, "mask": None} for x, y in heads]  # fmt: skip
        document = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": path.name, "imageData": None,
                    "imageHeight": 96, "imageWidth": 128}  # fmt: skip
        path.with_suffix(".json").write_text(json.dumps(document, indent=2))


def test_fine_tune_a_workdir_on_a_folder_then_evaluate_and_predict(tmp_path, caplog):
    _labelme_folder(tmp_path / "photos")
    build_dataset("folder", manual_dir=tmp_path / "photos", data_dir=tmp_path / "tfds")

    # The earlier run: a workdir whose best checkpoint holds known parameters.
    earlier = tiny_config()
    save_config(earlier, tmp_path / "earlier")
    params = create_model(earlier).init(jax.random.key(7), jnp.zeros((1, 16, 16, 3)))["params"]
    checkpoints = RunCheckpoints(tmp_path / "earlier")
    checkpoints.save_best_if_better(3, params, {"mae": 1.0})
    checkpoints.wait_until_finished()
    checkpoints.close()

    config = load_config_module(REPO / "configs" / "folder.py").get_config("runlocal")
    config.dataset.data_dir = str(tmp_path / "tfds")
    config.model.init_checkpoint = str(tmp_path / "earlier")
    config.progress_bar = False
    caplog.set_level(logging.INFO, logger="gcc_jax.training.state")
    final = train_and_evaluate(resolve_recipe(config), tmp_path / "mine")
    assert f"initialising from the best checkpoint of {tmp_path / 'earlier'} (step 3)" in caplog.text
    train = read_metrics(tmp_path / "mine", "train")
    assert [r["step"] for r in train][-1] == 4 and np.isfinite([r["loss"] for r in train]).all()
    assert final["num_images"] == 1  # val/ holds one photo

    mine = load_workdir_config(tmp_path / "mine")
    per_image = ImageResults(LocalizationOptions.from_config(mine), num_worst=1)
    result = evaluate_checkpoint(mine, workdir=tmp_path / "mine", split="test", on_image=per_image)
    assert result["num_images"] == 1 and result["split"] == "test" and np.isfinite(result["mae"])
    with open(per_image.write_csv(tmp_path / "images.csv"), newline="") as rows:
        (row,) = csv.DictReader(rows)
    assert row["file"] == "test/photo_4.jpg" and float(row["true_count"]) == 9
    assert abs(float(row["error"])) == pytest.approx(result["mae"], abs=5e-5)  # the CSV writes 4 decimals
    (picture,) = per_image.write_pictures(tmp_path / "pictures")
    assert picture.name == "worst_01_test_photo_4.png" and Image.open(picture).size[0] >= 128
    (prediction,) = count([tmp_path / "photos" / "test" / "photo_4.jpg"], checkpoint=tmp_path / "mine")
    assert prediction.image_hw == (96, 128) and np.isfinite(prediction.count)
