"""Tests of gcc_jax.metrics against values computed by hand (in the comments)."""

import doctest
import itertools
import math

import numpy as np
import pytest

from gcc_jax import metrics


def test_doctests():
    assert doctest.testmod(metrics).failed == 0


# ----------------------------------------------------------------------------------------------
# Counting.


def test_counting_metrics_hand_values():
    # errors ĉ − c = 2, 0, −5.
    pred, gt = [10.0, 0.0, 5.0], [8, 0, 10]
    # MAE = (2 + 0 + 5) / 3.
    assert metrics.mae(pred, gt) == pytest.approx(7 / 3)
    # RMSE = sqrt((4 + 0 + 25) / 3).
    assert metrics.rmse(pred, gt) == pytest.approx(math.sqrt(29 / 3))
    # NAE over the images with c > 0 only: (2/8 + 5/10) / 2 = 0.375.
    assert metrics.nae(pred, gt) == pytest.approx(0.375)


def test_nae_without_people_is_nan():
    assert math.isnan(metrics.nae([1.0, 2.0], [0, 0]))


def test_counting_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="same number of images"):
        metrics.mae([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        metrics.rmse([], [])


# ----------------------------------------------------------------------------------------------
# GAME.

# A 4 × 4 map at stride 8 (a 32 × 32 image); total predicted count 4.5.
DENSITY_4X4 = np.array(
    [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 2.0],
        [0.0, 0.0, 0.0, 0.0],
        [0.5, 0.0, 0.0, 1.0],
    ]
)
# Four heads: in density cells (0, 0), (0, 3), (1, 3) and (3, 0) (row, col).
POINTS_4X4 = np.array([[4.0, 4.0], [28.0, 4.0], [30.0, 12.0], [4.0, 28.0]])


def test_game_divisible_map_hand_values():
    # L = 0: |4.5 − 4| = 0.5.
    assert metrics.game(DENSITY_4X4, POINTS_4X4, level=0) == pytest.approx(0.5)
    # L = 1 (pixel boundary 16 both ways):
    #   top-left  pred 1,   gt 1 (4, 4)            → 0
    #   top-right pred 2,   gt 2 (28, 4), (30, 12) → 0
    #   bot-left  pred 0.5, gt 1 (4, 28)           → 0.5
    #   bot-right pred 1,   gt 0                   → 1      sum 1.5
    pred, gt = metrics.grid_counts(DENSITY_4X4, POINTS_4X4, level=1)
    np.testing.assert_allclose(pred, [[1.0, 2.0], [0.5, 1.0]])
    np.testing.assert_allclose(gt, [[1.0, 2.0], [1.0, 0.0]])
    assert metrics.game(DENSITY_4X4, POINTS_4X4, level=1) == pytest.approx(1.5)
    # L = 2: cells are the density cells. Errors: (0,0) 0; (0,3) |0 − 1| = 1; (1,3) |2 − 1| = 1;
    # (3,0) |0.5 − 1| = 0.5; (3,3) |1 − 0| = 1. Sum 3.5.
    assert metrics.game(DENSITY_4X4, POINTS_4X4, level=2) == pytest.approx(3.5)
    # L = 3 on a 4-row map: boundaries floor(k·4/8) = 0,0,1,1,2,2,3,3,4, so every other cell
    # is empty (count 0 both ways) and the others are the density cells again: 3.5.
    pred, gt = metrics.grid_counts(DENSITY_4X4, POINTS_4X4, level=3)
    assert pred.shape == gt.shape == (8, 8)
    assert gt.sum() == 4 and pred.sum() == pytest.approx(4.5)
    assert metrics.game(DENSITY_4X4, POINTS_4X4, level=3) == pytest.approx(3.5)


# A 5 × 3 map of ones at stride 8 (a 40 × 24 image). Level 1 splits rows floor(k·5/2) = 0, 2, 5
# and columns floor(k·3/2) = 0, 1, 3: cells of 2×1, 2×2, 3×1 and 3×2 density cells, so the
# predicted cell counts are 2, 4 / 3, 6, total 15. Pixel boundaries: y = 16, x = 8.
DENSITY_5X3 = np.ones((5, 3))
POINTS_5X3 = np.array(
    [[8.0, 16.0]]  # on both boundaries: half-open cells put it bottom-right
    + [[7.9, 15.9]]  # top-left
    + [[-3.0, 50.0]]  # left of and below the image: clipped into bottom-left
    + [[100.0, -1.0]]  # right of and above: clipped into top-right
    + [[20.0, 30.0]] * 5  # bottom-right
    + [[1.0, 1.0]] * 4  # top-left
)


def test_game_non_divisible_map_hand_values():
    pred, gt = metrics.grid_counts(DENSITY_5X3, POINTS_5X3, level=1)
    np.testing.assert_allclose(pred, [[2.0, 4.0], [3.0, 6.0]])
    # gt: top-left 1 + 4 = 5, top-right 1, bottom-left 1, bottom-right 1 + 5 = 6.
    np.testing.assert_allclose(gt, [[5.0, 1.0], [1.0, 6.0]])
    # GAME(1) = |2 − 5| + |4 − 1| + |3 − 1| + |6 − 6| = 3 + 3 + 2 + 0 = 8.
    assert metrics.game(DENSITY_5X3, POINTS_5X3, level=1) == pytest.approx(8.0)
    # GAME(0) = |15 − 13| = 2.
    assert metrics.game(DENSITY_5X3, POINTS_5X3, level=0) == pytest.approx(2.0)


def test_game_with_no_heads_is_the_predicted_mass():
    # No heads: every cell error is the predicted cell count, so GAME(L) = 4.5 at every level.
    for level in range(4):
        assert metrics.game(DENSITY_4X4, np.zeros((0, 2)), level=level) == pytest.approx(4.5)


def test_game_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[h, w\]"):
        metrics.game(np.ones((1, 4, 4)), POINTS_4X4, level=1)
    with pytest.raises(ValueError, match="level"):
        metrics.game(DENSITY_4X4, POINTS_4X4, level=-1)
    with pytest.raises(ValueError, match="points"):
        metrics.game(DENSITY_4X4, np.ones((3, 3)), level=1)


# ----------------------------------------------------------------------------------------------
# Matching.


def test_matching_beats_greedy_nearest_first():
    # Heads g1 = (0, 0), g2 = (4, 0), radius 4 for both; predictions p1 = (1, 0), p2 = (−3.5, 0).
    # Distances: p1–g1 1, p1–g2 3 (both ≤ 4); p2–g1 3.5 (≤ 4), p2–g2 7.5 (> 4).
    # Greedy nearest-first takes p1–g1 (1) first; then p2 can only reach g1, which is taken:
    # 1 pair. The maximum matching is p1–g2, p2–g1: 2 pairs.
    result = metrics.match_points([[1.0, 0.0], [-3.5, 0.0]], [[0.0, 0.0], [4.0, 0.0]], 4.0)
    assert (result.tp, result.fp, result.fn) == (2, 0, 0)
    assert result.pred_to_gt.tolist() == [1, 0]


def test_matching_beats_greedy_with_per_head_radii():
    # g1 = (0, 0) with radius 1.5, g2 = (2, 0) with radius 10; p1 = (1.2, 0), p2 = (8, 0).
    # p1–g2 0.8 is the nearest pair (greedy takes it); p2–g1 8 > 1.5, so p2 is then left out:
    # 1 pair. Maximum: p1–g1 (1.2 ≤ 1.5) and p2–g2 (6 ≤ 10): 2 pairs.
    result = metrics.match_points([[1.2, 0.0], [8.0, 0.0]], [[0.0, 0.0], [2.0, 0.0]], [1.5, 10.0])
    assert (result.tp, result.fp, result.fn) == (2, 0, 0)
    assert result.pred_to_gt.tolist() == [0, 1]


def test_matching_radius_is_inclusive():
    # A 3-4-5 triangle: distance exactly 5, matched at radius 5 (NWPU: distance <= sigma).
    assert metrics.match_points([[3.0, 4.0]], [[0.0, 0.0]], 5.0).tp == 1
    assert metrics.match_points([[3.0, 4.0]], [[0.0, 0.0]], 4.999).tp == 0


def test_matching_empty_ground_truth_and_no_predictions():
    result = metrics.match_points([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.zeros((0, 2)), 8.0)
    assert (result.tp, result.fp, result.fn) == (0, 3, 0)
    assert result.pred_to_gt.tolist() == [-1, -1, -1]
    result = metrics.match_points(np.zeros((0, 2)), [[1.0, 2.0], [3.0, 4.0]], [4.0, 4.0])
    assert (result.tp, result.fp, result.fn) == (0, 0, 2)
    result = metrics.match_points([], [], 4.0)
    assert (result.tp, result.fp, result.fn) == (0, 0, 0)


def test_one_prediction_matches_one_head_only():
    # Two heads 1 px apart and one prediction between them: 1 TP, 1 FN.
    result = metrics.match_points([[0.5, 0.0]], [[0.0, 0.0], [1.0, 0.0]], 4.0)
    assert (result.tp, result.fp, result.fn) == (1, 0, 1)


def _brute_force_matching_size(edges: np.ndarray) -> int:
    """Largest matching by trying every assignment of predictions (rows) to heads or nothing."""
    n, m = edges.shape
    best = 0
    for assignment in itertools.product(range(-1, m), repeat=n):
        used = [g for g in assignment if g >= 0]
        if len(used) == len(set(used)) and all(g < 0 or edges[p, g] for p, g in enumerate(assignment)):
            best = max(best, len(used))
    return best


def test_matching_is_maximum_on_random_small_images():
    rng = np.random.default_rng(0)
    for _ in range(40):
        n, m = rng.integers(0, 5, size=2)
        pred = rng.uniform(0, 20, size=(n, 2))
        gt = rng.uniform(0, 20, size=(m, 2))
        radii = rng.uniform(2, 10, size=m)
        edges = np.linalg.norm(pred[:, None] - gt[None], axis=-1) <= radii[None]
        result = metrics.match_points(pred, gt, radii)
        assert result.tp == _brute_force_matching_size(edges)
        assert result.tp + result.fp == n and result.tp + result.fn == m
        matched = result.pred_to_gt[result.pred_to_gt >= 0]
        assert len(set(matched.tolist())) == len(matched)
        for p, g in enumerate(result.pred_to_gt):
            assert g < 0 or edges[p, g]


def test_matching_rejects_bad_input():
    with pytest.raises(ValueError, match="radii"):
        metrics.match_points([[0.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]], [4.0])
    with pytest.raises(ValueError, match="non-negative"):
        metrics.match_points([[0.0, 0.0]], [[0.0, 0.0]], -1.0)
    with pytest.raises(ValueError, match="pred_points"):
        metrics.match_points([[0.0, 0.0, 0.0]], [[0.0, 0.0]], 1.0)


def test_nwpu_radii_hand_values():
    boxes = [[10, 20, 16, 30], [0, 0, 7, 7]]
    sigma_s, sigma_l = metrics.nwpu_radii(boxes)
    # Box 1: w = 6, h = 10 → σ_s = int(6/2) = 3, σ_l = int(sqrt(36 + 100)/2) = int(5.83) = 5.
    # Box 2: w = h = 7 → σ_s = int(3.5) = 3, σ_l = int(sqrt(98)/2) = int(4.95) = 4.
    assert sigma_s.tolist() == [3.0, 3.0]
    assert sigma_l.tolist() == [5.0, 4.0]
    with pytest.raises(ValueError, match="x2 >= x1"):
        metrics.nwpu_radii([[5, 0, 1, 4]])


def test_precision_recall_f1_hand_values():
    # P = 6/8 = 0.75, R = 6/10 = 0.6, F1 = 2·0.45/1.35 = 2/3.
    assert metrics.precision_recall_f1(6, 2, 4) == pytest.approx((0.75, 0.6, 2 / 3))
    # No predictions: P = 0 (as the NWPU evaluator's 1e-20 denominators give), R = 0, F1 = 0.
    assert metrics.precision_recall_f1(0, 0, 5) == (0.0, 0.0, 0.0)
    assert metrics.precision_recall_f1(0, 0, 0) == (0.0, 0.0, 0.0)


# ----------------------------------------------------------------------------------------------
# Accumulators.


def test_localization_accumulator_sums_over_the_split():
    acc = metrics.LocalizationAccumulator()
    acc.add([[1.0, 0.0], [-3.5, 0.0]], [[0.0, 0.0], [4.0, 0.0]], 4.0)  # tp 2
    acc.add([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.zeros((0, 2)), 4.0)  # fp 3
    acc.add(np.zeros((0, 2)), [[1.0, 2.0], [3.0, 4.0]], 4.0)  # fn 2
    # Summed: TP 2, FP 3, FN 2 → P = 2/5, R = 2/4, F1 = 2·0.2/0.9 = 4/9 (the mean of the
    # per-image F1s, (1 + 0 + 0)/3, would differ).
    result = acc.result()
    assert (result["tp"], result["fp"], result["fn"]) == (2, 3, 2)
    assert (result["precision"], result["recall"], result["f1"]) == pytest.approx((0.4, 0.5, 4 / 9))


def test_localization_accumulators_merge_by_adding():
    a, b = metrics.LocalizationAccumulator(), metrics.LocalizationAccumulator()
    a.add([[1.0, 0.0]], [[0.0, 0.0], [9.0, 9.0]], 2.0)  # tp 1, fn 1
    b.add([[50.0, 50.0]], [[0.0, 0.0]], 2.0)  # fp 1, fn 1
    merged = a + b
    assert (merged.tp, merged.fp, merged.fn) == (1, 1, 2)
    assert metrics.LocalizationAccumulator.from_sums(a.sums() + b.sums()) == merged


def test_counting_accumulator_hand_values_and_merge():
    # Image 1: 4 × 4 map, pred 4.5, gt 4 → error 0.5; GAME(1) 1.5 (see above).
    # Image 2: 5 × 3 map, pred 15, gt 13 → error 2;   GAME(1) 8.
    first, second = metrics.CountingAccumulator(), metrics.CountingAccumulator()
    first.add_density(DENSITY_4X4, POINTS_4X4)
    second.add_density(DENSITY_5X3, POINTS_5X3)
    both = first + second
    result = both.result()
    assert result["mae"] == pytest.approx((0.5 + 2) / 2)
    assert result["rmse"] == pytest.approx(math.sqrt((0.25 + 4) / 2))
    assert result["nae"] == pytest.approx((0.5 / 4 + 2 / 13) / 2)
    assert result["game0"] == pytest.approx((0.5 + 2) / 2)
    assert result["game1"] == pytest.approx((1.5 + 8) / 2)
    assert first.result()["game2"] == pytest.approx(3.5)
    assert first.result()["game3"] == pytest.approx(3.5)
    restored = metrics.CountingAccumulator.from_sums(both.sums())
    assert restored.result() == pytest.approx(result)


def test_counting_accumulator_counts_only():
    acc = metrics.CountingAccumulator()
    acc.add([10.0, 0.0], [8, 0])
    acc.add(5.0, 10)
    result = acc.result()
    # Same three images as test_counting_metrics_hand_values; no GAME without density maps.
    assert result == pytest.approx({"mae": 7 / 3, "rmse": math.sqrt(29 / 3), "nae": 0.375})
    with pytest.raises(ValueError, match="no images"):
        metrics.CountingAccumulator().result()
