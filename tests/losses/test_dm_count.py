"""Tests of DM-Count against the official implementation, its float quirks and invariances."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from jax.test_util import check_grads

from gcc_jax.losses import dm_count_loss, dot_map
from gcc_jax.losses import _dm_count
from loss_cases import BAD_SHAPES, EDGE_CASES as COMMON_EDGE_CASES, assert_all_finite, random_batch
from tolerances import EPS32, dm_rtol, sum_rtol

NUM_CASES = 3


@pytest.fixture(scope="module")
def reference(data_dir):
    return dict(np.load(data_dir / "bl_dmcount_reference.npz"))


def case_inputs(reference, index):
    key = f"dm{index}/"
    arrays = {name: reference[key + name] for name in ("density", "points", "point_mask")}
    params = dict(
        wot=float(reference[key + "wot"]),
        wtv=float(reference[key + "wtv"]),
        reg=float(reference[key + "reg"]),
        num_iters=int(reference[key + "iters"]),
    )
    return arrays, params


def numpy_dm_count(density, points, mask, *, stride, wot, wtv, reg, num_iters):
    """Independent float64 transcription of the DM-Count definition in docs/losses.md: terms and the gradient of the total."""
    batch, h, w = density.shape
    cells = np.stack(np.meshgrid((np.arange(w) + 0.5) * stride, (np.arange(h) + 0.5) * stride),
                     -1).reshape(-1, 2)
    terms = {name: np.zeros(batch) for name in ("ot", "ot_objective", "wasserstein", "count", "tv")}
    grad = np.zeros((batch, h * w))
    for b in range(batch):
        flat = density[b].reshape(-1).astype(np.float64)
        mass = flat.sum()
        normed = flat / (mass + 1e-6)
        heads = points[b][mask[b]].astype(np.float64)
        m = len(heads)
        if m:
            cost = np.array([((cells - p) ** 2).sum(1) for p in heads])
            kernel = np.exp(-cost / reg)
            u, v = np.full(m, 1.0 / m), np.full(h * w, 1.0 / (h * w))
            it, err = 1, 1.0
            while err > 1e-9 and it <= num_iters:
                new_v = normed / (u @ kernel + 1e-16)
                new_u = (1.0 / m) / (kernel @ new_v + 1e-16)
                if not (np.all(np.isfinite(new_u)) and np.all(np.isfinite(new_v))):
                    break
                u, v = new_u, new_v
                if it % 10 == 0:
                    err = ((normed - (u @ kernel) * v) ** 2).sum()
                it += 1
            beta = reg * np.log(v + 1e-16)
            g = mass / (mass * mass + 1e-8) * beta - (flat * beta).sum() / (mass * mass + 1e-8)
            terms["ot"][b] = (flat * g).sum()
            terms["ot_objective"][b] = (normed * beta).sum()
            terms["wasserstein"][b] = (cost * u[:, None] * kernel * v[None, :]).sum()
            grad[b] += wot * g
        target = np.zeros((h * stride, w * stride))
        for x, y in np.round(heads).astype(int):
            target[min(max(y, 0), h * stride - 1), min(max(x, 0), w * stride - 1)] += 1
        target = target.reshape(h, stride, w, stride).sum((1, 3)).reshape(-1) / (m + 1e-6)
        terms["count"][b] = abs(mass - m)
        sign = np.sign(normed - target)
        terms["tv"][b] = m * np.abs(normed - target).sum()
        grad[b] += np.sign(mass - m) / batch
        # d tv / dA_l = m (s_l / (S + ε) − Σ_k s_k A_k / (S + ε)²), averaged over the batch.
        grad[b] += wtv / batch * m * (sign / (mass + 1e-6) - (sign * flat).sum() / (mass + 1e-6) ** 2)
    terms["total"] = wot * terms["ot"] + terms["count"] + wtv * terms["tv"]
    loss = wot * terms["ot"].sum() + terms["count"].mean() + wtv * terms["tv"].mean()
    return loss, terms, grad.reshape(batch, h, w)


@pytest.mark.parametrize("index", range(NUM_CASES))
def test_matches_official_terms_and_gradient(reference, index):
    arrays, params = case_inputs(reference, index)
    key = f"dm{index}/"

    def loss_fn(d):
        return dm_count_loss(d, arrays["points"], arrays["point_mask"], **params)

    (loss, terms), grad = jax.value_and_grad(loss_fn, has_aux=True)(jnp.asarray(arrays["density"]))
    density, points = arrays["density"], arrays["points"]
    rtol = dm_rtol(cells=density[0].size, heads=points.shape[1], iters=params["num_iters"])
    # count = |Σ A − m| and tv = m·Σ|Â − T/m| subtract near-equal parts: absolutely, rtol times
    # their size (Σ A + m per image).
    parts = (np.sum(density) + np.sum(arrays["point_mask"])) / len(density)
    surrogate_atol = rtol * np.abs(terms["ot_objective"]).sum()
    np.testing.assert_allclose(loss, reference[key + "total"], rtol=rtol, atol=rtol * parts + params["wot"] * surrogate_atol)
    np.testing.assert_allclose(terms["count"].mean(), reference[key + "count"], rtol=rtol, atol=rtol * parts)
    np.testing.assert_allclose(terms["tv"].mean(), reference[key + "tv"], rtol=rtol, atol=rtol * parts)
    np.testing.assert_allclose(terms["ot_objective"].sum(), reference[key + "ot_obj"], rtol=rtol)
    np.testing.assert_allclose(terms["wasserstein"].sum(), reference[key + "wd"], rtol=rtol)
    np.testing.assert_allclose(terms["ot"].sum(), reference[key + "ot_loss"], atol=surrogate_atol)
    # The same float32 values added in another order: ≤ 3 roundings of the largest part.
    parts_of_total = params["wot"] * np.abs(terms["ot"]) + terms["count"] + params["wtv"] * terms["tv"]
    np.testing.assert_allclose(
        terms["total"], params["wot"] * terms["ot"] + terms["count"] + params["wtv"] * terms["tv"],
        rtol=0, atol=3 * EPS32 * np.max(parts_of_total),
    )
    ref_grad = reference[key + "grad"]
    np.testing.assert_allclose(grad, ref_grad, rtol=2 * rtol, atol=2 * rtol * np.abs(ref_grad).max())


@pytest.mark.parametrize("index", range(NUM_CASES))
def test_dot_map_matches_official(reference, index):
    arrays, _ = case_inputs(reference, index)
    _, h, w = arrays["density"].shape
    maps = dot_map(arrays["points"], arrays["point_mask"], height=h, width=w)
    np.testing.assert_array_equal(maps, reference[f"dm{index}/discrete"])


def test_dot_map_rounds_and_clips():
    points = np.asarray([[[0.5, 1.5], [7.5, 8.4], [-3.0, 70.0], [15.6, 3.0], [99.0, 99.0]]])
    mask = np.asarray([[True, True, True, True, False]])
    # Rounding half to even: (0, 2) and (8, 8); (-3, 70) clips to (0, 31); (16, 3) -> cell (0, 2).
    expected = np.zeros((1, 4, 4), np.float32)
    expected[0, 0, 0] = 1
    expected[0, 1, 1] = 1
    expected[0, 3, 0] = 1
    expected[0, 0, 2] = 1
    np.testing.assert_array_equal(dot_map(points, mask, height=4, width=4, stride=8), expected)


@pytest.mark.parametrize(
    "params",
    [
        dict(stride=8, wot=0.1, wtv=0.01, reg=10.0, num_iters=100),
        dict(stride=4, wot=1.0, wtv=0.5, reg=50.0, num_iters=100),  # converges: stops early
        dict(stride=8, wot=0.3, wtv=0.1, reg=1.0, num_iters=37),  # far cells underflow even in f64
    ],
)
def test_matches_float64_transcription(params):
    with jax.enable_x64(True):
        density, points, mask = random_batch(21, size=8, stride=params["stride"], counts=(4, 0, 9))
        density = density.astype(np.float64)
        density[:, :, :3] = 0.0  # ReLU zeros: |Â_k − T_k/m| = 0 has subgradient 0, as in PyTorch
        (loss, terms), grad = jax.value_and_grad(
            lambda d: dm_count_loss(d, points.astype(np.float64), mask, **params), has_aux=True
        )(jnp.asarray(density))
        ref_loss, ref_terms, ref_grad = numpy_dm_count(density, points, mask, **params)
        for name in ref_terms:
            # The surrogate is a cancellation around 0: absolute, at float64 round-off.
            atol = 1e-10 * np.abs(ref_terms["ot_objective"]).sum() if name == "ot" else 0.0
            np.testing.assert_allclose(terms[name], ref_terms[name], rtol=1e-8, atol=atol,
                                       err_msg=name)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-8)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-7, atol=1e-12)


def random_kernel(rng, *, heads, size, largest_cost):
    """Factored Gibbs kernel exp(−C/10) of random per-axis costs, ``[heads, size·size]``."""
    def factor():
        return jnp.asarray(np.exp(-rng.uniform(0, largest_cost, (heads, size)) / 10.0), jnp.float32)
    return _dm_count._SeparableKernel(factor(), factor())


def test_separable_kernel_products_equal_dense_ones():
    rng = np.random.default_rng(2)
    kernel = random_kernel(rng, heads=3, size=4, largest_cost=50.0)
    dense = np.einsum("ji,jk->jik", kernel.rows, kernel.columns).reshape(3, 16)
    u, v = rng.uniform(size=3), rng.uniform(size=16)
    # Positive products summed over 3 heads / 16 cells (plus the factor product: 1 rounding).
    np.testing.assert_allclose(kernel.transpose_apply(jnp.asarray(u, jnp.float32)), u @ dense, rtol=sum_rtol(3) + 2 * EPS32)
    np.testing.assert_allclose(kernel.apply(jnp.asarray(v, jnp.float32)), dense @ v, rtol=sum_rtol(16) + 2 * EPS32)


def test_sinkhorn_stops_on_convergence_every_tenth_iteration():
    rng = np.random.default_rng(3)
    kernel = random_kernel(rng, heads=3, size=4, largest_cost=100.0)
    b = jnp.asarray(rng.dirichlet(np.ones(16)), jnp.float32)

    def solve(a, num_iters=100):
        return _dm_count._sinkhorn_knopp(jnp.asarray(a, jnp.float32), b, kernel, num_iters=num_iters)

    # The stopping threshold (1e-9) is on a squared norm: float32 residuals of 16 cells of mass
    # ~1/16 are ~u/16 ≈ 4e-9 each, ~3e-16 squared and summed, far under it on any CPU.
    # One head: a single Sinkhorn step is exact, but the error is only looked at on iteration 10.
    one = solve([1.0, 0.0, 0.0])
    assert int(one.iteration) == 11 and float(one.error) < 1e-9
    # More heads need more steps; the loop still stops only at a multiple of 10.
    two, three = solve([0.5, 0.5, 0.0]), solve([1 / 3] * 3)
    assert (int(two.iteration), int(three.iteration)) == (21, 31)
    assert float(two.error) < 1e-9 and float(three.error) < 1e-9
    capped = solve([1 / 3] * 3, num_iters=7)
    assert int(capped.iteration) == 8 and float(capped.error) == 1.0


def test_sinkhorn_never_converges_where_the_kernel_underflows():
    # float32: cells whose column of K underflows keep b_k − (Kᵀu)_k v_k = b_k, so the error stays
    # above 1e-9 and the reference runs all its iterations; so do we.
    rng = np.random.default_rng(3)
    kernel = random_kernel(rng, heads=3, size=4, largest_cost=1000.0)
    b = jnp.asarray(rng.dirichlet(np.ones(16)), jnp.float32)
    assert np.any(np.asarray(kernel.transpose_apply(jnp.ones(3))) == 0.0)
    state = _dm_count._sinkhorn_knopp(jnp.asarray([1 / 3] * 3), b, kernel, num_iters=100)
    assert int(state.iteration) == 101 and not bool(state.diverged)
    assert np.all(np.isfinite(state.v)) and np.max(state.v) > 1e12


def test_sinkhorn_keeps_previous_scalings_on_overflow():
    rng = np.random.default_rng(4)
    kernel = random_kernel(rng, heads=2, size=4, largest_cost=150.0)
    huge = jnp.full((16,), 1e30, jnp.float32)  # b / (Kᵀu + 1e-16) overflows to inf at once
    state = _dm_count._sinkhorn_knopp(jnp.asarray([0.5, 0.5]), huge, kernel, num_iters=100)
    assert bool(state.diverged) and int(state.iteration) == 1
    np.testing.assert_array_equal(state.u, [0.5, 0.5])
    np.testing.assert_array_equal(state.v, np.full(16, 1 / 16, np.float32))


def test_far_cells_underflow_to_huge_potentials_like_the_reference():
    # float32: a head in one corner of a 512 crop leaves K = exp(−C/10) = 0 far away; those cells
    # get v = Â / 1e-16 and β = 10 log v ≈ +300 instead of failing.
    density = np.full((1, 64, 64), 0.01, np.float32)
    points = np.asarray([[[3.0, 3.0]]], np.float32)
    loss, terms = dm_count_loss(density, points, np.ones((1, 1), bool))
    assert np.isfinite(loss)
    assert terms["ot_objective"][0] > 200.0


def test_empty_and_zero_density_images():
    density, points, mask = random_batch(5, counts=(0, 0, 3))
    density[2] = 0.0

    def loss_fn(d):
        return dm_count_loss(d, points, mask)

    (loss, terms), grad = jax.value_and_grad(loss_fn, has_aux=True)(jnp.asarray(density))
    for name in ("ot", "ot_objective", "wasserstein", "tv"):
        np.testing.assert_array_equal(terms[name][:2], 0.0)
    masses = density.sum(axis=(1, 2), dtype=np.float64)
    np.testing.assert_allclose(terms["count"], [masses[0], masses[1], 3.0], rtol=sum_rtol(256))
    assert np.all(np.isfinite(grad))
    # Empty images: only the count term, d/dA |Σ A − 0| / B.
    np.testing.assert_allclose(grad[:2], np.full_like(density[:2], 1 / 3), rtol=1e-5)


def test_zero_point_slots():
    density = np.ones((2, 4, 4), np.float32)
    loss, terms = dm_count_loss(density, np.zeros((2, 0, 2)), np.zeros((2, 0), bool))
    np.testing.assert_allclose(terms["total"], [16.0, 16.0])
    np.testing.assert_allclose(loss, 16.0)


def test_jit_equals_eager():
    density, points, mask = random_batch(6, batch=2, size=4, stride=8, max_points=5, counts=(2, 5))
    kwargs = dict(reg=5.0, num_iters=10)
    jitted = jax.jit(lambda d, x, m: dm_count_loss(d, x, m, **kwargs))(density, points, mask)
    with jax.disable_jit():
        eager = dm_count_loss(density, points, mask, **kwargs)
    rtol = dm_rtol(cells=16, heads=5, iters=10)
    atol = rtol * (np.abs(eager[1]["ot_objective"]).max() + 5 + density.sum())  # see tolerances.dm_rtol
    np.testing.assert_allclose(jitted[0], eager[0], rtol=rtol, atol=atol)
    for name in eager[1]:
        np.testing.assert_allclose(jitted[1][name], eager[1][name], rtol=rtol, atol=atol, err_msg=name)


def test_batch_of_one_equals_loop_over_images():
    density, points, mask = random_batch(7)
    _, terms = dm_count_loss(density, points, mask)
    rtol = dm_rtol(cells=256, heads=12)
    for b in range(density.shape[0]):
        count = int(mask[b].sum())
        loss, single = dm_count_loss(density[b:b + 1], points[b:b + 1, :count], mask[b:b + 1, :count])
        atol = rtol * (abs(float(single["ot_objective"][0])) + count + density[b].sum())  # see tolerances.dm_rtol
        for name in terms:
            np.testing.assert_allclose(terms[name][b], single[name][0], rtol=rtol, atol=atol, err_msg=name)
        np.testing.assert_allclose(loss, single["total"][0], rtol=rtol, atol=atol)


def test_padding_and_permutation_change_nothing():
    density, points, mask = random_batch(8, counts=(5, 3, 12))

    def value_and_grad(x, m):
        return jax.value_and_grad(lambda a: dm_count_loss(a, x, m), has_aux=True)(jnp.asarray(density))

    (loss, terms), grad = value_and_grad(points, mask)
    junk = np.full((3, 20, 2), np.nan, np.float32)
    junk[:, ::2] = 1e20
    padded = value_and_grad(np.concatenate([points, junk], 1),
                            np.concatenate([mask, np.zeros((3, 20), bool)], 1))
    perm = np.random.default_rng(0).permutation(points.shape[1])
    permuted = value_and_grad(points[:, perm], mask[:, perm])
    rtol = dm_rtol(cells=256, heads=32)
    atol = rtol * (np.abs(terms["ot_objective"]).sum() + mask.sum() + density.sum())  # see tolerances.dm_rtol
    for (other_loss, other_terms), other_grad in (padded, permuted):
        np.testing.assert_allclose(other_loss, loss, rtol=rtol, atol=atol)
        for name in terms:
            np.testing.assert_allclose(other_terms[name], terms[name], rtol=rtol, atol=atol, err_msg=name)
        np.testing.assert_allclose(other_grad, grad, rtol=2 * rtol, atol=2 * rtol * np.abs(grad).max())


EDGE_CASES = {
    **COMMON_EDGE_CASES,
    "ReLU zeros": (np.pad(np.full((2, 4, 4), 0.1), ((0, 0), (0, 4), (0, 4))), [[10.0, 10.0], [60.0, 60.0]],
                   [True, True]),
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_cases_are_finite(case):
    density, pts, msk = EDGE_CASES[case]
    density = jnp.asarray(density, jnp.float32)
    points = jnp.broadcast_to(jnp.asarray(pts, jnp.float32), (2, 2, 2))
    mask = jnp.broadcast_to(jnp.asarray(msk), (2, 2))
    (loss, terms), grad = jax.value_and_grad(
        lambda d: dm_count_loss(d, points, mask), has_aux=True
    )(density)
    assert_all_finite(loss, terms, grad)


def test_gradient_with_detached_pieces_matches_finite_differences():
    # The reference differentiates wot·Σ A·g + count + wtv·tv with g (from the Sinkhorn
    # potential) detached. Freeze g at the base point and check that function's gradient.
    with jax.enable_x64(True):
        rng = np.random.default_rng(9)
        density = jnp.asarray(rng.uniform(0.05, 0.2, (2, 4, 4)))
        points = jnp.asarray([[[5.0, 7.0], [20.0, 25.0], [0.0, 0.0]], [[9.0, 3.0], [0.0, 0.0], [0.0, 0.0]]])
        mask = jnp.asarray([[True, True, False], [True, False, False]])
        kwargs = dict(wot=0.5, wtv=0.3, reg=10.0)
        ot_gradient = jax.grad(lambda d: dm_count_loss(d, points, mask, **kwargs)[1]["ot"].sum())(density)

        def frozen(d):
            loss, terms = dm_count_loss(d, points, mask, **kwargs)
            return loss - kwargs["wot"] * jnp.sum(terms["ot"]) + kwargs["wot"] * jnp.sum(d * ot_gradient)

        check_grads(frozen, (density,), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)
        full = jax.grad(lambda d: dm_count_loss(d, points, mask, **kwargs)[0])(density)
        np.testing.assert_allclose(full, jax.grad(frozen)(density), rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(stride=0), "stride"),
        (dict(stride=2.5), "stride"),
        (dict(reg=0.0), "reg"),
        (dict(reg=-1.0), "reg"),
        (dict(wot=-0.1), "wot"),
        (dict(wtv=float("nan")), "wtv"),
        (dict(num_iters=0), "num_iters"),
        (dict(num_iters=2.5), "num_iters"),
    ],
)
def test_bad_hyper_parameters_raise(kwargs, message):
    density, points, mask = random_batch(10)
    with pytest.raises(ValueError, match=message):
        dm_count_loss(density, points, mask, **kwargs)


@pytest.mark.parametrize("shapes, message", BAD_SHAPES)
def test_bad_shapes_raise(shapes, message):
    density, points, mask = (np.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=message):
        dm_count_loss(density, points, mask.astype(bool))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(height=0, width=4), "height"),
        (dict(height=4, width=2.5), "width"),
        (dict(height=4, width=4, stride=-8), "stride"),
    ],
)
def test_dot_map_bad_input_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dot_map(np.zeros((1, 3, 2)), np.ones((1, 3), bool), **kwargs)
    with pytest.raises(ValueError, match="point_mask"):
        dot_map(np.zeros((1, 3, 2)), np.ones((1, 2), bool), height=4, width=4)


def test_one_compilation_per_shape():
    density, points, mask = random_batch(17, batch=2, size=5, max_points=7, counts=(3, 7))
    dm_count_loss(density, points, mask)
    compiled = _dm_count._batch_terms._cache_size()
    dm_count_loss(density * 2, points + 1, ~mask)
    assert _dm_count._batch_terms._cache_size() == compiled
