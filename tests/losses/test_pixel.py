"""Tests of the Gaussian ground truth and the pixel-wise L2 loss."""

import numpy as np
import pytest
from scipy import ndimage, spatial

import jax
import jax.numpy as jnp
from jax.test_util import check_grads

from gcc_jax.losses import gaussian_density, l2_loss
from gcc_jax.losses import _pixel
from loss_cases import BAD_SHAPES, EDGE_CASES, assert_all_finite, random_batch
from tolerances import EPS32, probable_rtol, sum_rtol

# L2's float32 round-off between two evaluation orders (any CPU): a head's kernel is
# normalised over the ≤ 256 pixels of each axis, ≤ 32 heads are summed into each cell and the
# squared residuals over 256 cells (tests/tolerances.py), plus a few ulps of exp.
L2_RTOL = probable_rtol(256 + 32 + 256) + 4 * EPS32


def scipy_density(pixels, sigmas, *, height, width, stride):
    """Dot at each integer pixel ``(column, row)``, smoothed by scipy, summed into cells."""
    total = np.zeros((height * stride, width * stride))
    for (column, row), sigma in zip(pixels, sigmas):
        delta = np.zeros_like(total)
        delta[row, column] = 1.0
        total += ndimage.gaussian_filter(delta, sigma, mode="constant", truncate=8.0)
    return total.reshape(height, stride, width, stride).sum(axis=(1, 3))


def test_fixed_sigma_matches_scipy_away_from_the_border():
    pixels = np.asarray([[100, 95], [150, 160], [120, 130]])  # > 6σ inside: no mass lost
    # A head at the centre of pixel (c, r) is the dot scipy smooths at (c, r).
    points = (pixels + 0.5)[None].astype(np.float32)
    ours = gaussian_density(points, np.ones((1, 3), bool), height=32, width=32, stride=8, sigma=15.0)
    expected = scipy_density(pixels, [15.0] * 3, height=32, width=32, stride=8)
    np.testing.assert_allclose(ours[0], expected, atol=L2_RTOL * expected.max())


def test_adaptive_sigma_matches_k_nearest_neighbours():
    rng = np.random.default_rng(1)
    pixels = rng.integers(90, 166, (8, 2))
    pixels = np.unique(pixels, axis=0)
    distances, _ = spatial.cKDTree(pixels).query(pixels, k=4)
    sigmas = 0.1 * distances[:, 1:].sum(axis=1)
    points = (pixels + 0.5)[None].astype(np.float32)
    ours = gaussian_density(points, np.ones(points.shape[:2], bool), height=32, width=32, stride=8,
                            adaptive=True)
    expected = scipy_density(pixels, sigmas, height=32, width=32, stride=8)
    # σ from float32 k-NN distances is off by a few u relatively, which moves a kernel value at
    # distance d by (d/σ)²·δσ/σ: ≤ 64·4u within its 8σ truncation.
    np.testing.assert_allclose(ours[0], expected, atol=(L2_RTOL + 128 * EPS32) * expected.max())


def test_adaptive_sigma_with_few_heads():
    points = np.asarray([[[40.0, 50.0], [70.0, 90.0], [0.0, 0.0]]], np.float32)
    # One head: σ = mean(image height, width) / 4 = (256 + 128) / 8.
    one = gaussian_density(points, np.asarray([[True, False, False]]), height=32, width=16, adaptive=True)
    fixed = gaussian_density(points, np.asarray([[True, False, False]]), height=32, width=16, sigma=48.0)
    np.testing.assert_array_equal(one, fixed)  # σ = 48 exactly: the same computation
    # Two heads: each uses its one neighbour, σ = 0.3 · 50.
    two = gaussian_density(points, np.asarray([[True, True, False]]), height=32, width=16, adaptive=True)
    fixed = gaussian_density(points, np.asarray([[True, True, False]]), height=32, width=16, sigma=15.0)
    # 0.3 · 50 rounds in float32 (δσ/σ ≤ u): kernels move by ≤ (d/σ)²·u ≤ 64u.
    np.testing.assert_allclose(two, fixed, rtol=64 * EPS32, atol=64 * EPS32 * np.max(fixed))


@pytest.mark.parametrize("adaptive", [False, True])
def test_mass_is_preserved_at_and_beyond_the_border(adaptive):
    points = np.asarray([[[0.0, 0.0], [-5.0, 30.0], [127.9, 64.0], [300.0, 300.0], [64.0, 64.0]]],
                        np.float32)
    mask = np.asarray([[True, True, True, True, False]])
    maps = gaussian_density(points, mask, height=16, width=16, stride=8, sigma=15.0, adaptive=adaptive)
    np.testing.assert_allclose(maps.sum(), 4.0, rtol=sum_rtol(256) + L2_RTOL)
    assert np.all(maps >= 0)


def test_loss_is_squared_error_to_the_ground_truth():
    density, points, mask = random_batch(2)
    (loss, terms), grad = jax.value_and_grad(
        lambda d: l2_loss(d, points, mask, sigma=4.0), has_aux=True
    )(jnp.asarray(density))
    target = gaussian_density(points, mask, height=16, width=16, sigma=4.0)
    expected = ((density - target) ** 2).sum(axis=(1, 2))
    # The same float32 residuals, squared and summed over 256 cells in another order.
    np.testing.assert_allclose(terms["total"], expected, rtol=sum_rtol(256) + 2 * EPS32)
    np.testing.assert_allclose(loss, expected.mean(), rtol=sum_rtol(256) + 4 * EPS32)
    # Element-wise 2(d − t)/B: a few roundings of the parts, absolutely where d ≈ t.
    scale = np.abs(density) + np.abs(np.asarray(target))
    np.testing.assert_allclose(grad, 2 * (density - target) / 3, rtol=4 * EPS32, atol=4 * EPS32 * scale.max())
    np.testing.assert_allclose(target.sum(axis=(1, 2)), mask.sum(axis=1), rtol=sum_rtol(256) + L2_RTOL)


def test_zero_point_slots():
    density = np.ones((2, 4, 4), np.float32)
    loss, terms = l2_loss(density, np.zeros((2, 0, 2)), np.zeros((2, 0), bool))
    np.testing.assert_allclose(terms["total"], [16.0, 16.0])
    maps = gaussian_density(np.zeros((2, 0, 2)), np.zeros((2, 0), bool), height=4, width=4)
    np.testing.assert_array_equal(maps, 0.0)


@pytest.mark.parametrize("adaptive", [False, True])
def test_jit_equals_eager(adaptive):
    density, points, mask = random_batch(3, size=8)
    jitted = jax.jit(lambda d, x, m: l2_loss(d, x, m, adaptive=adaptive))(density, points, mask)
    with jax.disable_jit():
        eager = l2_loss(density, points, mask, adaptive=adaptive)
    np.testing.assert_allclose(jitted[0], eager[0], rtol=L2_RTOL)
    np.testing.assert_allclose(jitted[1]["total"], eager[1]["total"], rtol=L2_RTOL)


@pytest.mark.parametrize("adaptive", [False, True])
def test_batch_equals_loop_over_images(adaptive):
    density, points, mask = random_batch(4)
    _, terms = l2_loss(density, points, mask, adaptive=adaptive)
    for b in range(density.shape[0]):
        count = int(mask[b].sum())
        _, single = l2_loss(density[b:b + 1], points[b:b + 1, :count], mask[b:b + 1, :count],
                            adaptive=adaptive)
        np.testing.assert_allclose(terms["total"][b], single["total"][0], rtol=L2_RTOL)


@pytest.mark.parametrize("adaptive", [False, True])
def test_padding_and_permutation_change_nothing(adaptive):
    density, points, mask = random_batch(5, counts=(5, 3, 12))

    def value_and_grad(x, m):
        return jax.value_and_grad(lambda a: l2_loss(a, x, m, adaptive=adaptive), has_aux=True)(
            jnp.asarray(density)
        )

    (loss, terms), grad = value_and_grad(points, mask)
    junk = np.full((3, 20, 2), np.nan, np.float32)
    junk[:, ::2] = 1e20
    padded = value_and_grad(np.concatenate([points, junk], 1),
                            np.concatenate([mask, np.zeros((3, 20), bool)], 1))
    perm = np.random.default_rng(0).permutation(points.shape[1])
    permuted = value_and_grad(points[:, perm], mask[:, perm])
    for (other_loss, other_terms), other_grad in (padded, permuted):
        np.testing.assert_allclose(other_loss, loss, rtol=L2_RTOL)
        np.testing.assert_allclose(other_terms["total"], terms["total"], rtol=L2_RTOL)
        np.testing.assert_allclose(other_grad, grad, rtol=2 * L2_RTOL, atol=2 * L2_RTOL * np.abs(grad).max())




@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_cases_are_finite(case, adaptive):
    density, pts, msk = EDGE_CASES[case]
    density = jnp.asarray(density, jnp.float32)
    points = jnp.broadcast_to(jnp.asarray(pts, jnp.float32), (2, 2, 2))
    mask = jnp.broadcast_to(jnp.asarray(msk), (2, 2))
    (loss, terms), grad = jax.value_and_grad(
        lambda d: l2_loss(d, points, mask, adaptive=adaptive), has_aux=True
    )(density)
    assert_all_finite(loss, terms, grad)
    target = gaussian_density(points, mask, height=8, width=8, adaptive=adaptive)
    np.testing.assert_allclose(target.sum(axis=(1, 2)), np.sum(mask, axis=1), rtol=1e-5)


def test_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        density = jnp.asarray(np.random.default_rng(8).uniform(0.0, 0.1, (2, 4, 4)))
        points = jnp.asarray([[[5.0, 7.0], [20.0, 25.0], [0.0, 0.0]], [[9.0, 3.0], [0.0, 0.0], [0.0, 0.0]]])
        mask = jnp.asarray([[True, True, False], [True, False, False]])
        for adaptive in (False, True):
            check_grads(lambda d: l2_loss(d, points, mask, sigma=4.0, adaptive=adaptive)[0], (density,),
                        order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sigma=0.0), "sigma"),
        (dict(sigma=-1.0), "sigma"),
        (dict(stride=0), "stride"),
        (dict(stride=3.5), "stride"),
        (dict(adaptive="yes"), "adaptive"),
    ],
)
def test_bad_hyper_parameters_raise(kwargs, message):
    density, points, mask = random_batch(10)
    with pytest.raises(ValueError, match=message):
        l2_loss(density, points, mask, **kwargs)
    with pytest.raises(ValueError, match=message):
        gaussian_density(points, mask, height=16, width=16, **kwargs)


@pytest.mark.parametrize("shapes, message", BAD_SHAPES)
def test_bad_shapes_raise(shapes, message):
    density, points, mask = (np.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=message):
        l2_loss(density, points, mask.astype(bool))


def test_gaussian_density_bad_sizes_raise():
    with pytest.raises(ValueError, match="height"):
        gaussian_density(np.zeros((1, 3, 2)), np.ones((1, 3), bool), height=0, width=4)
    with pytest.raises(ValueError, match="point_mask"):
        gaussian_density(np.zeros((1, 3, 2)), np.ones((1, 2), bool), height=4, width=4)


def test_one_compilation_per_shape():
    density, points, mask = random_batch(17, batch=2, size=5, max_points=7, counts=(3, 7))
    l2_loss(density, points, mask)
    compiled = _pixel._batch_losses._cache_size()
    l2_loss(density * 2, points + 1, ~mask)
    assert _pixel._batch_losses._cache_size() == compiled
