"""Tests of the Generalized Loss against the official implementation and its invariances."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from jax.test_util import check_grads

from gcc_jax.losses import generalized_loss, generalized_loss_potentials
from gcc_jax.losses import _generalized, _generalized_chunked, _generalized_common, _generalized_dense
from loss_cases import BAD_SHAPES, EDGE_CASES, assert_all_finite, random_batch
from tolerances import EPS32, gl_rtol, sum_rtol

PARAM_NAMES = ("cost", "scale", "blur", "reach", "scaling", "tau", "p", "d_point", "d_pixel")
NUM_CASES = 7


@pytest.fixture(scope="module")
def reference(data_dir):
    return dict(np.load(data_dir / "gl_reference.npz"))


def case_inputs(reference, index):
    key = f"case{index}/"
    density = reference[key + "density"][None]
    points = reference[key + "points"][None]
    mask = np.ones(points.shape[:2], bool)
    params = {name: reference[key + "param/" + name].item() for name in PARAM_NAMES}
    params["crop_size"] = float(reference[key + "crop_size"])
    return density, points, mask, params


def case_rtol(density, points, params):
    """GL's float32 round-off bound (tests/tolerances.py) for one fixture case."""
    return gl_rtol(cells=density.size, points=points.shape[1], blur=params["blur"], scaling=params["scaling"], p=params["p"])


# The random batches below: 16 × 16 cells, up to 92 point slots, blur 0.01, scaling 0.5.
RTOL = gl_rtol(cells=256, points=92)


def potential_params(params):
    return {k: v for k, v in params.items() if k not in ("tau", "d_point", "d_pixel")}


@pytest.mark.parametrize("index", range(NUM_CASES))
def test_matches_official_terms_and_gradient(reference, index):
    density, points, mask, params = case_inputs(reference, index)
    key = f"case{index}/out/"

    def loss_fn(d):
        return generalized_loss(d, points, mask, **params)

    (loss, terms), grad = jax.value_and_grad(loss_fn, has_aux=True)(jnp.asarray(density))
    names = {"emd": "ot", "point": "point", "pixel": "pixel", "entropy": "entropy", "total": "total"}
    rtol = case_rtol(density, points, params)
    # atol: the empty case's entropy is 0 on both sides.
    for ref_name, our_name in names.items():
        np.testing.assert_allclose(terms[our_name][0], reference[key + ref_name], rtol=rtol, atol=1e-7,
                                   err_msg=our_name)
    np.testing.assert_allclose(loss, reference[key + "total"], rtol=rtol)
    ref_grad = reference[key + "grad"]
    # A cell's gradient is a signed sum over its plan row (one more pass: 2·rtol); where the
    # signs cancel only an absolute bound on the scale of the largest gradient holds.
    np.testing.assert_allclose(grad[0], ref_grad, rtol=2 * rtol, atol=2 * rtol * np.abs(ref_grad).max())


@pytest.mark.parametrize("index", [i for i in range(NUM_CASES) if i != 1])
def test_reference_potentials_match_official(reference, index):
    density, points, mask, params = case_inputs(reference, index)
    f, g = generalized_loss_potentials(density, points, mask, **potential_params(params))
    key = f"case{index}/out/"
    # Potentials err by ε times the plan's relative bound (the plan is exp(F/ε)·…); the relative
    # part covers large potentials.
    rtol = case_rtol(density, points, params)
    atol = rtol * params["blur"] ** params["p"]
    np.testing.assert_allclose(f[0], reference[key + "f"], rtol=rtol, atol=atol)
    np.testing.assert_allclose(g[0], reference[key + "g"], rtol=rtol, atol=atol)


@pytest.mark.parametrize("index", [0, 2, 3, 6])
def test_converged_potentials_match_float64_solve(reference, index):
    density, points, mask, params = case_inputs(reference, index)
    f, g = generalized_loss_potentials(
        density, points, mask, solver="converged", **potential_params(params)
    )
    key = f"case{index}/converged/"
    # Not round-off: the solver stops at a marginal error of 1e-4 (threshold); potentials of
    # size O(ρ) = O(0.5) are then within ~1e-3 of the float64 fixed point.
    np.testing.assert_allclose(f[0], reference[key + "f"], atol=1e-3)
    np.testing.assert_allclose(g[0], reference[key + "g"], atol=1e-3)
    # The reference schedule is not converged: the two solutions really differ.
    f_ref, _ = generalized_loss_potentials(density, points, mask, **potential_params(params))
    assert np.abs(np.asarray(f_ref) - np.asarray(f)).max() > 1e-2


def test_converged_loss_is_finite_and_differentiable():
    density, points, mask = random_batch(0)
    grad = jax.grad(lambda d: generalized_loss(d, points, mask, crop_size=128, solver="converged")[0])(
        jnp.asarray(density)
    )
    assert np.all(np.isfinite(grad))


def test_empty_image_branch():
    density, points, mask = random_batch(1, counts=(0, 0, 0))
    loss, terms = generalized_loss(density, points, mask, crop_size=128, tau=0.3)
    mass = density.sum(axis=(1, 2), dtype=np.float64)
    # Σ of 256 positive cells in some float32 order, then ≤ 4 more roundings (τ·, +, mean).
    rtol = sum_rtol(256) + 4 * EPS32
    np.testing.assert_allclose(terms["ot"], mass, rtol=rtol)
    np.testing.assert_allclose(terms["total"], 1.6 * mass, rtol=rtol)
    np.testing.assert_allclose(loss, 1.6 * mass.mean(), rtol=rtol)
    grad = jax.grad(lambda d: generalized_loss(d, points, mask, crop_size=128, tau=0.3)[0])(density)
    np.testing.assert_allclose(grad, np.full_like(density, 1.6 / 3), rtol=4 * EPS32)  # (1 + 2τ) / B


@pytest.mark.parametrize("counts", [(5, 0, 12), (7,)])
def test_batch_reductions(counts):
    """"reference": GL's trainer (OT, point and pixel terms / B, entropy terms summed);
    "mean": every image's total / B. Same per-image terms; equal at batch 1."""
    density, points, mask = random_batch(5, batch=len(counts), counts=counts)
    kwargs = dict(crop_size=128, blur=0.02, tau=0.3)
    reference, terms = generalized_loss(density, points, mask, **kwargs)
    mean, mean_terms = generalized_loss(density, points, mask, batch_reduction="mean", **kwargs)
    t = {name: np.asarray(value, np.float64) for name, value in terms.items()}
    np.testing.assert_allclose(
        reference, np.mean(t["ot"] + 0.3 * (t["pixel"] + t["point"])) + 0.02 * np.sum(t["entropy"]), rtol=1e-6
    )
    np.testing.assert_allclose(mean, np.mean(t["total"]), rtol=1e-6)
    for name in terms:
        np.testing.assert_array_equal(terms[name], mean_terms[name])
    if len(counts) == 1:
        np.testing.assert_allclose(reference, mean, rtol=1e-6)
    else:  # the entropy (negative) weighs B times more in the reference's batch loss
        assert reference < mean
    reduce = _generalized.batch_loss
    np.testing.assert_allclose(reduce(terms, blur=0.02, batch_reduction="reference"), reference, rtol=1e-6)
    np.testing.assert_allclose(reduce(terms, blur=0.02, batch_reduction="mean"), mean, rtol=1e-6)


def test_unknown_batch_reduction_fails():
    density, points, mask = random_batch(6)
    with pytest.raises(ValueError, match="batch_reduction"):
        generalized_loss(density, points, mask, crop_size=128, batch_reduction="sum")


def test_empty_zero_map_has_pytorchs_zero_subgradient():
    # The reference's |0 − ΣA| at ΣA = 0 has gradient 0 in PyTorch (jnp.abs would give 1).
    grad = jax.grad(
        lambda d: generalized_loss(d, np.zeros((2, 3, 2)), np.zeros((2, 3), bool), crop_size=32)[0]
    )(jnp.zeros((2, 4, 4)))
    assert np.all(np.asarray(grad) == 0.0)


def test_zero_point_slots():
    density = np.ones((2, 4, 4), np.float32)
    loss, terms = generalized_loss(density, np.zeros((2, 0, 2)), np.zeros((2, 0), bool), crop_size=32)
    # Sums of 16 ones are exact in float32; only 16 + 0.1·(16 + 16) rounds (≤ 2 roundings).
    np.testing.assert_allclose(terms["total"], [19.2, 19.2], rtol=2 * EPS32)


def test_jit_equals_eager():
    density, points, mask = random_batch(2)
    kwargs = dict(crop_size=128, cost="exp")
    jitted = jax.jit(lambda d, x, m: generalized_loss(d, x, m, **kwargs))(density, points, mask)
    with jax.disable_jit():
        eager = generalized_loss(density, points, mask, **kwargs)
    np.testing.assert_allclose(jitted[0], eager[0], rtol=RTOL)
    for name in eager[1]:  # atol: terms that are exactly 0 on both sides (an empty image's)
        np.testing.assert_allclose(jitted[1][name], eager[1][name], rtol=RTOL, atol=1e-7)


def test_batch_equals_loop_over_images():
    density, points, mask = random_batch(3)
    _, terms = generalized_loss(density, points, mask, crop_size=128)
    for b in range(density.shape[0]):
        count = int(mask[b].sum())
        _, single = generalized_loss(
            density[b:b + 1], points[b:b + 1, :count], mask[b:b + 1, :count], crop_size=128
        )
        for name in terms:
            np.testing.assert_allclose(terms[name][b], single[name][0], rtol=RTOL, atol=1e-7)


def test_padding_and_permutation_change_nothing():
    density, points, mask = random_batch(4, counts=(5, 3, 12))

    def value_and_grad(d, x, m):
        return jax.value_and_grad(lambda a: generalized_loss(a, x, m, crop_size=128), has_aux=True)(d)

    (loss, terms), grad = value_and_grad(density, points, mask)
    # Extra padding rows, holding junk coordinates far outside the crop.
    junk = np.full((3, 20, 2), 1e4, np.float32)
    padded = value_and_grad(density, np.concatenate([points, junk], 1),
                            np.concatenate([mask, np.zeros((3, 20), bool)], 1))
    # Real points in another order (padding rows interleaved too).
    perm = np.random.default_rng(0).permutation(points.shape[1])
    permuted = value_and_grad(density, points[:, perm], mask[:, perm])
    for (other_loss, other_terms), other_grad in (padded, permuted):
        np.testing.assert_allclose(other_loss, loss, rtol=RTOL)
        np.testing.assert_allclose(other_grad, grad, rtol=2 * RTOL, atol=2 * RTOL * np.abs(grad).max())
        for name in terms:
            np.testing.assert_allclose(other_terms[name], terms[name], rtol=RTOL, atol=1e-7)


def test_cell_offset_centre_is_a_half_cell_shift():
    # With a translation-invariant cost, moving the cells by -s/2 equals moving the points by +s/2.
    density, points, mask = random_batch(5)
    centre = generalized_loss(density, points, mask, crop_size=128, cost="exp", cell_offset="centre")
    shifted = generalized_loss(density, points + 4.0, mask, crop_size=128, cost="exp")
    reference = generalized_loss(density, points, mask, crop_size=128, cost="exp")
    np.testing.assert_allclose(centre[1]["total"], shifted[1]["total"], rtol=RTOL)
    # The reference offset really differs: by far more than round-off (a half cell moves every
    # cost by ~s/(2c) ≈ 3% of the distance scale).
    assert not np.allclose(centre[1]["total"], reference[1]["total"], rtol=100 * RTOL)


def test_callable_cost_equals_named_cost():
    density, points, mask = random_batch(6)
    named = generalized_loss(density, points, mask, crop_size=128, cost="exp", scale=0.4)
    custom = generalized_loss(density, points, mask, crop_size=128, cost=_generalized.exp_cost, scale=0.4)
    np.testing.assert_array_equal(custom[1]["total"], named[1]["total"])  # the same function: the same program




@pytest.mark.parametrize("solver", ["reference", "converged"])
@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_cases_are_finite(case, solver):
    density, pts, msk = EDGE_CASES[case]
    density = jnp.asarray(density, jnp.float32)
    points = jnp.broadcast_to(jnp.asarray(pts, jnp.float32), (2, 2, 2))
    mask = jnp.broadcast_to(jnp.asarray(msk), (2, 2))
    (loss, terms), grad = jax.value_and_grad(
        lambda d: generalized_loss(d, points, mask, crop_size=64, solver=solver), has_aux=True
    )(density)
    assert_all_finite(loss, terms, grad)


def small_hyper(**overrides):
    kwargs = dict(
        crop_size=32, stride=8, cost="per", scale=0.6, blur=0.01, reach=0.5, scaling=0.5, p=1.0,
        tau=0.1, d_point="l1", d_pixel="l2", solver="reference", cell_offset="reference",
        max_iterations=100, threshold=1e-5, implementation="dense",
    )  # fmt: skip
    kwargs.update(overrides)
    return _generalized.GLHyperParameters(**kwargs)


SMALL_POINTS = np.array([[[5.0, 7.0], [20.0, 25.0], [0.0, 0.0]]])
SMALL_MASK = np.array([[True, True, False]])


@pytest.mark.parametrize("implementation", ["dense", "chunked"])
@pytest.mark.parametrize("cost", ["per", "exp"])
@pytest.mark.parametrize("d_point", ["l1", "l2"])
def test_gradient_given_potentials_matches_finite_differences(implementation, cost, d_point):
    # GL differentiates its terms with the potentials F, G held constant. Check that gradient
    # against central differences in float64 for the terms without a stop-gradient (the pixel
    # term's stop-gradient makes it a different function; it has its own test below). The
    # chunked implementation's gradient is written by hand, the dense one is JAX autodiff.
    with jax.enable_x64(True):
        density = jnp.asarray(np.random.default_rng(8).uniform(0.01, 0.1, (1, 4, 4)))
        points, mask = jnp.asarray(SMALL_POINTS), jnp.asarray(SMALL_MASK)
        hyper = small_hyper(cost=cost, d_point=d_point, implementation=implementation)
        f, g = _generalized._potentials(density, points, mask, hyper)
        terms_fn = {"dense": _generalized_dense.dense_terms, "chunked": _generalized_chunked.chunked_terms}

        @jax.jit
        def differentiable_terms(d):
            ot, point, _, entropy = terms_fn[implementation](d, points, mask, f, g, hyper)[0]
            return ot + 0.1 * point + 0.01 * entropy

        # float64 central differences (jax's step 1e-3·scale): truncation O(h²) ≈ 1e-6 of the
        # curvature, far above float64 round-off (1e-16 / h ≈ 1e-13).
        check_grads(differentiable_terms, (density,), order=1, modes=("rev",), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("implementation", ["dense", "chunked"])
@pytest.mark.parametrize("d_pixel", ["l1", "l2"])
def test_pixel_term_gradient_treats_plan_marginal_as_constant(implementation, d_pixel):
    with jax.enable_x64(True):
        density = jnp.asarray(np.random.default_rng(9).uniform(0.01, 0.1, (1, 4, 4)))
        points, mask = jnp.asarray(SMALL_POINTS), jnp.asarray(SMALL_MASK)
        kwargs = dict(crop_size=32, d_pixel=d_pixel, implementation=implementation)
        grad_pixel = jax.jit(jax.grad(
            lambda d: generalized_loss(d, points, mask, **kwargs)[1]["pixel"].sum()
        ))(density)
        # d/dA Σ d(sg(ΣΠ) − A) = −d'(ΣΠ − A), with ΣΠ from the potentials.
        f, g = generalized_loss_potentials(density, points, mask, crop_size=32)
        hyper = small_hyper()
        cells, normalised = _generalized_common.image_geometry(4, 4, points[0], mask[0], hyper)
        cost = hyper.cost(cells, normalised)
        alpha = density.reshape(-1)
        plan = jnp.exp((f.reshape(-1)[:, None] + g[0][None, :] - cost) / 0.01) * alpha[:, None]
        residual = (plan * mask[0][None, :]).sum(axis=1) - alpha
        expected = -2.0 * residual if d_pixel == "l2" else -jnp.sign(residual)
        # float64: 16 cells × 2 points, a few roundings of 1.1e-16 each; 1e-6 is loose on purpose
        # only in that a wrong (non-stopped) gradient differs at O(1).
        np.testing.assert_allclose(grad_pixel.reshape(-1), expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("solver", ["reference", "converged"])
def test_chunked_equals_dense(solver):
    rng = np.random.default_rng(11)
    counts = (0, 3, 40, 75)
    density = rng.uniform(0.0, 0.05, (4, 16, 16)).astype(np.float32)
    density[1, :4] = 0.0  # cells with zero mass take geomloss's log-weight -100000
    points = rng.uniform(-4.0, 132.0, (4, 80, 2)).astype(np.float32)
    mask = np.zeros((4, 80), bool)
    for b, count in enumerate(counts):
        mask[b, rng.permutation(80)[:count]] = True  # padding rows interleaved with real ones
    results = {}
    for implementation in ("dense", "chunked"):
        kwargs = dict(crop_size=128, solver=solver, implementation=implementation)
        results[implementation] = jax.value_and_grad(
            lambda d: generalized_loss(d, points, mask, **kwargs), has_aux=True
        )(jnp.asarray(density))
        potentials = generalized_loss_potentials(density, points, mask, **kwargs)
        results[implementation + " potentials"] = potentials
    (loss_d, terms_d), grad_d = results["dense"]
    (loss_c, terms_c), grad_c = results["chunked"]
    np.testing.assert_allclose(loss_c, loss_d, rtol=RTOL)
    for name in terms_d:
        np.testing.assert_allclose(terms_c[name], terms_d[name], rtol=RTOL, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(grad_c, grad_d, rtol=2 * RTOL, atol=2 * RTOL * np.abs(grad_d).max())
    for got, want in zip(results["chunked potentials"], results["dense potentials"]):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * 0.01)  # ε·RTOL absolute


def test_absorbed_sweep_falls_back_to_exact_log_sum_exp():
    # Starting from zero potentials at a tiny ε, far cells underflow in the absorbed kernel
    # (every exp(−C/ε) is 0 in float32); the sweep must notice and use the max-shifted LSE.
    hyper = small_hyper(crop_size=64)
    density = jnp.full((8, 8), 0.01)
    points = jnp.asarray([[4.0, 4.0]] + [[0.0, 0.0]] * 31)
    mask = jnp.arange(32) < 1
    cells, normalised = _generalized_common.image_geometry(8, 8, points, mask, hyper)
    cost_t = hyper.cost(cells, normalised).T
    alpha, beta = density.reshape(-1), mask.astype(jnp.float32)
    args = (alpha, beta, _generalized_common.log_weights(alpha), _generalized_common.log_weights(beta), cost_t, 1)
    eps = 1e-3
    g_new, f_new = _generalized_chunked._sweep(eps, jnp.zeros(64), jnp.zeros(32), *args)
    exact_g, exact_f = _generalized_chunked._exact_sweep(
        eps, jnp.zeros(64), jnp.zeros(32), args[2], args[3], cost_t, 1
    )
    assert np.all(np.isfinite(f_new))
    # One sweep, both in float32: a log-sum-exp over 1 point (f) / 64 cells (g) against its
    # max-shifted form. The sums differ by ≤ 63·EPS32 relative; the exponents' rounding is
    # u·|C|/ε absolute in a log-sum-exp that is itself ≈ |C|/ε, so a few u relative.
    rtol = sum_rtol(64) + 4 * EPS32
    np.testing.assert_allclose(f_new, -eps * exact_f, rtol=rtol)
    np.testing.assert_allclose(g_new[:1], -eps * exact_g[:1], rtol=rtol)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(crop_size=-1), "crop_size"),
        (dict(crop_size=64, stride=0), "stride"),
        (dict(crop_size=64, cost="square"), "cost"),
        (dict(crop_size=64, d_point="kl"), "d_point"),
        (dict(crop_size=64, d_pixel="huber"), "d_pixel"),
        (dict(crop_size=64, solver="exact"), "solver"),
        (dict(crop_size=64, cell_offset="corner"), "cell_offset"),
        (dict(crop_size=64, scaling=1.5), "scaling"),
        (dict(crop_size=64, blur=0.0), "blur"),
    ],
)
def test_bad_hyper_parameters_raise(kwargs, message):
    density, points, mask = random_batch(10)
    with pytest.raises(ValueError, match=message):
        generalized_loss(density, points, mask, **kwargs)


@pytest.mark.parametrize("shapes, message", BAD_SHAPES)
def test_bad_shapes_raise(shapes, message):
    density, points, mask = (np.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=message):
        generalized_loss(density, points, mask.astype(bool), crop_size=64)
