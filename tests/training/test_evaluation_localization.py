"""Localization metrics of the evaluation: radii in original pixels, sigma from boxes, sums over
the split, threshold choice, and the evaluate entry point storing / reusing the chosen threshold."""

import json
import math
import pathlib

import ml_collections
import numpy as np
import pytest

from gcc_jax.evaluate import output_name
from gcc_jax.inference import THRESHOLD_FILE, evaluate_checkpoint, read_threshold_choice
from gcc_jax.localization_scoring import LocalizationOptions, choose_localization_threshold, localization_radii
from gcc_jax.models import VGG19Density, save_variables
from gcc_jax.runtime import load_config_module
from gcc_jax.runtime.evaluation import evaluate_records
from known_peaks import blob, peak
from random_model import random_variables

SYNTHETIC_CONFIG = pathlib.Path(__file__).resolve().parents[2] / "configs" / "synthetic.py"


def _record(density, points, *, scale=1.0, boxes=None, count=None):
    h, w = density.shape
    return {
        "density": density,
        "points": np.asarray(points, np.float32).reshape(-1, 2),
        "boxes": None if boxes is None else np.asarray(boxes, np.float32).reshape(-1, 4),
        "count": float(len(points)) if count is None else count,
        "image_hw": (h * 8, w * 8),
        "scale": scale,
        "scale_xy": (scale, scale),
        "filename": "x",
    }


def test_options_from_config_and_validation():
    config = load_config_module(SYNTHETIC_CONFIG).get_config()
    assert LocalizationOptions.from_config(config) == LocalizationOptions()
    # A workdir saved before the localization block existed gets the defaults.
    assert LocalizationOptions.from_config(ml_collections.ConfigDict({"seed": 0})) == LocalizationOptions()
    config.localization.enabled = False
    assert LocalizationOptions.from_config(config) is None
    assert LocalizationOptions(radii=[2, 6]).fixed_settings == ("r2", "r6")
    with pytest.raises(ValueError, match="radii"):
        LocalizationOptions(radii=(0.0,))
    with pytest.raises(ValueError, match="choose_on"):
        LocalizationOptions(choose_on="r5")


def test_radii_scale_to_the_evaluated_image_and_sigma_from_original_boxes():
    # A 10 x 10 px head box of the original image, resized by 0.3 in float32: dividing back
    # gives 9.9999996 px, which int() would truncate to a sigma_s of 4 instead of 5.
    scale = np.float32(0.3)
    boxes = np.asarray([[0, 0, 10, 10], [0, 0, 10, 6]], np.float32) * scale
    radii = localization_radii({"scale": float(scale), "scale_xy": (scale, scale), "boxes": boxes}, (4.0, 8.0))
    assert radii["r4"] == pytest.approx(4 * 0.3) and radii["r8"] == pytest.approx(8 * 0.3)
    # A product and a scale in float32 against float64: ≤ 2 roundings (1e-6 ≈ 8 EPS32).
    np.testing.assert_allclose(radii["sigma_s"], np.array([5, 3]) * 0.3, rtol=1e-6)
    # sigma_l = int(sqrt(w^2 + h^2) / 2): int(7.07) = 7 and int(5.83) = 5.
    np.testing.assert_allclose(radii["sigma_l"], np.array([7, 5]) * 0.3, rtol=1e-6)
    assert set(localization_radii({"scale": 1.0, "boxes": None}, (4.0,))) == {"r4"}


def test_metrics_sum_over_images_in_original_pixels():
    a, b = blob(), blob(cell=(4, 3))
    pa, pb = peak(a), peak(b)
    records = [
        # 3 px from the head (original pixels): matched at both radii; a second head far away.
        _record(a, [pa + [3, 0], [60, 60]]),
        # An image shrunk by half: 3 resized px are 6 original px, outside r4, inside r8.
        _record(b, [pb + [0, 3]], scale=0.5),
        # Unannotated (NWPU test): skipped.
        _record(a, [], count=float("nan")),
    ]
    metrics = evaluate_records(records, localization=LocalizationOptions(threshold=0.05, radii=(4, 8))).metrics
    # r4: TP 1, FP 1, FN 2; r8: TP 2, FP 0, FN 1.
    assert metrics["loc/precision_r4"] == pytest.approx(1 / 2)
    assert metrics["loc/recall_r4"] == pytest.approx(1 / 3)
    assert metrics["loc/f1_r4"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert metrics["loc/precision_r8"] == pytest.approx(1.0)
    assert metrics["loc/recall_r8"] == pytest.approx(2 / 3)
    assert metrics["loc/f1_r8"] == pytest.approx(0.8)
    assert metrics["loc/threshold"] == 0.05
    assert "loc/f1_sigma_l" not in metrics and metrics["num_images"] == 2
    # A threshold above the peaks: no predictions, precision and F1 0.
    empty = evaluate_records(records, localization=LocalizationOptions(threshold=5.0)).metrics
    assert empty["loc/f1_r8"] == 0.0 and empty["loc/recall_r8"] == 0.0
    # Counting only.
    assert not any(k.startswith("loc/") for k in evaluate_records(records, localization=None).metrics)


def test_sigma_metrics_with_boxes_and_pixel_offset():
    a, b = blob(), blob(cell=(4, 3))
    pa, pb = peak(a), peak(b)
    box = np.array([0, 0, 10, 6], np.float32)  # sigma_s 3, sigma_l 5 original pixels
    records = [
        # 4 px away: outside sigma_s = 3, inside sigma_l = 5.
        _record(a, [pa + [4, 0]], boxes=[box]),
        # Resized by 0.5 (boxes too): 2 resized px = 4 original px; same outcome.
        _record(b, [pb + [0, 2]], scale=0.5, boxes=[box * 0.5]),
    ]
    metrics = evaluate_records(records, localization=LocalizationOptions()).metrics
    assert metrics["loc/f1_sigma_s"] == 0.0
    assert metrics["loc/f1_sigma_l"] == pytest.approx(1.0)
    # A head 4 px right of and below the peak (5.7 px away) is on it after a 4 px pixel_offset.
    moved = [_record(a, [pa + [4, 4]], boxes=[box])]
    assert evaluate_records(moved, localization=LocalizationOptions(pixel_offset=4.0)).metrics["loc/f1_r4"] == 1.0
    assert evaluate_records(moved, localization=LocalizationOptions()).metrics["loc/f1_r4"] == 0.0


def test_one_point_per_plateau():
    # A lone cell upsamples to a 2 x 2 plateau: GL's recipe reports 4 heads there, one of
    # them on the head (precision 1/4); one_per_plateau keeps only the first.
    density = np.zeros((6, 6), np.float32)
    density[2, 3] = 1.0
    record = _record(density, [[27.0, 19.0]])
    recipe = evaluate_records([record], localization=LocalizationOptions()).metrics
    single = evaluate_records([record], localization=LocalizationOptions(one_per_plateau=True)).metrics
    assert recipe["loc/precision_r4"] == pytest.approx(1 / 4) and recipe["loc/recall_r4"] == 1.0
    assert single["loc/precision_r4"] == 1.0 and single["loc/recall_r4"] == 1.0


def test_chosen_threshold_maximises_the_reported_f1():
    rng = np.random.default_rng(0)
    records = []
    for k in range(4):
        density = rng.uniform(0, 0.3, (8, 10)).astype(np.float32)
        points = rng.uniform(0, 64, (int(rng.integers(3, 9)), 2))
        records.append(_record(density, points, scale=[1.0, 0.5, 2.0, 1.0][k]))
    options = LocalizationOptions(radii=(4.0, 8.0))
    setting, choice = choose_localization_threshold(records, options)
    assert setting == "r8"  # auto without boxes: the largest fixed radius
    f1 = [
        evaluate_records(records, localization=LocalizationOptions(threshold=t)).metrics["loc/f1_r8"]
        for t in choice.candidates
    ]
    np.testing.assert_allclose(choice.f1_all, f1, atol=1e-12)
    assert choice.f1 == max(f1) and choice.threshold == choice.candidates[int(np.argmax(f1))]
    with pytest.raises(ValueError, match="head boxes"):
        choose_localization_threshold(records, LocalizationOptions(choose_on="sigma_l"))


def _tiny_config():
    config = load_config_module(SYNTHETIC_CONFIG).get_config("runlocal")
    config.update_from_flattened_dict(
        {
            "dataset.synthetic.height": 64,
            "dataset.synthetic.width": 64,
            "dataset.synthetic.num_val": 3,
            "dataset.synthetic.num_train": 4,
            "eval_batch_size": 2,
        }
    )
    return config


def test_evaluate_entry_point_chooses_stores_and_reuses_the_threshold(tmp_path):
    config = _tiny_config()
    variables = random_variables(VGG19Density(width=1 / 16), bias_scale=0.0, output_scale=0.02)
    model_dir = tmp_path / "model"
    save_variables(model_dir, variables, {"width": 1 / 16})

    chosen = evaluate_checkpoint(config, checkpoint=str(model_dir), split="val", choose_threshold=True)
    stored = read_threshold_choice(str(model_dir))
    assert stored == json.loads((model_dir / THRESHOLD_FILE).read_text())
    assert stored["threshold"] == chosen["loc/threshold"] == chosen["chosen_threshold"]["threshold"]
    assert stored["setting"] == "r8" and stored["split"] == "val" and stored["step"] is None
    assert chosen["loc/f1_r8"] == pytest.approx(stored["f1"]) == pytest.approx(max(stored["f1_all"]))
    assert stored["f1"] > 0
    for name in ("mae", "loc/precision_r4", "loc/recall_r4", "loc/f1_r4", "loc/f1_r8"):
        assert math.isfinite(chosen[name])

    # Later evaluations use the stored threshold; an explicit one wins.
    again = evaluate_checkpoint(config, checkpoint=str(model_dir), split="val")
    assert again["loc/threshold"] == stored["threshold"] and again["loc/f1_r8"] == pytest.approx(stored["f1"])
    explicit = evaluate_checkpoint(config, checkpoint=str(model_dir), split="val", threshold=0.5)
    assert explicit["loc/threshold"] == 0.5
    assert explicit["mae"] == pytest.approx(again["mae"])

    with pytest.raises(ValueError, match="--workdir"):
        evaluate_checkpoint(config, checkpoint="best", split="val", choose_threshold=True)


def test_evaluation_shows_progress_and_names_its_output_plainly(tmp_path, capsys):
    config = _tiny_config()
    variables = random_variables(VGG19Density(width=1 / 16), bias_scale=0.0, output_scale=0.02)
    save_variables(tmp_path / "model", variables, {"width": 1 / 16})
    evaluate_checkpoint(config, checkpoint=str(tmp_path / "model"), split="val", progress=True)
    err = capsys.readouterr().err
    assert "evaluating val" in err and f"{config.dataset.synthetic.num_val}/{config.dataset.synthetic.num_val}" in err
    assert output_name("test[:10]", "best") == "eval_test_10_best.json"
    assert output_name("train+val", "latest") == "eval_train+val_latest.json"
    assert output_name("test[50%:]", str(tmp_path / "model")) == "eval_test_50_model.json"
