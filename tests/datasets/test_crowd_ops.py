"""Tests of gcc_jax.data.ops: each op eagerly, inside tf.data, and against hand computations."""

import math

import numpy as np
import pytest
import tensorflow as tf

from gcc_jax.data import ops


def in_tf_data(fn, *args):
    """Runs ``fn(*args)`` inside a tf.data map (graph mode) and returns numpy results."""
    dataset = tf.data.Dataset.from_tensors(tuple(tf.convert_to_tensor(a) for a in args)).map(lambda *a: fn(*a))
    return tf.nest.map_structure(lambda t: t.numpy(), next(iter(dataset)))


def eager(fn, *args):
    return tf.nest.map_structure(lambda t: np.asarray(t), fn(*(tf.convert_to_tensor(a) for a in args)))


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
    rule = ops.ResizeRule("shorter_side", 512, 2048)
    for run in (eager, in_tf_data):
        h, w, sx, sy = run(lambda a, b: ops.resize_shape(a, b, rule), height, width)
        assert (int(h), int(w)) == expected[:2]
        np.testing.assert_allclose([sx, sy], [expected[2]] * 2, rtol=1e-6)


def test_dmcount_rule_matches_hand_computation():
    rule = ops.ResizeRule("dmcount_fit", 384, 1920)
    # 3000 x 4000: rate 1920/3000 = 0.64 makes the width 2560 > 1920, so rate = 1920/4000 = 0.48;
    # sides 1440 x 1920 (multiples of 16).
    h, w, sx, sy = eager(lambda a, b: ops.resize_shape(a, b, rule), 3000, 4000)
    assert (int(h), int(w)) == (1440, 1920)
    np.testing.assert_allclose([sx, sy], [0.48, 0.48], rtol=1e-6)
    # 500 x 333: rate 1920/500 = 3.84; width 333 * 3.84 = 1278.72 floored to 1264.
    h, w, sx, sy = in_tf_data(lambda a, b: ops.resize_shape(a, b, rule), 500, 333)
    assert (int(h), int(w)) == (1920, 1264)
    np.testing.assert_allclose([sx, sy], [1264 / 333, 1920 / 500], rtol=1e-6)


def test_resize_rule_works_on_vectors_and_rejects_bad_values():
    rule = ops.ResizeRule("shorter_side", 512, 2048)
    h, w, _, _ = ops.resize_shape(np.array([427, 700]), np.array([640, 900]), rule)
    np.testing.assert_array_equal(h.numpy(), [512, 700])
    np.testing.assert_array_equal(w.numpy(), [767, 900])
    with pytest.raises(ValueError, match="kind"):
        ops.ResizeRule("bicubic")
    with pytest.raises(ValueError, match="min_size"):
        ops.ResizeRule("shorter_side", 600, 500)
    assert ops.ResizeRule.from_value(None) == ops.ResizeRule("none")
    assert ops.ResizeRule.from_value({"kind": "shorter_side", "min_size": 1, "max_size": 2}).max_size == 2


def test_resize_with_points_scales_image_and_points():
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    points = np.array([[1.0, 2.0], [5.5, 3.5]], np.float32)
    for run in (eager, in_tf_data):
        out, moved = run(
            lambda i, p: ops.resize_with_points(i, p, height=8, width=12, scale_x=2.0, scale_y=2.0), image, points
        )
        assert out.shape == (8, 12, 3) and out.dtype == np.float32
        np.testing.assert_allclose(moved, points * 2)
        same, kept = run(lambda i, p: ops.resize_with_points(i, p, height=4, width=6, scale_x=1.0, scale_y=1.0), image, points)
        np.testing.assert_array_equal(same, image.astype(np.float32))
        np.testing.assert_array_equal(kept, points)


def test_upscale_to_min_size_uses_the_shorter_side_ratio():
    image = np.zeros([427, 640, 3], np.uint8)
    points = np.array([[100.0, 50.0]], np.float32)
    out, moved, ratio = eager(lambda i, p: ops.upscale_to_min_size(i, p, min_size=512), image, points)
    assert out.shape == (512, 767, 3)
    np.testing.assert_allclose(ratio, 512 / 427, rtol=1e-6)
    np.testing.assert_allclose(moved, points * 512 / 427, rtol=1e-6)
    big, same, one = eager(lambda i, p: ops.upscale_to_min_size(i, p, min_size=100), image, points)
    assert big.shape == image.shape and one == 1.0


# --- crop rule ------------------------------------------------------------------------------


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
    image = np.random.default_rng(0).integers(0, 255, (80, 90, 3)).astype(np.uint8)
    expected_points = np.array([[0.0, 20.0], [25.0, 25.0], [49.0, 49.0]], np.float32)
    expected_targets = np.array([0.5, 1.0, 25 / 64], np.float32)

    def crop(i, p, s):
        return ops.crop_with_points(i, p, s, top=10, left=20, crop_size=50)

    for run in (eager, in_tf_data):
        out, kept, targets = run(crop, image, points, sizes)
        np.testing.assert_array_equal(out, image[10:60, 20:70])
        np.testing.assert_allclose(kept, expected_points, atol=1e-6)
        np.testing.assert_allclose(targets, expected_targets, atol=1e-6)


def test_crop_with_no_points_and_with_no_heads_inside():
    image = np.zeros([40, 40, 3], np.uint8)
    for points in (np.zeros([0, 2], np.float32), np.array([[1.0, 1.0]], np.float32)):
        sizes = np.full([len(points)], 4.0, np.float32)
        out, kept, targets = in_tf_data(
            lambda i, p, s: ops.crop_with_points(i, p, s, top=20, left=20, crop_size=16), image, points, sizes
        )
        assert out.shape == (16, 16, 3) and kept.shape == (0, 2) and targets.shape == (0,)


def test_random_crop_offsets_cover_both_ends_and_are_stateless():
    tops, lefts = set(), set()
    for i in range(64):
        top, left = eager(lambda: ops.random_crop_offsets(34, 33, crop_size=32, seed=tf.constant([i, 7], tf.int64)))
        tops.add(int(top))
        lefts.add(int(left))
    assert tops == {0, 1, 2} and lefts == {0, 1}
    a = eager(lambda: ops.random_crop_offsets(500, 600, crop_size=64, seed=tf.constant([3, 4], tf.int64)))
    b = in_tf_data(lambda s: ops.random_crop_offsets(500, 600, crop_size=64, seed=s), np.array([3, 4], np.int64))
    assert tuple(map(int, a)) == tuple(map(int, b))


def test_head_box_fraction_of_a_box_straddling_a_corner():
    fraction = eager(
        lambda p, d: ops.head_box_fraction(p, d, left=0, top=0, size=10), np.array([[0.0, 0.0]], np.float32), np.array([6.0], np.float32)
    )
    np.testing.assert_allclose(fraction, [0.25])


# --- flip, padding --------------------------------------------------------------------------


def test_flip_moves_pixels_and_points_together():
    image = np.zeros([5, 8, 3], np.uint8)
    image[2, 1] = 255  # pixel column 1 -> column 8 - 1 - 1 = 6
    points = np.array([[1.5, 2.5], [0.0, 0.0], [8.0, 4.0]], np.float32)
    for run in (eager, in_tf_data):
        flipped, moved = run(ops.flip_with_points, image, points)
        assert flipped[2, 6, 0] == 255 and flipped.sum() == 3 * 255
        np.testing.assert_allclose(moved, [[6.5, 2.5], [8.0, 0.0], [0.0, 4.0]])
        twice, back = run(lambda i, p: ops.flip_with_points(*ops.flip_with_points(i, p)), image, points)
        np.testing.assert_array_equal(twice, image)
        np.testing.assert_allclose(back, points)


def test_pad_points_pads_masks_and_reports_drops():
    points = np.arange(10, dtype=np.float32).reshape(5, 2)
    targets = np.linspace(0.3, 1.0, 5).astype(np.float32)
    for run in (eager, in_tf_data):
        out = run(lambda p, t: ops.pad_points(p, t, max_points=8), points, targets)
        np.testing.assert_array_equal(out["points"][:5], points)
        np.testing.assert_array_equal(out["points"][5:], 0)
        np.testing.assert_array_equal(out["point_mask"], [True] * 5 + [False] * 3)
        np.testing.assert_allclose(out["targets"], np.concatenate([targets, np.zeros(3)]))
        assert (out["num_points"], out["num_dropped"]) == (5, 0)
        cut = run(lambda p, t: ops.pad_points(p, t, max_points=3), points, targets)
        np.testing.assert_array_equal(cut["points"], points[:3])
        assert cut["point_mask"].all() and (cut["num_points"], cut["num_dropped"]) == (5, 2)
        empty = run(lambda p, t: ops.pad_points(p, t, max_points=4), np.zeros([0, 2], np.float32), np.zeros([0], np.float32))
        assert not empty["point_mask"].any() and empty["num_points"] == 0 and not empty["targets"].any()
    with pytest.raises(ValueError, match="max_points"):
        ops.pad_points(points, targets, max_points=0)


def test_pad_to_min_size_and_to_multiple():
    image = np.full([3, 5, 3], 7, np.uint8)
    for run in (eager, in_tf_data):
        out = run(lambda i: ops.pad_to_min_size(i, min_size=4, value=[1, 2, 3]), image)
        assert out.shape == (4, 5, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out[:3], image)
        np.testing.assert_array_equal(out[3], [[1, 2, 3]] * 5)
        multiple = run(lambda i: ops.pad_image_to_multiple(tf.cast(i, tf.float32), multiple=4), image)
        assert multiple.shape == (4, 8, 3)
        assert multiple[:3, :5].min() == 7 and multiple[3].max() == 0 and multiple[:, 5:].max() == 0


# --- head sizes -----------------------------------------------------------------------------


def test_knn_head_sizes_matches_hand_computation():
    points = np.array([[0, 0], [3, 0], [0, 4], [10, 0]], np.float32)
    # (0,0): neighbours at 3, 4, 10. (3,0): 3, 5, 7. (0,4): 4, 5, sqrt(116). (10,0): 7, 10, sqrt(116).
    expected = [17 / 3, 5.0, (9 + math.sqrt(116)) / 3, (17 + math.sqrt(116)) / 3]
    np.testing.assert_allclose(ops.knn_head_sizes(points), expected, rtol=1e-6)
    np.testing.assert_allclose(ops.knn_head_sizes(points[:2]), [3.0, 3.0])
    np.testing.assert_array_equal(ops.knn_head_sizes(points[:1]), [0.0])
    assert ops.knn_head_sizes(np.zeros([0, 2])).shape == (0,)
