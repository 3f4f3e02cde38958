"""Tests of gcc_jax.localization: points from density maps (GL authors' recipe)."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcc_jax import localization
from gcc_jax.localization import DEFAULT_THRESHOLD, PeakSettings, density_to_point_list, density_to_points
from tolerances import EPS32


def test_doctests():
    assert doctest.testmod(localization).failed == 0


def _outer(u, v):
    """A separable density map u(y)·v(x) as a batch of one, float32."""
    return np.outer(np.asarray(u, np.float32), np.asarray(v, np.float32))[None]


def _found(detections, i=0):
    """The (x, y) list and scores of image i, in output (score) order."""
    keep = np.asarray(detections.mask[i])
    return np.asarray(detections.points[i])[keep].tolist(), np.asarray(detections.scores[i])[keep].tolist()


# Bilinear ×8, align_corners=False: output pixel p reads source position (p + ½)/8 − ½.
# Profile v = [0, 0, 0, 1, 0.5, 0] around cell 3:
#   p = 27: src 2.9375 → 0.0625·v[2] + 0.9375·v[3] = 0.9375
#   p = 28: src 3.0625 → 0.9375·v[3] + 0.0625·v[4] = 0.9375 + 0.03125 = 0.96875
#   p = 29: src 3.1875 → 0.8125·v[3] + 0.1875·v[4] = 0.8125 + 0.09375 = 0.90625
# Profile u = [0, 0.5, 1, 0, 0, 0] around cell 2:
#   q = 18: src 1.8125 → 0.1875·0.5 + 0.8125·1 = 0.90625
#   q = 19: src 1.9375 → 0.0625·0.5 + 0.9375·1 = 0.96875
#   q = 20: src 2.0625 → 0.9375·1 + 0.0625·0   = 0.9375
U_PROFILE = [0, 0.5, 1, 0, 0, 0]
V_PROFILE = [0, 0, 0, 1, 0.5, 0]


def test_upsampling_hand_values():
    up = np.asarray(localization.upsample_bilinear(_outer([1, 1], V_PROFILE), stride=8))
    assert up.shape == (1, 16, 48)
    np.testing.assert_array_equal(up[0, 0, 27:30], [0.9375, 0.96875, 0.90625])
    # Source positions below 0 are clamped: pixels 0..3 all read cell 0 (here 0) and the
    # constant rows stay 1 (values are not rescaled).
    np.testing.assert_array_equal(up[0, :, 28], np.full(16, 0.96875))


def test_upsampling_matches_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    for shape in [(2, 7, 5), (1, 1, 3), (3, 4, 4)]:
        density = rng.uniform(0, 1, size=shape).astype(np.float32)
        ours = np.asarray(localization.upsample_bilinear(density, stride=8))
        theirs = torch.nn.functional.interpolate(torch.from_numpy(density)[:, None], scale_factor=8, mode="bilinear")
        # Two-point interpolation per axis (weights in float32) of values ≤ 1: a few roundings.
        np.testing.assert_allclose(ours, theirs[:, 0].numpy(), rtol=8 * EPS32, atol=8 * EPS32)


def test_single_peak_location_and_score():
    # The separable map peaks where both profiles do: x = 28, y = 19, value 0.96875².
    found = density_to_points(_outer(U_PROFILE, V_PROFILE), max_points=16)
    points, scores = _found(found)
    assert points == [[28.0, 19.0]]
    assert scores == [0.96875**2]  # 0.9384765625, exact in float32
    assert int(found.num_peaks[0]) == 1 and int(found.overflow[0]) == 0
    # pixel_offset moves to pixel centres.
    assert _found(density_to_points(_outer(U_PROFILE, V_PROFILE), max_points=4, pixel_offset=0.5))[0] == [[28.5, 19.5]]


def test_threshold_is_inclusive_and_scales_with_density():
    density = _outer(U_PROFILE, V_PROFILE)
    score = np.float32(0.96875**2)
    assert len(_found(density_to_points(density, threshold=score, max_points=4))[0]) == 1
    above = np.nextafter(score, np.float32(1))
    assert len(_found(density_to_points(density, threshold=above, max_points=4))[0]) == 0
    # Values are not rescaled by the upsampling: a map 10× weaker peaks at 0.0938… < 0.1.
    assert len(_found(density_to_points(density * 0.1, threshold=0.1, max_points=4))[0]) == 0
    assert len(_found(density_to_points(density * 0.1, threshold=0.09, max_points=4))[0]) == 1


def test_isolated_cell_plateau_quirk_and_one_per_plateau():
    # One cell (row 2, col 3) of 1 with zero neighbours: pixels 27 and 28 both read
    # 0.9375·1 (src 2.9375 and 3.0625), rows 19 and 20 likewise, so the recipe finds a 2 × 2
    # plateau of 0.9375² = 0.87890625 and reports all four pixels.
    density = np.zeros((1, 6, 6), np.float32)
    density[0, 2, 3] = 1.0
    points, scores = _found(density_to_points(density, max_points=16))
    assert sorted(points) == [[27.0, 19.0], [27.0, 20.0], [28.0, 19.0], [28.0, 20.0]]
    assert scores == [0.87890625] * 4
    # One per plateau: the first in row-major order.
    points, _ = _found(density_to_points(density, max_points=16, one_per_plateau=True))
    assert points == [[27.0, 19.0]]


def test_corner_peak_border_behaviour():
    # Cell (0, 0) of 1: output pixels 0..3 all clamp to source 0 (value 1) and pixel 4 reads
    # 0.9375, so a 4 × 4 plateau of 1 sits in the corner; the max-pool pads with −∞, so the
    # corner pixels are peaks: 16 of them, or (0, 0) alone with one_per_plateau.
    density = np.zeros((1, 4, 4), np.float32)
    density[0, 0, 0] = 1.0
    points, scores = _found(density_to_points(density, max_points=32))
    assert sorted(points) == sorted([[float(x), float(y)] for x in range(4) for y in range(4)])
    assert scores == [1.0] * 16
    assert _found(density_to_points(density, max_points=32, one_per_plateau=True))[0] == [[0.0, 0.0]]


# Two separable peaks on a 4 × 6 map. Columns v = [0, 1, 0.25, 0.125, 0.5, 0]:
#   near cell 1: p = 11 (src 0.9375) reads 0.0625·0 + 0.9375·1 = 0.9375;
#                p = 12 (src 1.0625) reads 0.9375·1 + 0.0625·0.25 = 0.953125 (the maximum)
#   near cell 4: p = 35 (src 3.9375) reads 0.0625·0.125 + 0.9375·0.5 = 0.4765625 (the maximum);
#                p = 36 (src 4.0625) reads 0.9375·0.5 + 0.0625·0 = 0.46875
#   (v[3] = 0.125 breaks the tie p = 35 / p = 36 that v[3] = 0 would make; v[5] = 0 avoids
#   the flat border plateau that a non-zero last cell gives.)
# Rows u = [0, 1, 0.25, 0]: y = 12 (0.953125) as for the columns.
TWO_PEAKS = _outer([0, 1, 0.25, 0], [0, 1, 0.25, 0.125, 0.5, 0])


def test_two_peaks_and_padding_region():
    points, scores = _found(density_to_points(TWO_PEAKS, max_points=8))
    assert points == [[12.0, 12.0], [35.0, 12.0]]
    # Exactly representable weights and values: at most one rounding per axis product.
    np.testing.assert_allclose(scores, [0.953125**2, 0.4765625 * 0.953125], rtol=2 * EPS32)
    # Image of 32 × 24 pixels padded to 32 × 48: the right peak lies in the padding.
    assert _found(density_to_points(TWO_PEAKS, max_points=8, image_hw=[32, 24]))[0] == [[12.0, 12.0]]
    assert _found(density_to_points(TWO_PEAKS, max_points=8, image_hw=[[32, 48]]))[0] == points


def test_max_points_keeps_highest_and_reports_overflow():
    density = np.concatenate([TWO_PEAKS, np.zeros((1, 4, 6), np.float32)], axis=1)
    density[0, 5, 4] = 2.0  # an isolated cell: a 2 × 2 plateau of 2·0.9375² = 1.7578125
    full = density_to_points(density, max_points=64)
    assert int(full.num_peaks[0]) == 6
    capped = density_to_points(density, max_points=3)
    points, scores = _found(capped)
    assert scores == [1.7578125] * 3  # three of the four plateau pixels, the highest scores
    assert int(capped.num_peaks[0]) == 6 and int(capped.overflow[0]) == 3
    assert np.asarray(capped.mask).all()


def test_batch_equals_single_and_jit():
    rng = np.random.default_rng(2)
    density = rng.uniform(0, 0.2, size=(3, 5, 7)).astype(np.float32)
    hw = np.array([[40, 56], [33, 20], [8, 8]])
    batch = density_to_points(density, max_points=64, image_hw=hw)
    for i in range(3):
        single = density_to_points(density[i : i + 1], max_points=64, image_hw=hw[i])
        for a, b in zip(batch, single):
            np.testing.assert_array_equal(np.asarray(a)[i], np.asarray(b)[0])
    jitted = jax.jit(lambda d, t: density_to_points(d, threshold=t, max_points=64, image_hw=hw))
    for a, b in zip(jitted(jnp.asarray(density), 0.05), batch):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Only the valid region yields points (third map: an 8 × 8 image in a 40 × 56 input).
    for i, (height, width) in enumerate(hw):
        points = np.asarray(batch.points[i])[np.asarray(batch.mask[i])]
        assert (points[:, 0] < width).all() and (points[:, 1] < height).all()


def test_matches_gl_authors_recipe_in_pytorch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(3)
    for _ in range(3):
        density = rng.gamma(0.5, 0.1, size=(1, 12, 16)).astype(np.float32)
        # The recipe (GeneralizedLoss-Counting-Pytorch issue #3), threshold 0.05.
        up = F.interpolate(torch.from_numpy(density)[:, None], scale_factor=8, mode="bilinear")
        peaks = (F.max_pool2d(up, 3, 1, 1) == up).float() * up
        peaks = peaks[0, 0].numpy()
        peaks[peaks < 0.05] = 0
        y, x = peaks.nonzero()
        expected = sorted(zip(x.astype(float).tolist(), y.astype(float).tolist()))
        found = density_to_point_list(density, threshold=0.05)[0]
        assert len(expected) > 5
        assert sorted(map(tuple, found.tolist())) == expected


def test_point_list_grows_past_its_first_guess():
    # A checkerboard of isolated cells: each gives a 2 × 2 plateau (more on the border), so
    # there are more than the 1024 slots the list version tries first.
    density = (np.indices((24, 24)).sum(axis=0) % 2).astype(np.float32)
    total = int(density_to_points(density[None], max_points=10).num_peaks[0])
    assert total > 1024
    (points,) = density_to_point_list(density)
    assert points.shape == (total, 2) and points.dtype == np.float32
    (capped,) = density_to_point_list(density, max_points=10)
    assert capped.shape == (10, 2)
    # A list of maps of different sizes, and (points, scores) pairs.
    results = density_to_point_list([TWO_PEAKS[0], np.zeros((3, 3))], return_scores=True)
    assert results[0][0].tolist() == [[12.0, 12.0], [35.0, 12.0]] and results[1][0].shape == (0, 2)


def test_peak_settings_hold_the_recipe_defaults_and_find_the_same_points():
    # The one place of the defaults: density_to_points' keyword defaults are PeakSettings' fields.
    assert PeakSettings() == PeakSettings(threshold=DEFAULT_THRESHOLD, pixel_offset=0.0, one_per_plateau=False)
    assert DEFAULT_THRESHOLD == 0.05
    settings = PeakSettings(threshold=0.3, pixel_offset=4.0, one_per_plateau=True)
    (found,) = settings.point_list(TWO_PEAKS, image_hw=[32, 24])
    expected = density_to_point_list(TWO_PEAKS, threshold=0.3, pixel_offset=4.0, one_per_plateau=True, image_hw=[32, 24])
    np.testing.assert_array_equal(found, expected[0])
    assert found.tolist() == [[16.0, 16.0]]
    for bad, match in (
        ({"threshold": -0.1}, "threshold"), ({"threshold": float("nan")}, "threshold"),
        ({"pixel_offset": float("inf")}, "pixel_offset"), ({"one_per_plateau": "yes"}, "one_per_plateau"),
    ):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            PeakSettings(**bad)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="squeeze"):
        density_to_points(np.zeros((1, 4, 4, 1)))
    with pytest.raises(ValueError, match="window"):
        density_to_points(np.zeros((1, 4, 4)), window=2)
    with pytest.raises(ValueError, match="stride"):
        density_to_points(np.zeros((1, 4, 4)), stride=0)
    with pytest.raises(ValueError, match="max_points"):
        density_to_points(np.zeros((1, 4, 4)), max_points=0)
    with pytest.raises(ValueError, match="image_hw"):
        density_to_points(np.zeros((2, 4, 4)), image_hw=np.zeros((3, 2)))
