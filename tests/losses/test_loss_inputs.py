"""What every loss does with the dtypes and values a user may hand it.

Low-precision and integer inputs are cast to float32 before the jitted computation, so the
loss of a float16 map must equal, bit for bit, the loss of the same values given as float32.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gcc_jax.losses import (
    LOSS_NAMES,
    bayesian_loss,
    dm_count_loss,
    generalized_loss,
    generalized_loss_potentials,
    get_loss,
    l2_loss,
)
from loss_cases import assert_all_finite, random_batch

LOSSES = {
    "gl_chunked": functools.partial(generalized_loss, crop_size=128, implementation="chunked"),
    "gl_dense": functools.partial(generalized_loss, crop_size=128, implementation="dense"),
    "bl": functools.partial(bayesian_loss, st_size=128.0),
    "dm_count": dm_count_loss,
    "l2": l2_loss,
}


def _value_and_grad(loss_fn, density, points, mask):
    return jax.value_and_grad(lambda d: loss_fn(d, points, mask), has_aux=True)(density)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_density_is_computed_in_float32(name, dtype):
    density, points, mask = random_batch(0)
    low = jnp.asarray(density, dtype)
    loss, terms = LOSSES[name](low, points, mask)
    want_loss, want_terms = LOSSES[name](np.asarray(low, np.float32), points, mask)
    assert loss.dtype == jnp.float32
    np.testing.assert_array_equal(loss, want_loss)
    for term in want_terms:
        assert terms[term].dtype == jnp.float32, term
        np.testing.assert_array_equal(terms[term], want_terms[term], err_msg=term)
    grad = jax.grad(lambda d: LOSSES[name](d, points, mask)[0])(low)
    assert grad.dtype == dtype and np.all(np.isfinite(np.asarray(grad, np.float32)))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_integer_points_and_mask_equal_float_and_bool(name):
    density, points, mask = random_batch(1)
    pixels = np.round(points)
    loss, terms = LOSSES[name](density, pixels.astype(np.int32), mask.astype(np.int32))
    want_loss, want_terms = LOSSES[name](density, pixels.astype(np.float32), mask)
    np.testing.assert_array_equal(loss, want_loss)
    for term in want_terms:
        np.testing.assert_array_equal(terms[term], want_terms[term], err_msg=term)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize(
    "argument, convert, message",
    [
        ("density", lambda x: x > 0.02, "density must hold real numbers"),
        ("density", lambda x: x.astype(np.complex64), "density must hold real numbers"),
        ("points", lambda x: x.astype(np.complex64), "points must hold real numbers"),
        ("mask", lambda x: x.astype(np.float32), "point_mask must be boolean"),
    ],
)
def test_bad_dtypes_raise(name, argument, convert, message):
    batch = dict(zip(("density", "points", "mask"), random_batch(2)))
    batch[argument] = convert(batch[argument])
    with pytest.raises(ValueError, match=message):
        LOSSES[name](batch["density"], batch["points"], batch["mask"])


# DM-Count is left out: its Sinkhorn scales by the normalised map and takes a logarithm, so a
# negative cell gives NaN there as in the reference (documented in gcc_jax.losses).
@pytest.mark.parametrize("name", ["bl", "gl_chunked", "gl_dense", "l2"])
def test_negative_cells_give_finite_loss_and_gradient(name):
    density, points, mask = random_batch(3)
    density[:, 3:6, 2:9] = -0.03  # a model without a non-negative output head
    (loss, terms), grad = _value_and_grad(LOSSES[name], jnp.asarray(density), points, mask)
    assert_all_finite(loss, terms, grad)


@pytest.mark.parametrize("name", ["gl_chunked", "gl_dense"])
@pytest.mark.parametrize("floor", [0.0, 1e-4])
def test_gl_density_floor_is_max_in_value_and_identity_in_gradient(name, floor):
    density, points, mask = random_batch(4)
    density[:, 3:6, 2:9] = -0.03
    density[:, 9:, :] = 0.0
    loss_fn = functools.partial(LOSSES[name], density_floor=floor)
    (loss, terms), grad = _value_and_grad(loss_fn, jnp.asarray(density), points, mask)
    # The same computation at the raised map, where the floor changes nothing.
    raised = jnp.asarray(np.maximum(density, floor))
    (want_loss, want_terms), want_grad = _value_and_grad(loss_fn, raised, points, mask)
    np.testing.assert_array_equal(loss, want_loss)
    for term in want_terms:
        np.testing.assert_array_equal(terms[term], want_terms[term], err_msg=term)
    np.testing.assert_array_equal(grad, want_grad)
    f, g = generalized_loss_potentials(density, points, mask, crop_size=128, density_floor=floor)
    want_f, want_g = generalized_loss_potentials(raised, points, mask, crop_size=128, density_floor=floor)
    np.testing.assert_array_equal(f, want_f)
    np.testing.assert_array_equal(g, want_g)


@pytest.mark.parametrize("name", ["gl_chunked", "gl_dense"])
def test_gl_density_floor_bounds_the_gradient_of_an_all_zero_map(name):
    points = jnp.asarray([[[10.0, 10.0], [30.0, 50.0]]])
    mask = jnp.ones((1, 2), bool)
    zero = jnp.zeros((1, 8, 8))
    _, unguarded = _value_and_grad(functools.partial(LOSSES[name], crop_size=64), zero, points, mask)
    (loss, terms), guarded = _value_and_grad(
        functools.partial(LOSSES[name], crop_size=64, density_floor=1e-4), zero, points, mask
    )
    assert_all_finite(loss, terms, guarded)
    # Without a floor the point potentials hit the exponent cap: gradients near 1e26. With a
    # floor of 1e-4 the map is treated as 64 cells of 1e-4 against two heads, whose gradient
    # is of the order of the point term's slope over that mass (tens, not 1e26).
    assert np.abs(unguarded).max() > 1e20
    assert np.abs(guarded).max() < 1e3


@pytest.mark.parametrize(
    ("name", "options"), [(name, {}) for name in LOSS_NAMES] + [("l2", {"adaptive": True})], ids=str
)
def test_dense_crowd_is_finite(name, options):
    """4000 heads on a 64×64 map of a 512-pixel crop: every registered loss (its official
    defaults, BL with a 1024-pixel source image) stays finite in value, terms and gradient."""
    rng = np.random.default_rng(7)
    density = jnp.asarray(rng.uniform(0, 0.5, (1, 64, 64)).astype(np.float32))
    batch = {
        "points": jnp.asarray(rng.uniform(0, 512, (1, 4000, 2)).astype(np.float32)),
        "point_mask": jnp.ones((1, 4000), bool),
        "st_size": jnp.asarray([1024.0]),
        "targets": jnp.ones((1, 4000), jnp.float32),
    }
    loss = get_loss(name)
    hyper_parameters = loss.hyper_parameters(options, stride=8, crop_size=512)
    (value, terms), grad = jax.value_and_grad(lambda d: loss(d, batch, hyper_parameters), has_aux=True)(density)
    assert_all_finite(value, terms, grad)


@pytest.mark.parametrize("floor", [-1e-3, float("nan"), "x"])
def test_bad_density_floor_raises(floor):
    density, points, mask = random_batch(5)
    with pytest.raises(ValueError, match="density_floor"):
        generalized_loss(density, points, mask, crop_size=128, density_floor=floor)


def test_gl_potentials_refuse_the_loss_value_hyper_parameters():
    # tau, d_point, d_pixel and batch_reduction weight or reduce the loss terms only: passed to
    # the potentials they would be silently ignored, so they are refused by name.
    density, points, mask = random_batch(1)
    with pytest.raises(ValueError, match="batch_reduction, tau"):
        generalized_loss_potentials(density, points, mask, crop_size=128, tau=0.5, batch_reduction="mean")
    for name, value in (("d_point", "l2"), ("d_pixel", "l1")):
        with pytest.raises(ValueError, match=name):
            generalized_loss_potentials(density, points, mask, crop_size=128, **{name: value})
