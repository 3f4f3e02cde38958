"""Localization metrics of the evaluation records: sums over the split in original pixels, box
radii, the peak settings' offset and plateau rule."""

import numpy as np
import pytest

from gcc_jax.localization import PeakSettings
from gcc_jax.localization_scoring import LocalizationOptions
from gcc_jax.runtime.evaluation import evaluate_records
from known_peaks import blob, peak, record


def test_metrics_sum_over_images_in_original_pixels():
    a, b = blob(), blob(cell=(4, 3))
    pa, pb = peak(a), peak(b)
    records = [
        # 3 px from the head (original pixels): matched at both radii; a second head far away.
        record(a, [pa + [3, 0], [60, 60]]),
        # An image shrunk by half: 3 resized px are 6 original px, outside r4, inside r8.
        record(b, [pb + [0, 3]], scale=0.5),
        # Unannotated (NWPU test): skipped.
        record(a, [], count=float("nan")),
    ]
    options = LocalizationOptions(peaks=PeakSettings(threshold=0.05), radii=(4, 8))
    metrics = evaluate_records(records, localization=options).metrics
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
    empty = evaluate_records(records, localization=LocalizationOptions(peaks=PeakSettings(threshold=5.0))).metrics
    assert empty["loc/f1_r8"] == 0.0 and empty["loc/recall_r8"] == 0.0
    # Counting only.
    assert not any(k.startswith("loc/") for k in evaluate_records(records, localization=None).metrics)


def test_sigma_metrics_with_boxes_and_pixel_offset():
    a, b = blob(), blob(cell=(4, 3))
    pa, pb = peak(a), peak(b)
    box = np.array([0, 0, 10, 6], np.float32)  # sigma_s 3, sigma_l 5 original pixels
    records = [
        # 4 px away: outside sigma_s = 3, inside sigma_l = 5.
        record(a, [pa + [4, 0]], boxes=[box]),
        # Resized by 0.5 (boxes too): 2 resized px = 4 original px; same outcome.
        record(b, [pb + [0, 2]], scale=0.5, boxes=[box * 0.5]),
    ]
    metrics = evaluate_records(records, localization=LocalizationOptions()).metrics
    assert metrics["loc/f1_sigma_s"] == 0.0
    assert metrics["loc/f1_sigma_l"] == pytest.approx(1.0)
    # A head 4 px right of and below the peak (5.7 px away) is on it after a 4 px pixel_offset.
    moved = [record(a, [pa + [4, 4]], boxes=[box])]
    offset = LocalizationOptions(peaks=PeakSettings(pixel_offset=4.0))
    assert evaluate_records(moved, localization=offset).metrics["loc/f1_r4"] == 1.0
    assert evaluate_records(moved, localization=LocalizationOptions()).metrics["loc/f1_r4"] == 0.0


def test_one_point_per_plateau():
    # A lone cell upsamples to a 2 x 2 plateau: GL's recipe reports 4 heads there, one of
    # them on the head (precision 1/4); one_per_plateau keeps only the first.
    density = np.zeros((6, 6), np.float32)
    density[2, 3] = 1.0
    one = [record(density, [[27.0, 19.0]])]
    recipe = evaluate_records(one, localization=LocalizationOptions()).metrics
    single = evaluate_records(one, localization=LocalizationOptions(peaks=PeakSettings(one_per_plateau=True))).metrics
    assert recipe["loc/precision_r4"] == pytest.approx(1 / 4) and recipe["loc/recall_r4"] == 1.0
    assert single["loc/precision_r4"] == 1.0 and single["loc/recall_r4"] == 1.0
