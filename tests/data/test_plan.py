"""Tests of gcc_jax.data.plan: the numpy decisions both input backends share, against hand
computations."""

import math

import numpy as np
import pytest

from gcc_jax.data import plan
from gcc_jax.data.plan import ResizeRule, TrainCrop
from tolerances import EPS32

# A quotient rounded once to float32 (a scale factor: a float64 division cast to float32; a head
# box's fraction: a float32 division of exact values) is within EPS32 / 2 of the exact value,
# relatively, on every CPU (IEEE division and conversion are correctly rounded); the float64
# expected value adds its own 2⁻⁵³.
ONE_ROUNDING = EPS32

# --- resize rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "height, width, expected",
    [
        # shorter side 427 < 512: ratio 512/427, long side round(640 * 512/427) = round(767.38).
        (427, 640, (512, 767, 512 / 427)),
        # shorter side (width) 3000 > 2048: ratio 2048/3000, height round(4000 * 0.68267) = 2731.
        (4000, 3000, (2731, 2048, 2048 / 3000)),
        # inside [512, 2048]: unchanged.
        (700, 900, (700, 900, 1.0)),
        # square: both sides follow the ratio.
        (300, 300, (512, 512, 512 / 300)),
    ],
)
def test_shorter_side_rule_matches_hand_computation(height, width, expected):
    h, w, sx, sy = plan.resize_shape(height, width, ResizeRule("shorter_side", 512, 2048))
    assert (int(h), int(w)) == expected[:2]
    np.testing.assert_allclose([sx, sy], [expected[2]] * 2, rtol=ONE_ROUNDING)


def test_dmcount_rule_matches_hand_computation():
    rule = ResizeRule("dmcount_fit", 384, 1920)
    # 3000 x 4000: rate 1920/3000 = 0.64 makes the width 2560 > 1920, so rate = 1920/4000 = 0.48;
    # sides 1440 x 1920 (multiples of 16).
    h, w, sx, sy = plan.resize_shape(3000, 4000, rule)
    assert (int(h), int(w)) == (1440, 1920)
    np.testing.assert_allclose([sx, sy], [0.48, 0.48], rtol=ONE_ROUNDING)
    # 500 x 333: rate 1920/500 = 3.84; width 333 * 3.84 = 1278.72 floored to 1264.
    h, w, sx, sy = plan.resize_shape(500, 333, rule)
    assert (int(h), int(w)) == (1920, 1264)
    np.testing.assert_allclose([sx, sy], [1264 / 333, 1920 / 500], rtol=ONE_ROUNDING)


def test_resize_rule_works_on_vectors_and_rejects_bad_values():
    rule = ResizeRule("shorter_side", 512, 2048)
    h, w, _, _ = plan.resize_shape(np.array([427, 700]), np.array([640, 900]), rule)
    np.testing.assert_array_equal(h, [512, 700])
    np.testing.assert_array_equal(w, [767, 900])
    assert plan.resize_shape(5, 7, ResizeRule()) == (5, 7, 1.0, 1.0)
    with pytest.raises(ValueError, match="kind"):
        ResizeRule("bicubic")
    with pytest.raises(ValueError, match="min_size"):
        ResizeRule("shorter_side", 600, 500)
    assert ResizeRule.from_value(None) == ResizeRule("none")
    assert ResizeRule.from_value({"kind": "shorter_side", "min_size": 1, "max_size": 2}).max_size == 2
    with pytest.raises(ValueError, match="resize must be"):
        ResizeRule.from_value(512)


def test_upscale_uses_the_shorter_side_ratio():
    assert plan.upscale_shape(427, 640, min_size=512)[:2] == (512, 767)
    np.testing.assert_allclose(plan.upscale_shape(427, 640, min_size=512)[2], 512 / 427, rtol=ONE_ROUNDING)
    assert plan.upscale_shape(427, 640, min_size=100) == (427, 640, 1.0)


# --- crop rule ------------------------------------------------------------------------------


def crop_at(top, left, *, hw=(80, 90), flip=False, scale=1.0, ratio=1.0, upscaled=None):
    resized = tuple(round(s * scale) for s in hw)
    return TrainCrop(hw, resized, np.float32(scale), np.float32(scale), upscaled or resized, np.float32(ratio),
                     top, left, flip)


def test_crop_rule_matches_hand_computation():
    # Window: left 20, top 10, side 50, i.e. x in [20, 70], y in [10, 60].
    points = np.array(
        [
            [20.0, 30.0],  # box x [15, 25] -> 5 of 10 inside, y fully: 0.5 -> kept
            [17.0, 30.0],  # box x [12, 22] -> 2 of 10: 0.2 -> dropped
            [45.0, 35.0],  # d 4, fully inside: 1.0 -> kept
            [71.0, 62.0],  # box x [69, 73], y [60, 64]: 1 x 0 -> dropped
            [69.0, 59.0],  # d 8: x [65, 73] -> 5/8, y [55, 63] -> 5/8: 25/64 -> kept
        ],
        np.float32,
    )
    sizes = np.array([10.0, 10.0, 4.0, 4.0, 8.0], np.float32)
    out = plan.train_points(points, sizes, crop_at(10, 20), crop_size=50, min_fraction=0.3,
                            head_size_range=(4.0, 128.0), max_points=4)
    # Scale 1 and integer corners: the points are exact; a fraction is an exact overlap area
    # divided by d²: one rounding (4/9 below; 0.5, 1 and 25/64 are exact).
    np.testing.assert_array_equal(out["points"][:3], [[0.0, 20.0], [25.0, 25.0], [49.0, 49.0]])
    np.testing.assert_allclose(out["targets"], [0.5, 1.0, 25 / 64, 0.0], rtol=ONE_ROUNDING, atol=0)
    np.testing.assert_array_equal(out["point_mask"], [True, True, True, False])
    assert (out["num_points"], out["num_dropped"], out["st_size"]) == (3, 0, 80.0)
    # The flip maps x -> c - x; the head-size clip (here to [4, 6]) applies before the rule.
    flipped = plan.train_points(points, sizes, crop_at(10, 20, flip=True), crop_size=50, min_fraction=0.3,
                                head_size_range=(4.0, 6.0), max_points=4)
    # Head 1 (d 6): x [17, 23] -> 3/6 inside; head 2 (d 6): x [14, 20] -> 0, dropped; head 5
    # (d 6): x [66, 72] and y [56, 62] -> 4/6 each, 4/9.
    np.testing.assert_array_equal(flipped["points"][:3], [[50.0, 20.0], [25.0, 25.0], [1.0, 49.0]])
    np.testing.assert_allclose(flipped["targets"][:3], [0.5, 1.0, 4 / 9], rtol=ONE_ROUNDING, atol=0)


def test_points_follow_the_resize_and_the_upscale():
    points = np.array([[10.0, 20.0]], np.float32)
    crop = crop_at(0, 0, hw=(40, 40), scale=2.0, ratio=1.5, upscaled=(120, 120))
    out = plan.train_points(points, np.array([4.0], np.float32), crop, crop_size=100, min_fraction=0.3,
                            head_size_range=(4.0, 128.0), max_points=2)
    np.testing.assert_allclose(out["points"][0], [30.0, 60.0])
    assert out["st_size"] == 120.0


def test_crop_with_no_points_and_with_no_heads_inside():
    for points in (np.zeros([0, 2], np.float32), np.array([[1.0, 1.0]], np.float32)):
        out = plan.train_points(points, np.full([len(points)], 4.0, np.float32), crop_at(20, 20), crop_size=16,
                                min_fraction=0.3, head_size_range=(4.0, 128.0), max_points=3)
        assert not out["point_mask"].any() and out["num_points"] == 0 and not out["targets"].any()


def test_head_box_fraction_of_a_box_straddling_a_corner():
    fraction = plan.head_box_fraction(np.array([[0.0, 0.0]], np.float32), np.array([6.0], np.float32), left=0, top=0,
                                      size=10)
    np.testing.assert_allclose(fraction, [0.25])


def test_crop_corners_cover_both_ends_and_depend_only_on_the_example():
    rule = ResizeRule()
    crops = [plan.plan_train_crop((34, 33), seed=7, epoch=0, index=i, rule=rule, crop_size=32, min_size_policy="pad",
                                  flip=True) for i in range(64)]  # fmt: skip
    assert {c.top for c in crops} == {0, 1, 2} and {c.left for c in crops} == {0, 1}
    assert 16 < sum(c.flip for c in crops) < 48
    again = plan.plan_train_crop((34, 33), seed=7, epoch=0, index=5, rule=rule, crop_size=32, min_size_policy="pad",
                                 flip=False)
    assert (again.top, again.left, again.flip) == (crops[5].top, crops[5].left, False)
    # An image smaller than the crop: the window starts at 0 ("pad") or the image grows ("upscale").
    small = plan.plan_train_crop((20, 30), seed=0, epoch=0, index=0, rule=rule, crop_size=32, min_size_policy="pad",
                                 flip=True)
    assert (small.top, small.upscaled_hw, small.valid_hw(32), small.st_size) == (0, (20, 30), (20, 30), 20.0)
    grown = plan.plan_train_crop((20, 30), seed=0, epoch=0, index=0, rule=rule, crop_size=32,
                                 min_size_policy="upscale", flip=True)
    assert grown.upscaled_hw == (32, 48) and grown.top == 0 and grown.valid_hw(32) == (32, 32)


# --- orders ---------------------------------------------------------------------------------


def test_train_order_is_the_documented_permutation_split_across_processes():
    order, steps = plan.train_order(10, batch_size=4, seed=3, epoch=1)
    permutation = np.random.default_rng([3, 1]).permutation(10)
    assert steps == 2 and order == permutation[:8].tolist()
    shards = [plan.train_order(10, batch_size=4, seed=3, epoch=1, process_index=p, process_count=2)[0] for p in (0, 1)]
    assert shards[0] == order[0:2] + order[4:6] and shards[1] == order[2:4] + order[6:8]
    assert plan.train_order(10, batch_size=4, seed=3, epoch=1, skip_batches=1)[0] == order[4:]
    assert plan.train_order(10, batch_size=4, seed=3, epoch=1, drop_remainder=False) == (permutation.tolist(), 3)


def test_eval_order_shards_and_sorts_by_padded_size():
    sizes = {0: (50, 40), 1: (20, 20), 2: (33, 10), 3: (20, 30), 4: (17, 17)}
    common = dict(rule=ResizeRule(), pad_multiple=16)
    assert plan.eval_order(5, sizes.get, process_index=1, process_count=2, batch_size=1, **common) == [1, 3]
    # Padded: 0 -> 64x48, 1 -> 32x32, 2 -> 48x16, 3 -> 32x32, 4 -> 32x32; ties by index.
    assert plan.eval_order(5, sizes.get, process_index=0, process_count=1, batch_size=2, **common) == [1, 3, 4, 2, 0]


# --- padding, head sizes --------------------------------------------------------------------


def test_pad_points_pads_masks_and_reports_drops():
    points = np.arange(10, dtype=np.float32).reshape(5, 2)
    targets = np.linspace(0.3, 1.0, 5).astype(np.float32)
    out = plan.pad_points(points, targets, max_points=8)
    np.testing.assert_array_equal(out["points"][:5], points)
    np.testing.assert_array_equal(out["points"][5:], 0)
    np.testing.assert_array_equal(out["point_mask"], [True] * 5 + [False] * 3)
    np.testing.assert_allclose(out["targets"], np.concatenate([targets, np.zeros(3)]))
    assert (out["num_points"], out["num_dropped"]) == (5, 0)
    cut = plan.pad_points(points, targets, max_points=3)
    np.testing.assert_array_equal(cut["points"], points[:3])
    assert cut["point_mask"].all() and (cut["num_points"], cut["num_dropped"]) == (5, 2)
    empty = plan.pad_points(np.zeros([0, 2], np.float32), np.zeros([0], np.float32), max_points=4)
    assert not empty["point_mask"].any() and empty["num_points"] == 0 and not empty["targets"].any()
    with pytest.raises(ValueError, match="max_points"):
        plan.pad_points(points, targets, max_points=0)


def test_eval_points_scale_points_and_boxes_and_keep_the_true_count():
    example = {"image_hw": (40, 56), "points": np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32),
               "boxes": np.array([[0, 0, 2, 2]] * 3, np.float32), "count": np.float32(3), "filename": "a.jpg"}
    out = plan.eval_points(example, rule=ResizeRule("shorter_side", 80, 2048), max_points=2)
    np.testing.assert_array_equal(out["image_hw"], [80, 112])
    np.testing.assert_allclose(out["points"], [[2.0, 4.0], [6.0, 8.0]])
    np.testing.assert_allclose(out["boxes"], [[0, 0, 4, 4]] * 2)
    assert (out["count"], out["num_points"], out["filename"], out["scale"]) == (3.0, 3, b"a.jpg", 2.0)
    assert plan.eval_points(example, rule=ResizeRule(), max_points=None)["points"].shape == (3, 2)


def test_knn_head_sizes_matches_hand_computation():
    points = np.array([[0, 0], [3, 0], [0, 4], [10, 0]], np.float32)
    # (0,0): neighbours at 3, 4, 10. (3,0): 3, 5, 7. (0,4): 4, 5, sqrt(116). (10,0): 7, 10, sqrt(116).
    expected = [17 / 3, 5.0, (9 + math.sqrt(116)) / 3, (17 + math.sqrt(116)) / 3]
    # float64 distances and means (a few 2⁻⁵³) rounded once to float32.
    np.testing.assert_allclose(plan.knn_head_sizes(points), expected, rtol=ONE_ROUNDING)
    np.testing.assert_allclose(plan.knn_head_sizes(points[:2]), [3.0, 3.0])
    np.testing.assert_array_equal(plan.knn_head_sizes(points[:1]), [0.0])
    assert plan.knn_head_sizes(np.zeros([0, 2])).shape == (0,)


def test_pixel_box_follows_the_flip():
    assert crop_at(0, 0, hw=(20, 30)).pixel_box(32).tolist() == [0, 0, 20, 30]
    assert crop_at(0, 0, hw=(20, 30), flip=True).pixel_box(32).tolist() == [0, 2, 20, 32]
    assert crop_at(5, 3, hw=(80, 90), flip=True).pixel_box(32).tolist() == [0, 0, 32, 32]
