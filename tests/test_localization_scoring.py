"""Localization scoring: the options of ``config.localization``, radii in original pixels and
sigma from boxes, and the threshold choice over records."""

import dataclasses
import pathlib

import numpy as np
import pytest

from gcc_jax.localization import PeakSettings
from gcc_jax.localization_scoring import LocalizationOptions, choose_threshold, localization_radii
from gcc_jax.runtime import load_config_module
from gcc_jax.runtime.evaluation import evaluate_records
from known_peaks import record

SYNTHETIC_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "synthetic.py"


def test_options_from_config_and_validation():
    config = load_config_module(SYNTHETIC_CONFIG).get_config()
    assert LocalizationOptions.from_config(config) == LocalizationOptions()
    config.localization.update({"threshold": 0.2, "pixel_offset": 4.0, "one_per_plateau": True, "radii": (2.0,)})
    options = LocalizationOptions.from_config(config)
    assert options.peaks == PeakSettings(threshold=0.2, pixel_offset=4.0, one_per_plateau=True)
    assert options.radii == (2.0,)
    config.localization.enabled = False
    assert LocalizationOptions.from_config(config) is None
    assert LocalizationOptions(radii=[2, 6]).fixed_settings == ("r2", "r6")
    with pytest.raises(ValueError, match="radii"):
        LocalizationOptions(radii=(0.0,))
    with pytest.raises(ValueError, match="choose_on"):
        LocalizationOptions(choose_on="r5")
    with pytest.raises(ValueError, match="PeakSettings"):
        LocalizationOptions(peaks={"threshold": 0.1})


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


def test_choose_threshold_maximises_f1():
    # A head at (12, 12) (score 0.908) and a spurious peak at (35, 12) (0.454) in a 32 x 48 image.
    # Ground truth: one head at (12, 12), radius 4.
    #   t = 0.1:  both kept  → TP 1, FP 1 → P 0.5, R 1, F1 2/3
    #   t = 0.5:  head only  → TP 1       → F1 1
    #   t = 0.95: nothing    → FN 1       → F1 0
    two_peaks = np.outer(np.float32([0, 1, 0.25, 0]), np.float32([0, 1, 0.25, 0.125, 0.5, 0]))
    records = [record(two_peaks, [[12.0, 12.0]])]
    choice = choose_threshold(records, LocalizationOptions(radii=(4.0,)), candidates=[0.95, 0.1, 0.5])
    assert choice.threshold == 0.5 and choice.f1 == 1.0 and choice.setting == "r4"
    assert choice.candidates.tolist() == [0.1, 0.5, 0.95]
    np.testing.assert_allclose(choice.f1_all, [2 / 3, 1.0, 0.0])
    np.testing.assert_allclose(choice.precision, [0.5, 1.0, 0.0])
    np.testing.assert_allclose(choice.recall, [1.0, 1.0, 0.0])
    # The offset of the settings moves the detections: 4 px right and down, the head is missed at r4.
    moved = choose_threshold(records, LocalizationOptions(peaks=PeakSettings(pixel_offset=4.0), radii=(4.0,)))
    assert moved.f1 == 0.0
    with pytest.raises(ValueError, match="candidates"):
        choose_threshold(records, candidates=[])
    with pytest.raises(ValueError, match="no annotated record"):
        choose_threshold([record(two_peaks, [], count=float("nan"))])


def test_chosen_threshold_maximises_the_reported_f1():
    rng = np.random.default_rng(0)
    records = []
    for k in range(4):
        density = rng.uniform(0, 0.3, (8, 10)).astype(np.float32)
        points = rng.uniform(0, 64, (int(rng.integers(3, 9)), 2))
        records.append(record(density, points, scale=[1.0, 0.5, 2.0, 1.0][k]))
    for peaks in (PeakSettings(), PeakSettings(pixel_offset=2.0, one_per_plateau=True)):
        options = LocalizationOptions(peaks=peaks, radii=(4.0, 8.0))
        choice = choose_threshold(records, options)
        assert choice.setting == "r8"  # auto without boxes: the largest fixed radius
        f1 = []
        for t in choice.candidates:
            at_t = LocalizationOptions(peaks=dataclasses.replace(peaks, threshold=t), radii=(4.0, 8.0))
            f1.append(evaluate_records(records, localization=at_t).metrics["loc/f1_r8"])
        np.testing.assert_allclose(choice.f1_all, f1, atol=1e-12)
        assert choice.f1 == max(f1) and choice.threshold == choice.candidates[int(np.argmax(f1))]
    with pytest.raises(ValueError, match="head boxes"):
        choose_threshold(records, LocalizationOptions(choose_on="sigma_l"))
